"""Curves of growth in fixed angular radii and spatially varying aperture corrections.

Both use angular apertures (exact Jacobian ellipses), so the corrections carry no pixel-area
term: what varies across the detector is the PSF, not the aperture's solid angle.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from ..errors import InputError
from ..fields import BoundedField
from ..fields.robust import RobustFit, robust_field_fit
from ..image.kind import ImageKind, require_kind
from .aperture import PhotFlag, aperture_photometry

__all__ = ["curve_of_growth", "fit_aperture_correction", "apply_aperture_correction"]


def curve_of_growth(exp, x, y, radii_arcsec) -> Table:
    """Aperture fluxes of each source in a sequence of angular radii.

    Parameters
    ----------
    exp : photocalib.Exposure
        FLUENCE exposure with a WCS.
    x, y : array_like
        Source positions in pixels.
    radii_arcsec : array_like
        Increasing aperture radii in arcsec.

    Returns
    -------
    astropy.table.Table
        ``x``, ``y``, and 2-D columns ``instflux``, ``instflux_err`` of shape (n, n_radii);
        ``flags`` is the OR of the flags over radii; ``meta['radii_arcsec']``.
    """
    require_kind(exp.kind, ImageKind.FLUENCE, "curve_of_growth")
    radii = np.atleast_1d(np.asarray(radii_arcsec, dtype=np.float64))
    if radii.ndim != 1 or np.any(np.diff(radii) <= 0) or np.any(radii <= 0):
        raise InputError("curve_of_growth: radii_arcsec must be positive and increasing")
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    jac = exp.wcs.jacobian(x, y) if exp.wcs is not None else None
    if jac is None:
        raise InputError("curve_of_growth needs an exposure with a WCS (radii are in arcsec)")
    flux = np.empty((x.size, radii.size))
    err = np.empty((x.size, radii.size))
    flags = np.zeros(x.size, dtype=np.int32)
    # One sep call per radius (a handful), each vectorised over all sources.
    for k, r in enumerate(radii):
        t = aperture_photometry(exp, x, y, radius_arcsec=r, flag_blends=False)
        flux[:, k] = t["instflux"]
        err[:, k] = t["instflux_err"]
        flags |= np.asarray(t["flags"])
    table = Table({"x": x, "y": y, "instflux": flux, "instflux_err": err, "flags": flags})
    table.meta["radii_arcsec"] = radii.tolist()
    return table


def fit_aperture_correction(
    exp,
    x,
    y,
    radius_arcsec: float,
    reference_radius_arcsec: float,
    *,
    order: int | None = 1,
    min_snr: float = 50.0,
    nsigma: float = 3.0,
) -> RobustFit:
    """Fit the ratio of large- to small-aperture flux of bright stars as a field.

    Parameters
    ----------
    exp : photocalib.Exposure
        FLUENCE exposure with a WCS, background subtracted.
    x, y : array_like
        Positions of (bright, isolated) stars.
    radius_arcsec, reference_radius_arcsec : float
        The measurement aperture and the large aperture it is corrected to.
    order : int or None
        Chebyshev order of the correction field (None: one constant).
    min_snr : float
        Stars whose reference-aperture S/N is below this are not used.
    nsigma : float
        Clipping threshold.

    Returns
    -------
    RobustFit
        ``.field`` is the aperture correction (multiply small-aperture fluxes by it).
    """
    if reference_radius_arcsec <= radius_arcsec:
        raise InputError("fit_aperture_correction: reference_radius_arcsec must exceed radius_arcsec")
    cog = curve_of_growth(exp, x, y, [radius_arcsec, reference_radius_arcsec])
    small = cog["instflux"][:, 0]
    large = cog["instflux"][:, 1]
    small_err = cog["instflux_err"][:, 0]
    large_err = cog["instflux_err"][:, 1]
    bad_bits = PhotFlag.EDGE | PhotFlag.SATURATED | PhotFlag.ALL_MASKED | PhotFlag.NONFINITE
    good = (
        ((np.asarray(cog["flags"]) & int(bad_bits)) == 0)
        & (small > 0)
        & (large > 0)
        & (large > min_snr * large_err)
    )
    if good.sum() < 3:
        raise InputError(
            f"fit_aperture_correction: only {int(good.sum())} usable stars above S/N {min_snr}; "
            "lower min_snr or pass more stars"
        )
    ratio = large[good] / small[good]
    # The annulus flux error dominates; the ratio error ignores the (positive) covariance.
    ratio_err = ratio * np.hypot(large_err[good] / large[good], small_err[good] / small[good])
    return robust_field_fit(
        np.asarray(x)[good], np.asarray(y)[good], ratio, ratio_err, order=order, bbox=exp.bbox, nsigma=nsigma
    )


def apply_aperture_correction(table: Table, field: BoundedField, column: str = "instflux") -> Table:
    """A copy of a photometry table with ``column`` (and its error) multiplied by the field.

    The applied factor is stored in a new ``apcorr`` column.
    """
    for name in (column, "x", "y"):
        if name not in table.colnames:
            raise InputError(f"apply_aperture_correction: table has no column {name!r}")
    out = table.copy()
    factor = field.evaluate(np.asarray(table["x"]), np.asarray(table["y"]))
    out[column] = np.asarray(table[column]) * factor
    if f"{column}_err" in table.colnames:
        out[f"{column}_err"] = np.asarray(table[f"{column}_err"]) * factor
    out["apcorr"] = factor
    return out
