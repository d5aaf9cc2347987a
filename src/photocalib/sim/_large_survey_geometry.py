"""Geometry, truth model and visits of :mod:`photocalib.sim.large_survey` (the camera, the
projection with its radial distortion, pixel areas, the star flat and the pointings)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..calib import AB_ZERO_POINT_NJY_MAG
from ..errors import InputError

ARCSEC_PER_RADIAN = 180.0 * 3600.0 / math.pi
#: AB magnitude of 1 nJy.
AB_NJY = AB_ZERO_POINT_NJY_MAG


def triangular_terms(order: int) -> tuple[np.ndarray, np.ndarray]:
    """``(i, j)`` of the terms ``T_i(u) T_j(v)``, ``i + j <= order``, ordered by ``j`` then ``i``.

    The order of the joint fit's Chebyshev blocks (so truth coefficients compare one to one).

    Examples
    --------
    >>> triangular_terms(1)
    (array([0, 1, 0]), array([0, 0, 1]))
    """
    pairs = [(i, j) for j in range(order + 1) for i in range(order + 1 - j)]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


@dataclass(frozen=True)
class LargeSurveyConfig:
    """Everything that defines a large survey (see the module docstring for the model).

    Attributes
    ----------
    n_visits : int
    obs_per_visit : float
        Target mean number of observations per visit (sets the star density).
    seed : int
    outlier_fraction : float
    outlier_mag : (float, float)
        Range of the gross errors' size, magnitudes (random sign).
    detector_shape : (int, int)
        ``(ny, nx)`` pixels.
    grid : (int, int)
        Detector rows × columns on the focal plane.
    gap : int
        Pixels between neighbouring detectors.
    pixel_scale : float
        Arcsec per pixel on the optical axis.
    distortion : float
        Relative radial scale change at the focal plane's corner (the pixel area changes by
        about four times this).
    depth : float
        Visits per point of sky.
    ra0, dec0 : float
        Centre of the surveyed rectangle, degrees.
    mag_range : (float, float)
    mag_slope : float
        ``d log10 N / dm`` of the star counts.
    star_flat_order : int
    star_flat_sigma : float
        Standard deviation of the star flat's non-constant coefficients (and of its constant
        about 1).
    grey_sigma_mag, photometric_fraction : float
    zero_point : float
        AB magnitude giving one electron (the calibration's scale).
    sky_mag : float
        Sky brightness, AB mag/arcsec².
    seeing_range : (float, float)
        FWHM range, arcsec, per visit.
    aperture_fwhm : float
        Aperture radius in units of the seeing FWHM.
    error_floor : float
        Relative error added in quadrature (and realised in the noise).
    edge : float
        Stars closer than this to a detector edge (pixels) are not measured.
    reference_fraction, reference_mag_limit, reference_error : float
    obs_per_partition : float
        Target observations per Parquet file (sets the sky cell size).
    noise : bool
        False: noiseless instfluxes (the outliers are still applied).
    """

    n_visits: int
    obs_per_visit: float = 1000.0
    seed: int = 1
    outlier_fraction: float = 0.01
    outlier_mag: tuple[float, float] = (0.2, 1.5)
    detector_shape: tuple[int, int] = (4096, 2048)
    grid: tuple[int, int] = (2, 4)
    gap: int = 100
    pixel_scale: float = 0.2
    distortion: float = 0.02
    depth: float = 8.0
    ra0: float = 60.0
    dec0: float = -30.0
    mag_range: tuple[float, float] = (17.0, 22.0)
    mag_slope: float = 0.3
    star_flat_order: int = 2
    star_flat_sigma: float = 0.01
    grey_sigma_mag: float = 0.05
    photometric_fraction: float = 0.5
    zero_point: float = 28.5
    sky_mag: float = 21.2
    seeing_range: tuple[float, float] = (0.6, 1.0)
    aperture_fwhm: float = 1.0
    error_floor: float = 0.003
    edge: float = 5.0
    reference_fraction: float = 0.1
    reference_mag_limit: float = 21.0
    reference_error: float = 0.01
    obs_per_partition: float = 250_000.0
    noise: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.n_visits >= 1, f"n_visits={self.n_visits}: need at least one visit"),
            (self.obs_per_visit > 0, f"obs_per_visit={self.obs_per_visit}: must be positive"),
            (0.0 <= self.outlier_fraction < 1.0, f"outlier_fraction={self.outlier_fraction}: must be in [0, 1)"),
            (self.depth > 0, f"depth={self.depth}: must be positive"),
            (self.mag_range[0] < self.mag_range[1], f"mag_range={self.mag_range}: need (bright, faint)"),
            (self.star_flat_order >= 0, f"star_flat_order={self.star_flat_order}: must be >= 0"),
            (0.0 <= self.distortion < 0.2, f"distortion={self.distortion}: use [0, 0.2)"),
            (0.0 <= self.reference_fraction <= 1.0, f"reference_fraction={self.reference_fraction}: must be in [0, 1]"),
            (self.obs_per_partition >= 1000, f"obs_per_partition={self.obs_per_partition}: use at least 1000"),
            (min(self.detector_shape) > 2 * self.edge and min(self.grid) >= 1,
             f"detector_shape={self.detector_shape}, grid={self.grid}, edge={self.edge}: no measurable pixels"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InputError(f"LargeSurveyConfig: {msg}")

    # --- geometry -------------------------------------------------------------------------
    @property
    def n_detectors(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def focal_plane_size(self) -> tuple[float, float]:
        """Width and height of the detector grid, pixels (centre to centre of the outer pixels + 1)."""
        ny, nx = self.detector_shape
        rows, cols = self.grid
        return cols * nx + (cols - 1) * self.gap, rows * ny + (rows - 1) * self.gap

    def detector_offsets(self) -> np.ndarray:
        """``(n_detectors, 2)`` focal-plane position of each detector's pixel (0, 0), pixels.

        Detector ``d = row · columns + column``; the grid is centred on the optical axis.
        """
        ny, nx = self.detector_shape
        rows, cols = self.grid
        w, h = self.focal_plane_size
        r, c = np.divmod(np.arange(self.n_detectors), cols)
        return np.stack([c * (nx + self.gap) - (w - 1) / 2.0, r * (ny + self.gap) - (h - 1) / 2.0], axis=1)

    @property
    def k(self) -> float:
        """Radial distortion coefficient, pixel⁻²."""
        w, h = self.focal_plane_size
        return self.distortion / ((w / 2.0) ** 2 + (h / 2.0) ** 2)

    @property
    def field_radius_deg(self) -> float:
        """Angular radius of the focal plane's corner from the axis (distorted), degrees."""
        w, h = self.focal_plane_size
        r = math.hypot(w / 2.0, h / 2.0)
        return math.degrees(math.atan(r * (1.0 + self.k * r * r) * self.pixel_scale / ARCSEC_PER_RADIAN))

    @property
    def focal_plane_area_deg2(self) -> float:
        """Sky area the detectors cover (distortion ignored), deg²."""
        ny, nx = self.detector_shape
        return self.n_detectors * nx * ny * (self.pixel_scale / 3600.0) ** 2

    def region(self) -> tuple[float, float, float, float]:
        """``(ra_min, ra_max, dec_min, dec_max)`` degrees of the surveyed rectangle (equal area
        in RA and sin Dec, about square in degrees near ``dec0``)."""
        area = self.n_visits * self.focal_plane_area_deg2 / self.depth
        h = min(math.sqrt(area), 150.0)
        d1 = max(self.dec0 - h / 2.0, -85.0)
        d2 = min(d1 + h, 85.0)
        band = (math.sin(math.radians(d2)) - math.sin(math.radians(d1))) * (180.0 / math.pi)
        dra = area / band
        if dra > 360.0:
            raise InputError(f"n_visits={self.n_visits} at depth {self.depth} needs {area:.0f} deg²: more than the "
                             "sky band available; raise depth")
        return self.ra0 - dra / 2.0, self.ra0 + dra / 2.0, d1, d2

    def star_density(self) -> float:
        """Stars per deg² for ``obs_per_visit`` (the measurable area is slightly less than the
        detectors': the edge margin)."""
        ny, nx = self.detector_shape
        frac = (nx - 2 * self.edge) * (ny - 2 * self.edge) / (nx * ny)
        return self.obs_per_visit / (self.focal_plane_area_deg2 * frac)

    def cells(self) -> tuple[int, int]:
        """Number of sky cells in RA and in sin Dec."""
        ra1, ra2, d1, d2 = self.region()
        n_cells = max(1, round(self.n_visits * self.obs_per_visit / self.obs_per_partition))
        height = d2 - d1
        width = (ra2 - ra1) * math.cos(math.radians(0.5 * (d1 + d2)))
        n_dec = max(1, round(math.sqrt(n_cells * height / max(width, 1e-9))))
        n_ra = max(1, round(n_cells / n_dec))
        return n_ra, n_dec

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> LargeSurveyConfig:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(fields)
        if unknown:
            raise InputError(f"survey.json: unknown configuration keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# --- projection, vectorised ---------------------------------------------------------------
def _unit(ra_deg, dec_deg) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def _basis(ra_deg, dec_deg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vector, east and north of each tangent point."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    p = _unit(ra_deg, dec_deg)
    east = np.stack([-np.sin(ra), np.cos(ra), np.zeros_like(ra)], axis=-1)
    north = np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)], axis=-1)
    return p, east, north


def _rotation(theta_deg) -> tuple[np.ndarray, np.ndarray]:
    t = np.radians(theta_deg)
    return np.cos(t), np.sin(t)


def focal_to_tangent(cfg: LargeSurveyConfig, px, py, rotation_deg) -> tuple[np.ndarray, np.ndarray]:
    """Focal-plane pixels (from the axis) to standard coordinates (arcsec) of a visit's rotation."""
    r2 = px * px + py * py
    f = 1.0 + cfg.k * r2
    qx, qy = px * f, py * f
    c, s = _rotation(rotation_deg)
    return cfg.pixel_scale * (-c * qx + s * qy), cfg.pixel_scale * (s * qx + c * qy)


def tangent_to_focal(cfg: LargeSurveyConfig, xi, eta, rotation_deg) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`focal_to_tangent` (Newton on the radial distortion, to rounding)."""
    c, s = _rotation(rotation_deg)
    qx = (-c * xi + s * eta) / cfg.pixel_scale  # M(θ) is its own inverse
    qy = (s * xi + c * eta) / cfg.pixel_scale
    rq = np.hypot(qx, qy)
    r = rq.copy()
    k = cfg.k
    for _ in range(6):
        r -= (r + k * r**3 - rq) / (1.0 + 3.0 * k * r * r)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(rq > 0, r / rq, 1.0)
    return qx * ratio, qy * ratio


def pixel_area(cfg: LargeSurveyConfig, detector, x, y) -> np.ndarray:
    """Exact pixel area (arcsec²) at pixel ``(x, y)`` of ``detector`` (the same in every visit)."""
    off = cfg.detector_offsets()
    d = np.asarray(detector)
    px = np.asarray(x, dtype=np.float64) + off[d, 0]
    py = np.asarray(y, dtype=np.float64) + off[d, 1]
    r2 = px * px + py * py
    kr2 = cfg.k * r2
    rho2 = r2 * ((1.0 + kr2) * cfg.pixel_scale / ARCSEC_PER_RADIAN) ** 2
    return cfg.pixel_scale**2 * (1.0 + kr2) * (1.0 + 3.0 * kr2) / (1.0 + rho2) ** 1.5


def star_flat_coefficients(cfg: LargeSurveyConfig) -> np.ndarray:
    """``(n_detectors, n_terms)`` true star-flat coefficients (triangular order, the fit's)."""
    rng = np.random.default_rng([cfg.seed, 2])
    n_t = (cfg.star_flat_order + 1) * (cfg.star_flat_order + 2) // 2
    a = rng.normal(0.0, cfg.star_flat_sigma, size=(cfg.n_detectors, n_t))
    a[:, 0] += 1.0
    return a


def _cheb_poly(coef: np.ndarray, u, v, order: int) -> np.ndarray:
    from numpy.polynomial import chebyshev as C

    ii, jj = triangular_terms(order)
    tu = C.chebvander(np.asarray(u, dtype=np.float64), order)
    tv = C.chebvander(np.asarray(v, dtype=np.float64), order)
    return np.einsum("nk,nk->n", tu[:, ii] * tv[:, jj], coef)


def _star_flat(cfg: LargeSurveyConfig, coef: np.ndarray, detector, x, y) -> np.ndarray:
    """``S_d(x, y)`` with the box ``Box(0, 0, nx, ny)`` mapped onto [-1, 1] (edges, as the fit)."""
    ny, nx = cfg.detector_shape
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    u = (x + 0.5) * (2.0 / nx) - 1.0
    v = (y + 0.5) * (2.0 / ny) - 1.0
    d = np.broadcast_to(np.asarray(detector), x.shape)
    return _cheb_poly(coef[d], u, v, cfg.star_flat_order)


def make_visits(cfg: LargeSurveyConfig) -> dict[str, np.ndarray]:
    """The visits' pointings, rotations, seeing and grey (deterministic for the seed)."""
    rng = np.random.default_rng([cfg.seed, 1])
    n = cfg.n_visits
    ra1, ra2, d1, d2 = cfg.region()
    ra = rng.uniform(ra1, ra2, n) % 360.0
    dec = np.degrees(np.arcsin(rng.uniform(math.sin(math.radians(d1)), math.sin(math.radians(d2)), n)))
    rot = rng.uniform(0.0, 360.0, n)
    seeing = rng.uniform(*cfg.seeing_range, n)
    cloudy = rng.uniform(size=n) >= cfg.photometric_fraction
    grey_mag = np.where(cloudy, np.abs(rng.normal(0.0, cfg.grey_sigma_mag, n)), 0.0)
    grey = 10.0 ** (0.4 * (AB_NJY - cfg.zero_point + grey_mag))
    return {"visit": np.arange(n, dtype=np.int32), "ra": ra, "dec": dec, "rotation_deg": rot, "seeing": seeing,
            "grey": grey, "grey_mag": grey_mag}


# --- one sky cell -------------------------------------------------------------------------
