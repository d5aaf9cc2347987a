"""Single-detector photometric calibration against a reference catalog.

Three models, for comparison: a fluence calibration of fluence photometry (the Jacobian already
applied), a surface-brightness calibration c_F × A with the Jacobian factored in, and the legacy
constant on surface-brightness photometry that ignores the Jacobian.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from ..calib import PhotoCalib
from ..errors import InputError
from ..fields import ConstantField
from ..fields.robust import robust_field_fit
from ..geom import Box
from ..image.kind import ImageKind
from ._match import match_sky

__all__ = ["SingleFitResult", "fit_single", "match_reference", "MODES"]

#: Modes of :func:`fit_single` and their aliases.
MODES = {
    "fluence": "fluence",
    "jacobian-aware": "fluence",
    "surface-brightness": "surface-brightness",
    "sb": "surface-brightness",
    "sb-jacobian": "surface-brightness",
    "legacy": "legacy",
}


@dataclass(frozen=True)
class SingleFitResult:
    """A fitted single-detector calibration.

    Attributes
    ----------
    photo_calib : PhotoCalib
        The calibration (its ``error`` is the relative standard error of its mean level).
    mode : str
        ``fluence``, ``surface-brightness`` or ``legacy``.
    used : numpy.ndarray
        Boolean, per input row: kept after clipping.
    residual_mag : numpy.ndarray
        Per input row, calibrated minus reference magnitude (NaN for unusable rows).
    rms_mag : float
        RMS of ``residual_mag`` over the kept rows.
    n_used, n_clipped : int
        Kept rows and rows rejected by clipping (unusable rows are in neither).
    """

    photo_calib: PhotoCalib
    mode: str
    used: np.ndarray
    residual_mag: np.ndarray
    rms_mag: float
    n_used: int
    n_clipped: int


def _names(table) -> list[str]:
    return list(table.colnames) if hasattr(table, "colnames") else list(table.columns)


def _column(table, name: str) -> np.ndarray:
    if name not in _names(table):
        raise InputError(f"fit_single: column {name!r} is missing; the table has {_names(table)}")
    return np.asarray(table[name], dtype=np.float64)


def fit_single(
    table,
    *,
    wcs=None,
    bbox: Box | None = None,
    mode: str = "fluence",
    order: int | None = 0,
    flux_column: str | None = None,
    ref_flux_column: str = "ref_flux",
    nsigma: float = 3.0,
    max_iter: int = 10,
    colour_term=None,
    ref_colour_column: str = "ref_colour",
) -> SingleFitResult:
    """Fit a PhotoCalib to matched photometry of one detector.

    The model is ``ref_flux = c(x, y) × instflux`` with c a constant (``order`` 0 or None) or a
    triangular Chebyshev field of ``order``, fitted to the ratios with inverse-variance weights
    (instrumental and reference errors combined) and iterative ``nsigma`` clipping.

    The modes:

    ``fluence`` (alias ``jacobian-aware``)
        ``instflux`` was measured on a FLUENCE image; c is c_F; kind FLUENCE.
    ``surface-brightness`` (aliases ``sb``, ``sb-jacobian``)
        The flux was summed on a SURFACE_BRIGHTNESS image (column ``instflux_sb`` if present,
        else ``instflux``); the Jacobian is factored in: c_F is fitted to
        ``ref / (instflux × A(x, y))`` and the calibration is ``c_F × PixelAreaField``, kind
        SURFACE_BRIGHTNESS. Needs ``wcs`` and ``bbox``.
    ``legacy``
        The same SB fluxes, with c fitted directly (one constant by default): the pixel area is
        absorbed, wrongly, into c. Kind SURFACE_BRIGHTNESS.

    Parameters
    ----------
    table : astropy Table or pandas DataFrame
        Matched sources: ``x``, ``y``, the flux column and ``<flux>_err``, ``ref_flux`` and
        ``ref_flux_err`` (nJy).
    wcs : SkyWcs, optional
        The detector's WCS (needed for ``surface-brightness``).
    bbox : Box, optional
        The detector box (needed for Chebyshev fields and the SB mode).
    mode : str
        See above.
    order : int or None
        0/None: one constant; n: Chebyshev of order n.
    flux_column : str, optional
        Overrides the instrumental flux column.
    ref_flux_column : str
        Reference flux column (nJy); its error is ``<name>_err`` when present.
    nsigma, max_iter : float, int
        Clipping.
    colour_term : photocalib.refcat.ColourTerm, optional
        The reference is in another photometric system: ``ref_flux`` is in the term's reference
        band and ``ref_colour_column`` holds each star's reference colour; the reference fluxes
        are carried into the instrument band (``ColourTerm.convert_flux``) before the fit, and
        stars outside the term's colour range are not used. ``residual_mag`` is then against
        the converted reference.
    ref_colour_column : str
        The colour column (``match_reference`` adds ``ref_colour`` when the reference has a
        ``colour`` column); its error is ``<name>_err`` when present.

    Returns
    -------
    SingleFitResult

    Raises
    ------
    InputError
        Unknown mode, missing columns, too few usable stars, or no WCS/bbox where needed.
    """
    if mode not in MODES:
        raise InputError(f"fit_single: unknown mode {mode!r}; use one of {sorted(MODES)}")
    mode = MODES[mode]
    if flux_column is None:
        flux_column = "instflux_sb" if (mode != "fluence" and "instflux_sb" in _names(table)) else "instflux"
    x = _column(table, "x")
    y = _column(table, "y")
    inst = _column(table, flux_column)
    inst_err = _column(table, f"{flux_column}_err")
    ref = _column(table, ref_flux_column)
    ref_err_name = f"{ref_flux_column}_err"
    ref_err = _column(table, ref_err_name) if ref_err_name in _names(table) else np.zeros_like(ref)
    if colour_term is not None:
        if ref_colour_column not in _names(table):
            raise InputError(f"fit_single: a colour term needs each star's reference colour in column "
                             f"{ref_colour_column!r} (match_reference copies a reference 'colour' column "
                             f"as 'ref_colour'); the table has {_names(table)}")
        colour = _column(table, ref_colour_column)
        cerr_name = f"{ref_colour_column}_err"
        colour_err = _column(table, cerr_name) if cerr_name in _names(table) else None
        ref, ref_err = colour_term.convert_flux(ref, ref_err, colour, colour_err)
    usable = np.isfinite(inst) & (inst > 0) & np.isfinite(ref) & (ref > 0) & np.isfinite(x) & np.isfinite(y)
    usable &= np.isfinite(inst_err) & (inst_err >= 0) & np.isfinite(ref_err) & (ref_err >= 0)
    if order == 0:
        order = None
    if order is not None and bbox is None:
        raise InputError("fit_single: a Chebyshev calibration needs bbox=Box(0, 0, nx, ny) of the detector")
    area = None
    if mode == "surface-brightness":
        if wcs is None or bbox is None:
            raise InputError("fit_single(mode='surface-brightness') needs wcs= and bbox= to factor in the pixel area")
        area = np.asarray(wcs.pixel_area(x, y), dtype=np.float64)
    scale = inst if area is None else inst * area
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ref / scale
        rel_err = np.hypot(inst_err / inst, ref_err / ref)
    # Stars with zero error would dominate; floor the relative error at 1e-4 (0.1 mmag).
    ratio_err = ratio * np.maximum(rel_err, 1e-4)
    idx = np.flatnonzero(usable)
    if idx.size < 2:
        raise InputError(f"fit_single: only {idx.size} usable matched stars; need at least 2")
    fit = robust_field_fit(
        x[idx], y[idx], ratio[idx], ratio_err[idx], order=order, bbox=bbox, nsigma=nsigma, max_iter=max_iter
    )
    field = fit.field
    if isinstance(field, ConstantField) and bbox is not None:
        field = ConstantField(field.value, bbox)
    level = float(np.mean(fit.field.evaluate(x[idx][fit.used], y[idx][fit.used])))
    rel_error = fit.error / level
    if mode == "fluence":
        calib = PhotoCalib(field, kind=ImageKind.FLUENCE, error=rel_error)
    elif mode == "surface-brightness":
        calib = PhotoCalib(field * wcs.pixel_area_field(bbox), kind=ImageKind.SURFACE_BRIGHTNESS, error=rel_error)
    else:
        calib = PhotoCalib(field, kind=ImageKind.SURFACE_BRIGHTNESS, error=rel_error)
    used = np.zeros(x.size, dtype=bool)
    used[idx[fit.used]] = True
    residual = np.full(x.size, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        model = calib.instflux_to_nanojansky(inst[idx], x[idx], y[idx])
        residual[idx] = -2.5 * np.log10(model / ref[idx])
    rms = float(np.sqrt(np.mean(residual[used] ** 2))) if used.any() else float("nan")
    return SingleFitResult(
        photo_calib=calib,
        mode=mode,
        used=used,
        residual_mag=residual,
        rms_mag=rms,
        n_used=int(used.sum()),
        n_clipped=int(idx.size - used.sum()),
    )


def match_reference(
    catalog: Table,
    reference: Table,
    radius_arcsec: float = 1.0,
    *,
    ra: str = "ra",
    dec: str = "dec",
    ref_ra: str = "ra",
    ref_dec: str = "dec",
    ref_flux: str = "flux",
    ref_id: str | None = None,
    ref_colour: str = "colour",
) -> Table:
    """A copy of a source catalog with its nearest reference match added.

    Adds ``ref_index`` (-1 if none), ``ref_sep`` (arcsec), ``ref_flux`` and ``ref_flux_err``
    (nJy; NaN where unmatched) and, if ``ref_id`` names a column, ``ref_id``. Each reference
    object is matched to at most one source (the closest).

    Parameters
    ----------
    catalog : astropy Table
        Sources with ``ra``/``dec`` in degrees.
    reference : astropy Table or pandas DataFrame
        Reference catalog with positions (degrees) and fluxes in nJy.
    radius_arcsec : float
        Match radius.
    ref_colour : str
        When the reference has this column (and ``<name>_err``), they are copied as
        ``ref_colour`` (and ``ref_colour_err``), for ``fit_single(..., colour_term=)``.
    """
    def col(t, name, what):
        if name not in _names(t):
            raise InputError(f"match_reference: {what} has no column {name!r}; it has {_names(t)}")
        return np.asarray(t[name])

    index, sep = match_sky(col(catalog, ra, "catalog"), col(catalog, dec, "catalog"),
                           col(reference, ref_ra, "reference"), col(reference, ref_dec, "reference"),
                           radius_arcsec)
    ok = index >= 0
    out = catalog.copy()
    out["ref_index"] = index
    out["ref_sep"] = sep
    flux = np.full(index.size, np.nan)
    flux[ok] = np.asarray(col(reference, ref_flux, "reference"), dtype=np.float64)[index[ok]]
    out["ref_flux"] = flux
    err = np.full(index.size, np.nan)
    if f"{ref_flux}_err" in _names(reference):
        err[ok] = np.asarray(reference[f"{ref_flux}_err"], dtype=np.float64)[index[ok]]
    out["ref_flux_err"] = err
    for src, dst in ((ref_colour, "ref_colour"), (f"{ref_colour}_err", "ref_colour_err")):
        if src in _names(reference):
            values = np.full(index.size, np.nan)
            values[ok] = np.asarray(reference[src], dtype=np.float64)[index[ok]]
            out[dst] = values
    if ref_id is not None:
        ids = np.full(index.size, -1, dtype=np.int64)
        ids[ok] = np.asarray(col(reference, ref_id, "reference"), dtype=np.int64)[index[ok]]
        out["ref_id"] = ids
    return out
