"""Simulated survey: visits with dithers, rotations, grey extinction, seeing and sky levels.

A :class:`Survey` is a camera, a band and a table of visits; every per-visit truth needed to
predict a star's counts (transparency at any focal-plane position, sky level) lives here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.table import Table

from ..calib import AB_ZERO_POINT_NJY_MAG
from ..errors import InputError
from . import spectra
from .camera import Camera, sky_to_tangent, tangent_to_sky

__all__ = ["SurveyConfig", "Visit", "Survey", "make_survey"]

#: Atmospheric extinction coefficients (mag per airmass) and dark-sky brightness (AB mag/arcsec^2).
EXTINCTION = {"u": 0.45, "g": 0.20, "r": 0.12, "i": 0.08, "z": 0.05, "y": 0.04}
SKY_MAG = {"u": 22.9, "g": 22.3, "r": 21.2, "i": 20.5, "z": 19.6, "y": 18.6}


@dataclass(frozen=True)
class SurveyConfig:
    """How visits are drawn.

    Attributes
    ----------
    n_visits : int
    band : str
        One of ``u g r i z y`` (LSST bandpasses shipped with GalSim).
    seed : int
    ra, dec : float
        Field centre, degrees.
    dither_fraction : float
        Pointings are offset uniformly within a disc of this fraction of the field radius.
    rotation_range_deg : float
        Rotator angles are drawn uniformly in [0, rotation_range_deg).
    exptime : float or tuple
        Exposure time in s, or a (min, max) range drawn per visit.
    seeing_range : tuple of float
        PSF FWHM range (arcsec) drawn per visit.
    psf : {"moffat", "kolmogorov"}
        PSF profile; Moffat is truncated at ``moffat_trunc_fwhm`` FWHM so a finite stamp holds
        all of the flux.
    moffat_beta, moffat_trunc_fwhm : float
    airmass_range : tuple of float
    grey_sigma_mag : float
        Grey (cloud) extinction per visit is ``|N(0, sigma)|`` mag on ``1 - photometric_fraction``
        of the visits and 0 on the rest.
    photometric_fraction : float
    grey_gradient_mag : float
        If non-zero, each visit gets a linear grey gradient across the field whose size at the
        field edge is drawn from N(0, this) mag per axis.
    sky_sigma_mag : float
        Scatter of the sky brightness around the dark-sky value of the band.
    mjd_start : float
    sky_gradient_fraction : float
        If non-zero, each visit's sky brightness gets a linear gradient across the field: a
        relative change at the field edge (xi = R, eta = R) drawn from N(0, this) per axis, so
        the sky of a visit differs from another's by a level and a slope larger than a detector.
    halo_fraction : float
        Peak surface brightness of an extended low-surface-brightness source (a galaxy halo,
        exponential profile) as a fraction of the band's dark-sky surface brightness; 0: none.
    halo_scale_arcsec : float
        Exponential scale length of the halo, arcsec.
    halo_offset_arcsec : tuple of float
        Halo centre in the tangent plane of the field centre (east, north), arcsec.
    """

    n_visits: int = 10
    band: str = "r"
    seed: int = 1
    ra: float = 150.0
    dec: float = 2.0
    dither_fraction: float = 0.5
    rotation_range_deg: float = 360.0
    exptime: float | tuple[float, float] = 30.0
    seeing_range: tuple[float, float] = (0.6, 1.0)
    psf: str = "moffat"
    moffat_beta: float = 3.0
    moffat_trunc_fwhm: float = 4.0
    airmass_range: tuple[float, float] = (1.0, 1.6)
    grey_sigma_mag: float = 0.05
    photometric_fraction: float = 0.5
    grey_gradient_mag: float = 0.0
    sky_sigma_mag: float = 0.2
    mjd_start: float = 60400.0
    sky_gradient_fraction: float = 0.0
    halo_fraction: float = 0.0
    halo_scale_arcsec: float = 30.0
    halo_offset_arcsec: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.n_visits < 1:
            raise InputError(f"n_visits={self.n_visits}: need at least one visit")
        if self.band not in spectra.BANDS:
            raise InputError(f"band {self.band!r}: unknown; use one of {', '.join(spectra.BANDS)}")
        if self.psf not in ("moffat", "kolmogorov"):
            raise InputError(f"psf {self.psf!r}: use 'moffat' or 'kolmogorov'")
        if not self.halo_fraction >= 0 or not self.halo_scale_arcsec > 0:
            raise InputError(
                f"halo_fraction={self.halo_fraction}, halo_scale_arcsec={self.halo_scale_arcsec}: "
                "need halo_fraction >= 0 and halo_scale_arcsec > 0"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SurveyConfig:
        d = dict(d)
        for k in ("seeing_range", "airmass_range", "halo_offset_arcsec"):
            if k in d:
                d[k] = tuple(d[k])
        if isinstance(d.get("exptime"), list):
            d["exptime"] = tuple(d["exptime"])
        return cls(**d)


@dataclass(frozen=True)
class Visit:
    """One visit's pointing, conditions and photometric truth.

    Attributes
    ----------
    visit : int
        Visit number (the ``VISIT`` keyword).
    ra, dec, rotation_deg : float
        Pointing (degrees) and position angle of the focal-plane +v axis, east of north.
    mjd, exptime, airmass : float
    seeing_fwhm : float
        PSF FWHM, arcsec.
    extinction_mag : float
        k_band x airmass.
    grey_mag : float
        Grey cloud extinction (mag) at the pointing.
    grey_gradient : tuple of float
        Extra extinction (mag) at xi = R and at eta = R (R the field radius in arcsec), linear.
    sky_mag : float
        Sky surface brightness, AB mag/arcsec^2 through the nominal bandpass, at the pointing.
    sky_gradient : tuple of float
        Relative change of the sky brightness at xi = R and at eta = R (linear; R the field
        radius in arcsec).
    """

    visit: int
    ra: float
    dec: float
    rotation_deg: float
    mjd: float
    exptime: float
    airmass: float
    seeing_fwhm: float
    extinction_mag: float
    grey_mag: float
    grey_gradient: tuple[float, float]
    sky_mag: float
    sky_gradient: tuple[float, float] = (0.0, 0.0)

    def to_row(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["grey_gradient_x"], d["grey_gradient_y"] = d.pop("grey_gradient")
        d["sky_gradient_x"], d["sky_gradient_y"] = d.pop("sky_gradient")
        return d


class Survey:
    """A camera observing a list of visits in one band.

    Parameters
    ----------
    camera : Camera
    config : SurveyConfig
    visits : sequence of Visit
    """

    def __init__(self, camera: Camera, config: SurveyConfig, visits) -> None:
        self.camera = camera
        self.config = config
        self.visits: tuple[Visit, ...] = tuple(visits)
        self._by_id = {v.visit: v for v in self.visits}
        #: Electrons per second per nJy for the nominal system in this band.
        self.electrons_per_njy_s = spectra.electrons_per_second_per_njy(config.band, camera.config.collecting_area_cm2)

    @property
    def band(self) -> str:
        return self.config.band

    def visit(self, visit: int) -> Visit:
        """The :class:`Visit` with that number (InputError if none)."""
        try:
            return self._by_id[int(visit)]
        except KeyError:
            raise InputError(f"visit {visit}: not in this survey (visits {sorted(self._by_id)})") from None

    def transmission(self, visit: int, xi, eta) -> np.ndarray:
        """Atmospheric transmission (extinction x grey x gradient) at tangent-plane (xi, eta) arcsec."""
        v = self.visit(visit)
        r = self.camera.field_radius_arcsec
        mag = (v.extinction_mag + v.grey_mag + v.grey_gradient[0] * np.asarray(xi) / r
               + v.grey_gradient[1] * np.asarray(eta) / r)
        return 10.0 ** (-0.4 * mag)

    def transmission_at_pixel(self, visit: int, detector: int, x, y) -> np.ndarray:
        """:meth:`transmission` at pixel positions of a detector."""
        v = self.visit(visit)
        xi, eta = self.camera.tangent_plane(detector, x, y, v.rotation_deg)
        return self.transmission(visit, xi, eta)

    def sky_rate(self, visit: int) -> float:
        """Sky photo-electrons per second per arcsec^2 at unit response (before QE, illumination
        and the chromatic factor rho_sky)."""
        v = self.visit(visit)
        return float(10.0 ** (-0.4 * (v.sky_mag - AB_ZERO_POINT_NJY_MAG)) * self.electrons_per_njy_s)

    def sky_factor(self, visit: int, xi, eta) -> np.ndarray:
        """The visit's sky brightness at tangent-plane (xi, eta) arcsec relative to
        :meth:`sky_rate` (1 everywhere without ``sky_gradient_fraction``)."""
        v = self.visit(visit)
        r = self.camera.field_radius_arcsec
        return 1.0 + v.sky_gradient[0] * np.asarray(xi) / r + v.sky_gradient[1] * np.asarray(eta) / r

    @property
    def halo_peak_njy(self) -> float:
        """Peak surface brightness of the halo above the atmosphere, nJy/arcsec² (0: no halo)."""
        return float(self.config.halo_fraction * 10.0 ** (-0.4 * (SKY_MAG[self.band] - AB_ZERO_POINT_NJY_MAG)))

    def halo_center(self) -> tuple[float, float]:
        """(ra, dec) of the halo centre, degrees."""
        ox, oy = self.config.halo_offset_arcsec
        ra, dec = tangent_to_sky(ox, oy, self.config.ra, self.config.dec)
        return float(ra), float(dec)

    def halo_sb(self, ra, dec) -> np.ndarray:
        """True surface brightness of the halo at (ra, dec) degrees, nJy/arcsec² above the
        atmosphere: ``peak exp(-r / h)``, r the angular distance from the centre in the
        tangent plane of the centre (arcsec), h ``halo_scale_arcsec``."""
        ra0, dec0 = self.halo_center()
        xi, eta = sky_to_tangent(ra, dec, ra0, dec0)
        return self.halo_peak_njy * np.exp(-np.hypot(xi, eta) / self.config.halo_scale_arcsec)

    def halo_flux(self, radius_arcsec: float = np.inf) -> float:
        """The halo's fluence (nJy) inside ``radius_arcsec`` of its centre (tangent plane):
        ``2 pi h² peak (1 - (1 + r/h) exp(-r/h))``; all of it by default."""
        h = self.config.halo_scale_arcsec
        q = float(radius_arcsec) / h
        inside = 1.0 if not np.isfinite(q) else 1.0 - (1.0 + q) * np.exp(-q)
        return float(2.0 * np.pi * h * h * self.halo_peak_njy * inside)

    def visits_table(self) -> Table:
        """All visits as an astropy Table (one row per visit)."""
        rows = [v.to_row() for v in self.visits]
        return Table(rows=rows, names=list(rows[0]))

    def footprint(self) -> tuple[float, float, float]:
        """(ra, dec, radius_deg) of a circle containing every visit's field."""
        cfg = self.config
        xi, eta = sky_to_tangent([v.ra for v in self.visits], [v.dec for v in self.visits], cfg.ra, cfg.dec)
        reach = float(np.max(np.hypot(xi, eta))) + self.camera.field_radius_arcsec * 1.05
        return cfg.ra, cfg.dec, reach / 3600.0

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "visits": [v.to_row() for v in self.visits]}


def make_survey(camera: Camera, n_visits: int = 10, seed: int = 1, band: str = "r", **options: Any) -> Survey:
    """Draw a survey of dithered, rotated visits.

    Parameters
    ----------
    camera : Camera
    n_visits : int
    seed : int
    band : str
    **options
        Any other :class:`SurveyConfig` field.

    Returns
    -------
    Survey

    Raises
    ------
    InputError
        For an unknown option or invalid value.
    """
    names = {f.name for f in dataclasses.fields(SurveyConfig)}
    bad = set(options) - names
    if bad:
        raise InputError(f"survey option(s) {sorted(bad)}: unknown; valid names are {sorted(names)}")
    cfg = SurveyConfig(n_visits=n_visits, seed=seed, band=band, **options)
    rng = np.random.default_rng([cfg.seed, 3])
    n = cfg.n_visits
    radius = camera.field_radius_arcsec * cfg.dither_fraction
    rr = radius * np.sqrt(rng.uniform(size=n))
    phi = rng.uniform(0, 2 * math.pi, size=n)
    rr[0] = 0.0  # the first visit is on the field centre
    ra, dec = tangent_to_sky(rr * np.cos(phi), rr * np.sin(phi), cfg.ra, cfg.dec)
    rot = rng.uniform(0, cfg.rotation_range_deg, size=n) if cfg.rotation_range_deg > 0 else np.zeros(n)
    if isinstance(cfg.exptime, tuple):
        exptime = rng.uniform(cfg.exptime[0], cfg.exptime[1], size=n)
    else:
        exptime = np.full(n, float(cfg.exptime))
    seeing = rng.uniform(*cfg.seeing_range, size=n)
    airmass = rng.uniform(*cfg.airmass_range, size=n)
    cloudy = rng.uniform(size=n) >= cfg.photometric_fraction
    grey = np.where(cloudy, np.abs(rng.normal(0, cfg.grey_sigma_mag, size=n)), 0.0)
    grad = rng.normal(0, cfg.grey_gradient_mag, size=(n, 2)) if cfg.grey_gradient_mag else np.zeros((n, 2))
    sky = SKY_MAG[cfg.band] + rng.normal(0, cfg.sky_sigma_mag, size=n)
    mjd = cfg.mjd_start + np.cumsum(rng.uniform(0.002, 0.01, size=n))
    # drawn last and only when asked for, so surveys without it keep their draws
    sky_grad = (rng.normal(0, cfg.sky_gradient_fraction, size=(n, 2)) if cfg.sky_gradient_fraction
                else np.zeros((n, 2)))
    visits = [
        Visit(visit=1000 + i, ra=float(ra[i]), dec=float(dec[i]), rotation_deg=float(rot[i]),
              mjd=float(mjd[i]), exptime=float(exptime[i]), airmass=float(airmass[i]),
              seeing_fwhm=float(seeing[i]), extinction_mag=float(EXTINCTION[cfg.band] * airmass[i]),
              grey_mag=float(grey[i]), grey_gradient=(float(grad[i, 0]), float(grad[i, 1])),
              sky_mag=float(sky[i]), sky_gradient=(float(sky_grad[i, 0]), float(sky_grad[i, 1])))
        for i in range(n)
    ]
    return Survey(camera, cfg, visits)
