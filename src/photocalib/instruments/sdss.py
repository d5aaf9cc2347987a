"""SDSS imaging frames (``frame-[ugriz]-RUN-CAMCOL-FIELD.fits[.bz2]``, DR8 and later).

HDU 0 is the sky-subtracted image in nanomaggies, HDU 1 the per-column calibration vector
(nanomaggies per count, flat field included), HDU 2 the sky on a coarse grid with the positions
of every column and row on it (``XINTERP``, ``YINTERP``), HDU 3 the astrometry. The counts are
recovered as the SDSS data model documents it:

    counts = image / calib[column] + sky(XINTERP[column], YINTERP[row])

with the sky interpolated bilinearly (values beyond the grid take the edge value) and the
variance ``counts / gain + darkVariance`` (counts²), gain and dark variance from the data
model's tables per camera column and band. The Exposure holds these counts (FLUENCE: the
calibration vector includes the flat field, so the counts are not flat-fielded) and the
calibration vector becomes its PhotoCalib field: ``3631 nJy × calib(x)`` per count.
"""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np

from ..errors import InputError
from .base import NANOMAGGY_NJY, Instrument, native, sky_wcs

__all__ = ["SDSS", "sky_image", "GAIN", "DARK_VARIANCE"]

_BANDS = "ugriz"

#: e⁻/DN per camera column (rows 1..6) and band (u g r i z), from the SDSS frame data model;
#: camcol 2 u is 1.825 from run 1100 on.
GAIN = np.array([
    [1.62, 3.32, 4.71, 5.165, 4.745],
    [1.595, 3.855, 4.6, 6.565, 5.155],
    [1.59, 3.845, 4.72, 4.86, 4.885],
    [1.6, 3.995, 4.76, 4.885, 4.775],
    [1.47, 4.05, 4.725, 4.64, 3.48],
    [2.17, 4.035, 4.895, 4.76, 4.69],
])
#: Dark variance (read noise and dark current, DN²) before run 1500; later runs differ in
#: four entries (see :func:`_dark_variance`).
DARK_VARIANCE = np.array([
    [9.61, 15.6025, 1.8225, 7.84, 0.81],
    [12.6025, 1.44, 1.00, 5.76, 1.0],
    [8.7025, 1.3225, 1.3225, 4.6225, 1.0],
    [12.6025, 1.96, 1.3225, 6.25, 9.61],
    [9.3025, 1.1025, 0.81, 7.84, 1.8225],
    [7.0225, 1.8225, 0.9025, 5.0625, 1.21],
])
_DARK_VARIANCE_LATE = {(2, "i"): 6.25, (4, "i"): 7.5625, (4, "z"): 12.6025, (5, "z"): 2.1025}


def _gain(camcol: int, band: str, run: int) -> float:
    if camcol == 2 and band == "u" and run >= 1100:
        return 1.825
    return float(GAIN[camcol - 1, _BANDS.index(band)])


def _dark_variance(camcol: int, band: str, run: int) -> float:
    if run >= 1500 and (camcol, band) in _DARK_VARIANCE_LATE:
        return _DARK_VARIANCE_LATE[(camcol, band)]
    return float(DARK_VARIANCE[camcol - 1, _BANDS.index(band)])


def _linear_weights(positions: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower index, upper index and upper weight of linear interpolation on 0..n-1, clamped."""
    p = np.clip(np.asarray(positions, dtype=np.float64), 0.0, n - 1.0)
    lo = np.minimum(np.floor(p).astype(np.intp), max(n - 2, 0))
    hi = np.minimum(lo + 1, n - 1)
    return lo, hi, p - lo


def sky_image(allsky: np.ndarray, xinterp: np.ndarray, yinterp: np.ndarray) -> np.ndarray:
    """The sky (counts) at every pixel: ``allsky[y, x]`` interpolated bilinearly at the grid
    positions ``yinterp[row]``, ``xinterp[column]``, the edge value beyond the grid.

    Separable: one pass along x for every grid row, then one along y (no per-pixel loop).
    """
    allsky = np.asarray(allsky, dtype=np.float64)
    ny, nx = allsky.shape
    xl, xh, wx = _linear_weights(xinterp, nx)
    yl, yh, wy = _linear_weights(yinterp, ny)
    along_x = allsky[:, xl] * (1.0 - wx) + allsky[:, xh] * wx  # (ny_grid, n_columns)
    return along_x[yl, :] * (1.0 - wy)[:, None] + along_x[yh, :] * wy[:, None]


def calibration_field(calib: np.ndarray, shape: tuple[int, int]):
    """The calibration vector (nanomaggies per count, one value per column) as a BoundedField in
    nJy per count: a spline through every column's value, constant along the rows."""
    from ..fields import SplineField
    from ..geom import Box

    ny, nx = shape
    box = Box.from_shape(shape)
    gx = np.arange(nx, dtype=np.float64)
    gy = np.linspace(-0.5, ny - 0.5, 4)
    values = np.broadcast_to(np.asarray(calib, dtype=np.float64) * NANOMAGGY_NJY, (4, nx))
    return SplineField(box, gx, gy, values)


class SDSS(Instrument):
    name = "SDSS"
    aliases = ("sdss-frame",)
    description = "SDSS frame (nanomaggies, calibration vector, sky grid): counts recovered"
    visit_keys = ("RUN",)
    detector_keys = ("CAMCOL",)
    band_keys = ("FILTER",)
    mjd_keys = ()
    exptime_keys = ("EXPTIME",)
    zero_point_keys = ("NMGY",)
    processed = True
    bandpass_template = "sdss2010-{band}"

    def matches(self, hdul, path) -> bool:
        h = hdul[0].header
        return (str(h.get("ORIGIN", "")).strip() == "SDSS" and "CAMCOL" in h and len(hdul) >= 3
                and h.get("NAXIS", 0) == 2)

    def units(self, path, hdul):
        h = hdul[0].header
        return [(0, int(h.get("RUN", 0)) * 10000 + int(h.get("FRAME", 0)), int(h.get("CAMCOL", 0)))]

    def read(self, path: Path, hdul, hdu=None, **options) -> list:
        from ..calib import PhotoCalib
        from ..image import Exposure, ImageKind

        header = hdul[0].header
        where = f"{path}[0]"
        image = native(hdul[0].data).astype(np.float64)
        ny, nx = image.shape
        try:
            calib = native(hdul[1].data).astype(np.float64).ravel()
            sky = hdul[2].data
            allsky = native(sky["ALLSKY"][0]).astype(np.float64)
            xinterp = native(sky["XINTERP"][0]).astype(np.float64).ravel()
            yinterp = native(sky["YINTERP"][0]).astype(np.float64).ravel()
        except (KeyError, TypeError, IndexError) as exc:
            raise InputError(f"{path}: not an SDSS frame (HDU 1 the calibration vector, HDU 2 the "
                             f"sky with ALLSKY, XINTERP, YINTERP): {exc}") from exc
        if allsky.ndim == 3:
            allsky = allsky[0]
        if calib.size != nx or xinterp.size != nx or yinterp.size != ny:
            raise InputError(f"{path}: calibration vector ({calib.size}), XINTERP ({xinterp.size}) "
                             f"and YINTERP ({yinterp.size}) do not fit the {nx}x{ny} image")
        if not np.all(np.isfinite(calib) & (calib > 0)):
            raise InputError(f"{path}[1]: the calibration vector has non-positive or NaN values")
        band = str(header.get("FILTER", "")).strip()
        camcol = int(header.get("CAMCOL", 0))
        run = int(header.get("RUN", 0))
        if band not in _BANDS or not 1 <= camcol <= 6:
            raise InputError(f"{where}: FILTER = {band!r}, CAMCOL = {camcol}: not an SDSS band "
                             "u, g, r, i, z and camera column 1..6")
        counts = image / calib[None, :] + sky_image(allsky, xinterp, yinterp)
        gain = _gain(camcol, band, run)
        dark_variance = _dark_variance(camcol, band, run)
        variance = np.maximum(counts, 0) / gain + dark_variance
        mask = np.zeros(counts.shape, dtype=np.uint32)
        bad = ~np.isfinite(counts)
        if bad.any():
            from ..image.mask import MaskPlane

            mask[bad] = np.uint32(MaskPlane.BAD | MaskPlane.NO_DATA)
            counts[bad] = 0.0
            variance[bad] = np.inf
        wcs = sky_wcs(header, hdul, where)
        photo_calib = PhotoCalib(calibration_field(calib, counts.shape), ImageKind.FLUENCE,
                                 instrumental_unit="count")
        frame = int(header.get("FRAME", 0))
        meta = self.metadata((header,), where, visit=run * 10000 + frame, detector=camcol,
                             band=band, instrument="SDSS")
        if len(hdul) > 3 and hdul[3].data is not None and "MJD" in hdul[3].data.names:
            meta["MJD"] = (float(hdul[3].data["MJD"][0]), "[d] MJD (TAI) of the frame")
        meta["GAIN"] = (gain, "[e-/DN] SDSS data model, by camcol and band")
        meta["DARKVAR"] = (dark_variance, "[DN2] SDSS data model dark variance")
        return [Exposure(counts.astype(np.float32), variance.astype(np.float32), mask, wcs,
                         ImageKind.FLUENCE, u.count, photo_calib, meta)]


#: The instruments this module describes (registered by the package, in order).
INSTRUMENTS = (SDSS(),)
