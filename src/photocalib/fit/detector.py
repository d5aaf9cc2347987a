"""The single-detector chain: one exposure in, a background-subtracted fluence exposure, a source
catalog and its single-detector calibrations out, in the order the three rules impose.

ISR and flat (surface brightness) → background estimated and subtracted on surface brightness →
fluence → detection, centroids and aperture photometry on fluence (and, for comparison, the same
apertures summed on the surface-brightness image as a legacy pipeline does) → reference match →
Jacobian-aware and legacy calibrations. ``photocalib run`` calls this function for every
detector and only adds files, manifests and fingerprints around it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from ..background import BackgroundConfig
from ..background import estimate as estimate_background
from ..background import subtract as subtract_background
from ..calib import PhotoCalib
from ..errors import InputError
from ..fields import BoundedField
from ..image import Exposure, ImageKind
from ..isr import IsrConfig, isr_from_hdu
from ..measure import MeasureConfig, PhotFlag, aperture_photometry, detect, fit_aperture_correction
from .catalog import source_catalog
from .config import SingleFitConfig
from .single import SingleFitResult, fit_single, match_reference

__all__ = ["DetectorResult", "process_detector", "CALIBRATIONS"]

log = logging.getLogger("photocalib.fit")

#: Names of the single-detector calibrations, in the order they are fitted.
CALIBRATIONS = ("jacobian-aware", "legacy")


@dataclass(frozen=True)
class DetectorResult:
    """What :func:`process_detector` produces.

    Attributes
    ----------
    exposure : Exposure
        Background-subtracted FLUENCE exposure (counts), carrying the Jacobian-aware
        calibration as its ``photo_calib`` when there is one.
    background : BoundedField or None
        The sky model (surface-brightness units); None when switched off.
    catalog : astropy Table
        Every detection: ``x``, ``y``, ``ra``, ``dec``, ``instflux`` (+``_err``, aperture
        corrected, on fluence), ``apcorr``, ``flags`` (:class:`~photocalib.measure.PhotFlag`),
        ``pixel_area``, ``instflux_sb`` (+``_err``: the legacy sum on surface brightness),
        ``snr``, ``kind``, ``ref_index``, ``ref_id``, ``ref_flux`` (+``_err``) and, per
        calibration, ``flux_jacobian_aware`` / ``flux_legacy`` (nJy); with a Jacobian-aware
        calibration also ``instflux_nJy`` and ``instflux_mag`` (+``_err``).
    calibrations : dict
        ``{"jacobian-aware": PhotoCalib (FLUENCE), "legacy": PhotoCalib (SURFACE_BRIGHTNESS)}``;
        empty without a reference or with fewer than 3 usable stars.
    fit : SingleFitResult or None
        The Jacobian-aware fit (None without one).
    """

    exposure: Exposure
    background: BoundedField | None
    catalog: Table
    calibrations: dict[str, PhotoCalib] = field(default_factory=dict)
    fit: SingleFitResult | None = None


def process_detector(
    exposure,
    flat=None,
    reference: Table | None = None,
    *,
    isr: IsrConfig | None = None,
    background: BackgroundConfig | None = None,
    measure: MeasureConfig | None = None,
    single: SingleFitConfig | None = None,
    wcs=None,
) -> DetectorResult:
    """Process one detector: raw (or already flat-fielded) image → fluence exposure, catalog and
    single-detector calibrations.

    Parameters
    ----------
    exposure : astropy ImageHDU or Exposure
        A raw detector HDU in ADU (GAIN, RDNOISE, BIAS or overscan, SATURATE and the WCS in its
        header), which needs ``flat``; or an Exposure that is already flat-fielded (kind
        SURFACE_BRIGHTNESS, or FLUENCE) with a WCS, which skips ISR.
    flat : DomeFlat or numpy.ndarray, optional
        The detector's dome flat, for a raw HDU only.
    reference : astropy Table or pandas DataFrame, optional
        Reference catalog: ``ra``, ``dec`` (degrees), ``flux``, ``flux_err`` (nJy) and an id
        column (``ref_id``, ``id`` or ``star``); without one nothing is calibrated.
    isr, background, measure, single : configs, optional
        The options of each step; defaults are what ``photocalib run`` uses.
    wcs : SkyWcs, optional
        For a raw HDU: overrides the header's WCS.

    Returns
    -------
    DetectorResult

    Raises
    ------
    InputError
        A raw HDU without a flat, a flat given with an Exposure, an Exposure without a WCS, or
        unreadable ISR keywords.
    ImageKindError
        Never for the kinds above: each step gets the kind it needs.

    Examples
    --------
    Two stars of 20000 counts on a flat-fielded (surface-brightness) image, no reference:

    >>> import numpy as np
    >>> from astropy.wcs import WCS
    >>> import photocalib as pc
    >>> w = WCS(naxis=2)
    >>> w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.crval, w.wcs.crpix = [150.0, 2.0], [64.5, 64.5]
    >>> w.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]          # 0.2" pixels: A = 0.04 arcsec²
    >>> yy, xx = np.mgrid[:128, :128]
    >>> stars = sum(2e4 / (8 * np.pi) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0)
    ...             for x, y in [(30, 40), (90, 80)])
    >>> counts = np.random.default_rng(1).poisson(stars + 50.0).astype(float)
    >>> exp = pc.Exposure(counts / 0.04, variance=counts / 0.04**2, wcs=pc.SkyWcs(w),
    ...                   kind="SURFACE_BRIGHTNESS")
    >>> res = process_detector(exp, background=pc.background.BackgroundConfig(mesh_size=32, order=0))
    >>> res.exposure.kind.value, np.round(res.catalog["x"]).tolist()
    ('FLUENCE', [30.0, 90.0])
    >>> bool(np.allclose(res.catalog["instflux"], 2e4, rtol=0.03)), res.calibrations
    (True, {})
    """
    isr = isr or IsrConfig()
    background = background or BackgroundConfig()
    measure = measure or MeasureConfig()
    single = single or SingleFitConfig()
    sb = _flat_fielded(exposure, flat, isr, wcs)
    wcs = sb.wcs
    bg = None
    if background.enabled:
        # Rule 3: the sky is modelled on the surface-brightness image.
        bg = estimate_background(sb, mesh_size=background.mesh_size, order=background.order_for(sb.shape))
        sb = subtract_background(sb, bg)
    fluence = sb.to_fluence()
    catalog = measure_sources(fluence, sb, measure)
    _add_reference(catalog, reference, measure.match_radius_arcsec)
    where = _describe(fluence)
    calibs, fit = ({}, None) if reference is None else _single_calibrations(catalog, fluence, measure,
                                                                             single, where)
    for name, calib in calibs.items():
        flux_col = "instflux_sb" if name == "legacy" else "instflux"
        catalog[f"flux_{name.replace('-', '_')}"] = calib.instflux_to_nanojansky(
            np.asarray(catalog[flux_col]), np.asarray(catalog["x"]), np.asarray(catalog["y"]))
    if fit is not None:
        catalog = source_catalog(catalog, fit.photo_calib, kind=ImageKind.FLUENCE)
        fluence = fluence.replace(photo_calib=fit.photo_calib)
    for key in ("VISIT", "DETECTOR", "FILTER"):
        if key in fluence.metadata:
            catalog.meta[key.lower()] = fluence.metadata[key]
    return DetectorResult(fluence, bg, catalog, calibs, fit)


def _describe(exp: Exposure) -> str:
    meta = exp.metadata
    return f"visit {meta.get('VISIT', '?')} detector {meta.get('DETECTOR', '?')}"


def _flat_fielded(exposure, flat, isr: IsrConfig, wcs) -> Exposure:
    """The surface-brightness exposure the chain starts from."""
    if isinstance(exposure, Exposure):
        if flat is not None:
            raise InputError("process_detector: an Exposure is already flat-fielded; give flat= "
                             "only with a raw HDU")
        if exposure.wcs is None:
            raise InputError("process_detector: the exposure has no WCS; attach one with "
                             "exposure.replace(wcs=photocalib.SkyWcs.from_header(header))")
        return exposure.to_surface_brightness()
    if flat is None:
        raise InputError("process_detector: a raw HDU needs its dome flat (flat=); pass an "
                         "Exposure to start from an image that is already flat-fielded")
    kwargs = {} if isr.saturation is None else {"saturation": isr.saturation}
    return isr_from_hdu(exposure, flat, wcs=wcs, **kwargs)


def measure_sources(fluence: Exposure, sb: Exposure, measure: MeasureConfig) -> Table:
    """Detect and photometer on the FLUENCE image (rule 1); the legacy sums on ``sb``.

    ``sb`` is the same image as surface brightness (what a flat-fielded image is); the legacy
    comparison sums the same apertures on it, as a pipeline that ignores the Jacobian would.
    """
    found = detect(fluence, threshold=measure.threshold)
    x = np.asarray(found["x"], float)
    y = np.asarray(found["y"], float)
    phot = _photometry(fluence, x, y, measure)
    # What a legacy pipeline measures: the flat-fielded image summed as if it were fluence.
    legacy = _photometry(sb.replace(kind=ImageKind.FLUENCE, unit=fluence.unit, photo_calib=None),
                         x, y, measure)
    apcorr = _aperture_correction(fluence, x, y, measure)
    wcs = fluence.wcs
    ra, dec = wcs.pixel_to_sky(x, y)
    flags = np.asarray(phot["flags"]).astype(np.int64)
    # Detection knows about saturated footprints and deblended objects; keep both.
    flags |= np.where(np.asarray(found["saturated"], bool), int(PhotFlag.SATURATED), 0)
    flags |= np.where(np.asarray(found["blended"], bool), int(PhotFlag.BLENDED), 0)
    instflux = np.asarray(phot["instflux"], float) * apcorr
    instflux_err = np.asarray(phot["instflux_err"], float) * apcorr
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = instflux / instflux_err
    out = Table({
        "x": x, "y": y, "ra": np.asarray(ra, float), "dec": np.asarray(dec, float),
        "instflux": instflux, "instflux_err": instflux_err, "apcorr": apcorr, "flags": flags,
        "pixel_area": np.asarray(wcs.pixel_area(x, y), float) if x.size else np.empty(0),
        "instflux_sb": np.asarray(legacy["instflux"], float) * apcorr,
        "instflux_sb_err": np.asarray(legacy["instflux_err"], float) * apcorr,
        "snr": snr, "kind": np.full(x.size, ImageKind.FLUENCE.value),
    })
    out.meta["kind"] = ImageKind.FLUENCE.value
    return out


def _photometry(exp: Exposure, x, y, measure: MeasureConfig) -> Table:
    if measure.aperture_arcsec is not None:
        return aperture_photometry(exp, x, y, radius_arcsec=measure.aperture_arcsec)
    return aperture_photometry(exp, x, y, radius=measure.aperture_pixels)


def _aperture_correction(fluence: Exposure, x, y, m: MeasureConfig) -> np.ndarray:
    """Large-aperture / small-aperture flux ratio at each source (ones when not configured)."""
    apcorr = np.ones(x.size)
    if m.apcorr_radius_arcsec is None or m.aperture_arcsec is None or not x.size:
        return apcorr
    from scipy.spatial import cKDTree

    # Only stars with no detected neighbour within twice the large aperture: in a crowded
    # field the large aperture of most stars holds a neighbour, which no clipping undoes.
    ny, nx = fluence.shape
    scale = float(np.asarray(fluence.wcs.pixel_scale(nx / 2, ny / 2)))
    nn = (cKDTree(np.c_[x, y]).query(np.c_[x, y], k=2)[0][:, 1] if x.size > 1
          else np.full(x.size, np.inf))
    iso = nn * scale > 2.0 * m.apcorr_radius_arcsec
    try:
        fit = fit_aperture_correction(fluence, x[iso], y[iso], m.aperture_arcsec, m.apcorr_radius_arcsec,
                                      order=m.apcorr_order or None, min_snr=max(m.min_snr, 50.0))
    except InputError as exc:
        # Common on sparse detectors; the joint fit's grey term absorbs a per-visit PSF loss.
        log.info("no aperture correction for %s: %s", _describe(fluence), exc)
        return apcorr
    values = fit.field.evaluate(x, y)
    # A large aperture holds at least the small one's flux and, for any real PSF, not half as
    # much again: outside that the correction is measuring something else.
    if np.all((values >= 0.98) & (values <= 1.5)):
        return values
    log.info("aperture correction %.3f..%.3f rejected as implausible", values.min(), values.max())
    return apcorr


_ID_COLUMNS = ("ref_id", "id", "star")


def _add_reference(catalog: Table, reference, radius_arcsec: float) -> None:
    """Add ``ref_index``, ``ref_id``, ``ref_flux``, ``ref_flux_err`` in place (unique matches)."""
    n = len(catalog)
    if reference is None:
        catalog["ref_index"] = np.full(n, -1, np.int64)
        catalog["ref_id"] = np.full(n, -1, np.int64)
        catalog["ref_flux"] = np.full(n, np.nan)
        catalog["ref_flux_err"] = np.full(n, np.nan)
        return
    names = list(getattr(reference, "colnames", None) or reference.columns)
    id_col = next((c for c in _ID_COLUMNS if c in names), None)
    matched = match_reference(catalog, reference, radius_arcsec)
    index = np.asarray(matched["ref_index"], np.int64)
    ok = index >= 0
    ids = np.full(n, -1, np.int64)
    if id_col is not None:
        ids[ok] = np.asarray(reference[id_col], np.int64)[index[ok]]
    else:
        ids[ok] = index[ok]
    catalog["ref_index"] = index
    catalog["ref_id"] = ids
    catalog["ref_flux"] = np.asarray(matched["ref_flux"], float)
    catalog["ref_flux_err"] = np.asarray(matched["ref_flux_err"], float)


def _single_calibrations(catalog: Table, fluence: Exposure, measure: MeasureConfig,
                         single: SingleFitConfig, where: str):
    """The Jacobian-aware (and legacy) fits on matched, unflagged stars with S/N ≥ min_snr."""
    good = ((np.asarray(catalog["ref_index"]) >= 0) & (np.asarray(catalog["flags"]) == 0)
            & (np.asarray(catalog["snr"]) >= measure.min_snr))
    if good.sum() < 3:
        log.warning("%s: only %d stars matched to the reference: no single-detector calibration",
                    where, int(good.sum()))
        return {}, None
    table = catalog[good]["x", "y", "instflux", "instflux_err", "ref_flux", "ref_flux_err",
                          "instflux_sb", "instflux_sb_err"]
    calibs: dict[str, PhotoCalib] = {}
    fit = None
    try:
        fit = fit_single(table, wcs=fluence.wcs, bbox=fluence.bbox, mode="jacobian-aware",
                         order=single.single_order)
        calibs["jacobian-aware"] = fit.photo_calib
        if single.compare_legacy:
            calibs["legacy"] = fit_single(table, wcs=fluence.wcs, bbox=fluence.bbox, mode="legacy",
                                          order=0).photo_calib
    except InputError as exc:
        log.warning("%s: single-detector calibration failed: %s", where, exc)
    return calibs, fit
