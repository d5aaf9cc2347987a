"""Catalog-level observations of a simulated survey: no pixels, the exact forward model per star.

Fast enough for millions of observations, for the joint calibration's tests and benchmarks.

Forward model (the flux a star's aperture sum would give, noise aside)
-------------------------------------------------------------------
For star ``s`` (true AB flux ``F`` in nJy through the band) observed in visit ``v`` on detector
``d`` at pixel ``(x, y)``, with the camera's and survey's truth (:mod:`photocalib.sim.camera`,
:mod:`photocalib.sim.survey`):

* photo-electrons collected
  ``e = F · k · t_v · T_v(ξ, η) · QE_d(x, y) · I_sky(x, y) · ρ_sed(x, y)``,
  with ``k`` = :attr:`Survey.electrons_per_njy_s`, ``t_v`` the exposure time, ``T_v`` the
  atmospheric transmission (extinction, grey cloud, optional gradient) at the star's tangent-
  plane position about the pointing, ``QE_d`` the smooth QE, ``I_sky`` the vignetting and
  ``ρ_sed`` the chromatic response (1 for achromatic cameras);
* the dome flat is ``QE · I_dome · ρ_lamp · A / A_ref`` and flat-fielding divides by it and
  by ``A_ref`` (docs/design.md), so on the flat-fielded, **surface-brightness** image the aperture sum
  is ``instflux_SB = F · k · t_v · T_v · σ_d(x, y) / A(x, y)`` in electron/arcsec², where
  ``σ_d = (I_sky / I_dome)(ρ_sed / ρ_lamp)`` is :meth:`Camera.star_flat` and ``A`` the pixel
  area (:meth:`Camera.pixel_area`, the smooth area the WCS describes);
* on the **fluence** image the sum is ``instflux_F = instflux_SB · A``.

So the true calibration (nJy per instrumental unit) is ``c_F = 1 / (k t_v T_v σ_d)`` and
``c_SB = c_F · A``. Noise: ``var(e) = e + n_pix (B + RN²)`` with ``B = sky_rate · t_v · A ·
QE · I_sky`` the sky electrons per pixel and ``n_pix = π r²`` for an aperture of radius
``r = aperture_fwhm × seeing`` (pixels); the instrumental error is ``sqrt(var(e))`` scaled like
the flux. Gross outliers (fraction ``outlier_fraction``) have their measured flux multiplied
by ``10^(∓0.4 Δ)`` with Δ uniform in ``outlier_mag``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from ..astrometry import unit_vectors
from ..calib import AB_ZERO_POINT_NJY_MAG
from ..errors import InputError
from ..geom import Box
from ..image.kind import ImageKind
from .camera import Camera, sky_to_tangent
from .stars import StarCatalog, make_stars
from .survey import Survey

__all__ = ["CameraVisitWcs", "CatalogTruth", "observations_from_truth"]


class CameraVisitWcs:
    """A light WCS of one detector in one visit, straight from the camera model (no FITS header).

    It has the methods the joint fit uses (``pixel_to_sky``, ``pixel_area``,
    ``pixel_area_field``, ``to_header``) and evaluates the exact optical model, which the
    TAN-SIP header of :meth:`Camera.detector_wcs` reproduces (its forward polynomial is exact).
    Building a :class:`photocalib.SkyWcs` costs ~25 ms, too much for the 10⁴ (visit, detector)
    pairs of a benchmark; this costs nothing.
    """

    __slots__ = ("_camera", "_detector", "_ra", "_dec", "_rot", "_visit")

    def __init__(self, camera: Camera, detector: int, visit) -> None:
        self._camera = camera
        self._detector = int(detector)
        self._visit = visit
        self._ra, self._dec, self._rot = float(visit.ra), float(visit.dec), float(visit.rotation_deg)

    def pixel_to_sky(self, x, y):
        """(ra, dec) in degrees of 0-based pixel positions."""
        return self._camera.pixel_to_sky(self._detector, x, y, self._ra, self._dec, self._rot)

    def sky_to_pixel(self, ra, dec):
        """0-based pixel positions of (ra, dec) in degrees."""
        return self._camera.sky_to_pixel(self._detector, ra, dec, self._ra, self._dec, self._rot)

    def pixel_area(self, x, y):
        """Pixel area on the sky, arcsec², of the smooth model (what the WCS describes)."""
        return self._camera.pixel_area(self._detector, x, y, tree_rings=False)

    def pixel_area_field(self, box: Box):
        """The pixel area as a :class:`photocalib.PixelAreaField` on ``box``."""
        from ..fields.pixel_area import PixelAreaField

        return PixelAreaField(self, box)

    def to_header(self):
        """The equivalent TAN-SIP header (:meth:`Camera.detector_wcs`)."""
        return self._camera.detector_wcs(self._detector, self._ra, self._dec, self._rot)


@dataclass(frozen=True)
class CatalogTruth:
    """The truth behind :func:`observations_from_truth`.

    Attributes
    ----------
    stars : astropy.table.Table
        ``star, flux`` (true nJy in the band), ``mag``, ``template``.
    observations : astropy.table.Table
        Row by row with the observation table: ``true_instflux`` (noiseless, no outlier),
        ``calibration`` (true nJy per instrumental unit of the table's kind),
        ``pixel_area`` (arcsec²), ``star_flat`` (σ_d), ``transmission`` (k t T),
        ``outlier`` (bool).
    bboxes : dict
        ``{detector: Box}``.
    camera, survey : Camera, Survey
    kind : ImageKind
    """

    stars: Table
    observations: Table
    bboxes: dict
    camera: Camera
    survey: Survey
    kind: ImageKind

    def star_flat(self, detector: int, x, y) -> np.ndarray:
        """The true relative response σ_d(x, y) (fiducial SED): the calibration varies as 1/σ."""
        return self.camera.star_flat(detector, x, y, band=self.survey.band)


def _visit_header(camera: Camera, detector: int, visit, cache: dict):
    """:meth:`Camera.detector_wcs` for a visit, reusing the detector's inverse-SIP fit.

    Only CRVAL and the CD rotation depend on the visit; the SIP terms (forward and the fitted
    inverse) are in the detector's pixel frame, so one fit per detector serves every visit.
    """
    if detector not in cache:
        cache[detector] = camera.detector_wcs(detector, 0.0, 0.0, 0.0)
    h = cache[detector].copy()
    th = math.radians(visit.rotation_deg)
    # CD(θ) = R(θ) R(0)⁻¹ CD(0) with R(θ) = [[-cos, sin], [sin, cos]] (Camera._rotation_matrix)
    rot = np.array([[math.cos(th), math.sin(th)], [-math.sin(th), math.cos(th)]])
    cd0 = np.array([[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]])
    cd = rot @ cd0
    h["CRVAL1"] = float(visit.ra % 360.0)
    h["CRVAL2"] = float(visit.dec)
    h["CD1_1"], h["CD1_2"] = float(cd[0, 0]), float(cd[0, 1])
    h["CD2_1"], h["CD2_2"] = float(cd[1, 0]), float(cd[1, 1])
    return h


def _sed_factors(camera: Camera, detector: int, xs, ys, band: str, templates) -> tuple[np.ndarray, np.ndarray]:
    """Star flat and the SED's response relative to the lamp's at each star (ones when achromatic)."""
    if not camera.is_chromatic:
        return camera.star_flat(detector, xs, ys, band=band), np.ones(np.size(xs))
    sf = np.empty(np.size(xs))
    rho = np.empty(np.size(xs))
    for tpl in np.unique(templates):
        m = templates == tpl
        sf[m] = camera.star_flat(detector, xs[m], ys[m], band=band, sed=str(tpl))
        rho[m] = camera.rho(detector, xs[m], ys[m], str(tpl), band)
    return sf, rho


def observations_from_truth(
    camera: Camera,
    survey: Survey,
    stars: StarCatalog | None = None,
    *,
    kind: ImageKind | str = ImageKind.SURFACE_BRIGHTNESS,
    density: float = 2.0e4,
    mag_range: tuple[float, float] = (17.0, 22.5),
    outlier_fraction: float = 0.0,
    outlier_mag: tuple[float, float] = (0.2, 1.5),
    aperture_fwhm: float = 1.0,
    edge: float = 5.0,
    noise: bool = True,
    seed: int = 1,
    wcs_factory=None,
) -> tuple[Table, dict, CatalogTruth]:
    """Observations of every star on every detector of every visit, from the exact truth.

    Parameters
    ----------
    camera, survey : Camera, Survey
        From :meth:`Camera.preset` and :func:`make_survey`.
    stars : StarCatalog, optional
        Default: :func:`make_stars` over the survey footprint with ``density`` (per deg²) and
        ``mag_range``.
    kind : ImageKind or str
        Whether ``instflux`` is the aperture sum on the surface-brightness (flat-fielded) image
        or on the fluence image.
    outlier_fraction : float
        Fraction of observations given a gross error.
    outlier_mag : (float, float)
        Range of the gross errors' size, magnitudes (random sign).
    aperture_fwhm : float
        Aperture radius in units of the visit's seeing FWHM (sets the background noise).
    edge : float
        Stars closer than this many pixels to a detector edge are not measured.
    noise : bool
        Add photon and read noise.
    seed : int
    wcs_factory : callable or "camera", optional
        ``header -> WCS object``; default :meth:`photocalib.SkyWcs.from_header`. ``"camera"``
        gives :class:`CameraVisitWcs` objects (no header parsing; for large benchmarks).

    Returns
    -------
    observations : astropy.table.Table
        ``visit, detector, star, x, y, instflux, instflux_err`` (the joint fit's input).
    wcs_by_detector : dict
        ``{(visit, detector): SkyWcs}`` from :meth:`Camera.detector_wcs`.
    truth : CatalogTruth
    """
    kind = ImageKind.parse(kind)
    if not 0.0 <= outlier_fraction < 1.0:
        raise InputError(f"outlier_fraction must be in [0, 1), got {outlier_fraction}")
    if wcs_factory is None:
        from ..astrometry import SkyWcs

        wcs_factory = SkyWcs.from_header
    if stars is None:
        ra0, dec0, rad = survey.footprint()
        stars = make_stars(ra0, dec0, rad, density=density, mag_range=mag_range, band=survey.band, seed=seed)
    rng = np.random.default_rng([seed, 17])
    # a separate stream, so adding outliers leaves every noise draw as it was
    rng_out = np.random.default_rng([seed, 19])
    band = survey.band
    cfg = camera.config
    ny, nx = cfg.detector_shape
    pitch = cfg.pixel_pitch_mm
    centres = np.array([d.center_mm for d in camera.detectors])
    r_field = camera.field_radius_arcsec * 1.05
    flux_all = stars.flux[band]
    cols: dict[str, list] = {k: [] for k in ("visit", "detector", "star", "x", "y", "instflux", "instflux_err",
                                            "true_instflux", "calibration", "pixel_area", "star_flat",
                                            "transmission", "outlier")}
    wcs_by_detector: dict = {}
    sky_xyz = unit_vectors(stars.ra, stars.dec)
    cos_lim = math.cos(math.radians(r_field / 3600.0))
    base_headers: dict = {}
    for v in survey.visits:
        p_xyz = unit_vectors(v.ra, v.dec)
        near = np.nonzero(sky_xyz @ p_xyz > cos_lim)[0]
        if near.size == 0:
            continue
        xi, eta = sky_to_tangent(stars.ra[near], stars.dec[near], v.ra, v.dec)
        # focal-plane position through detector 0's pixel frame (any detector gives the same u, v)
        x0, y0 = camera.sky_to_pixel(0, stars.ra[near], stars.dec[near], v.ra, v.dec, v.rotation_deg)
        u = centres[0, 0] + (x0 - (nx - 1) / 2) * pitch
        w = centres[0, 1] + (y0 - (ny - 1) / 2) * pitch
        trans = survey.transmission(v.visit, xi, eta) * survey.electrons_per_njy_s * v.exptime
        sky_e_rate = survey.sky_rate(v.visit) * v.exptime
        for d in camera.detectors:
            xd = (u - d.center_mm[0]) / pitch + (nx - 1) / 2
            yd = (w - d.center_mm[1]) / pitch + (ny - 1) / 2
            on = (xd >= edge) & (xd <= nx - 1 - edge) & (yd >= edge) & (yd <= ny - 1 - edge)
            if not on.any():
                continue
            idx = near[on]
            xs, ys = xd[on], yd[on]
            area = camera.pixel_area(d.id, xs, ys, tree_rings=False)
            sf, rho_sed = _sed_factors(camera, d.id, xs, ys, band, stars.template[idx])
            t_k = trans[on]
            qe_ill = camera.qe_smooth(d.id, xs, ys) * camera.illumination_sky(d.id, xs, ys)
            flux = flux_all[idx]
            electrons = flux * t_k * qe_ill * rho_sed
            inst_f = flux * t_k * sf
            scale_pix = math.sqrt(float(np.mean(area)))
            n_pix = math.pi * (aperture_fwhm * v.seeing_fwhm / scale_pix) ** 2
            var_e = electrons + n_pix * (sky_e_rate * area * qe_ill + d.read_noise**2)
            err_f = np.sqrt(var_e) * inst_f / electrons
            if kind is ImageKind.SURFACE_BRIGHTNESS:
                true_inst = inst_f / area
                err = err_f / area
            else:
                true_inst = inst_f
                err = err_f
            meas = true_inst + (err * rng.standard_normal(idx.size) if noise else 0.0)
            out = rng_out.uniform(size=idx.size) < outlier_fraction
            dm = rng_out.uniform(*outlier_mag, size=idx.size) * rng_out.choice([-1.0, 1.0], size=idx.size)
            if out.any():
                dm = dm[out]
                meas[out] *= 10 ** (-0.4 * dm)
            cols["visit"].append(np.full(idx.size, v.visit))
            cols["detector"].append(np.full(idx.size, d.id))
            cols["star"].append(stars.star[idx])
            cols["x"].append(xs)
            cols["y"].append(ys)
            cols["instflux"].append(meas)
            cols["instflux_err"].append(err)
            cols["true_instflux"].append(true_inst)
            cols["calibration"].append(flux / true_inst)
            cols["pixel_area"].append(area)
            cols["star_flat"].append(sf)
            cols["transmission"].append(t_k)
            cols["outlier"].append(out)
            if wcs_factory == "camera":
                wcs_by_detector[(v.visit, d.id)] = CameraVisitWcs(camera, d.id, v)
            else:
                wcs_by_detector[(v.visit, d.id)] = wcs_factory(_visit_header(camera, d.id, v, base_headers))
    if not cols["visit"]:
        raise InputError("no star falls on any detector: check the survey footprint and the star catalog")
    data = {k: np.concatenate(vals) for k, vals in cols.items()}
    obs_names = ("visit", "detector", "star", "x", "y", "instflux", "instflux_err")
    observations = Table({k: data[k] for k in obs_names})
    truth_obs = Table({k: data[k] for k in data if k not in obs_names or k in ("visit", "detector", "star")})
    star_table = Table({"star": stars.star, "flux": flux_all,
                        "mag": -2.5 * np.log10(flux_all) + AB_ZERO_POINT_NJY_MAG,
                        "template": stars.template.astype(str)})
    bboxes = {d.id: Box(0, 0, nx, ny) for d in camera.detectors}
    return observations, wcs_by_detector, CatalogTruth(star_table, truth_obs, bboxes, camera, survey, kind)
