"""A survey-sized catalog of star observations with known calibration, written as Parquet by sky cell.

For the streamed joint fit's tests and benchmarks (10⁵–10⁸ observations): no pixels, no WCS
objects, no GalSim; vectorised NumPy cell by cell, so memory stays bounded whatever the size.

The survey
----------
``n_visits`` pointings of a camera of ``grid[0] × grid[1]`` detectors (rows × columns) of
``detector_shape = (ny, nx)`` pixels with ``gap`` pixels between them, drawn uniformly on the
sphere inside a rectangle in (RA, sin Dec) about ``(ra0, dec0)`` whose area is
``n_visits × focal-plane area / depth``, so every point of sky is seen about ``depth`` times
whatever ``n_visits``, and each visit shares stars only with its neighbours. Rotator angles are
uniform in [0°, 360°). Stars are uniform on the sphere in the same rectangle with AB magnitudes
drawn from ``dN/dm ∝ 10^(mag_slope·m)`` on ``mag_range``, their density set for about
``obs_per_visit`` observations per visit.

Projection (the same for every visit, up to its pointing and rotation)
-----------------------------------------------------------------------
Pixel ``(x, y)`` of detector ``d`` (0-based, pixel centres on integers) is at focal-plane
position ``p = (x + ox_d, y + oy_d)`` pixels from the optical axis (the grid's centre); a radial
distortion ``q = p (1 + k |p|²)`` with ``k = distortion / r_corner²`` (the scale changes by
``distortion`` at the focal plane's corner); gnomonic standard coordinates
``(ξ, η) = s · M(θ_v) · q`` arcsec with ``s = pixel_scale`` and
``M(θ) = [[-cos θ, sin θ], [sin θ, cos θ]]`` (east to the left, as on the sky); then the sky
position by the gnomonic deprojection about the visit's pointing. This is exactly the TAN-SIP
WCS of :func:`wcs_header` (SIP order 3: ``A_3_0 = A_1_2 = B_2_1 = B_0_3 = k``,
``CRPIX = -o_d + 1``), so the in-memory fit can be given real :class:`~photocalib.SkyWcs`
objects of the same data. The pixel area (arcsec², DESIGN.md's ``|det J|`` about the pixel's
own sky position) is
``A = s² (1 + k r²)(1 + 3 k r²) / (1 + ρ²)^{3/2}`` with ``r = |p|`` and ``ρ = s|q|`` in
radians; it depends on the detector and pixel only, and is the ``pixel_area`` column.

True calibration (model family ``separated`` / ``reference-free``)
-----------------------------------------------------------------
``c(v, d, x, y) = A(x, y) · S_d(x, y) · G_v`` nJy per instrumental unit of ``instflux``, which
is the aperture sum on the flat-fielded, surface-brightness image (``kind="surface_brightness"``,
the fit's default): ``S_d`` is a triangular Chebyshev polynomial of total order
``star_flat_order`` in the pixel coordinates mapped from the detector's box
``Box(0, 0, nx, ny)`` onto [-1, 1] (the fit's ``star_flat`` block, one epoch), and ``G_v`` a
constant grey per visit (``grey_gradient=False``): ``G_v = 10^(0.4 (31.4 - zero_point + δ_v))``
with cloud extinction ``δ_v = |N(0, grey_sigma_mag)|`` on ``1 - photometric_fraction`` of the
visits and 0 on the rest. So the ``separated`` and ``reference-free`` models with
``star_flat_order >=`` this order contain the truth exactly (up to their gauge: the star flats'
mean level and, without a reference, the zero point); ``monolithic`` approximates it (its visit
polynomial absorbs the area).

Noise: the star gives ``e = F / (S_d G_v)`` electrons (fluence, gain 1); an aperture of radius
``aperture_fwhm × seeing_v`` collects ``n_pix`` pixels of sky of ``sky_mag`` mag/arcsec²;
``σ/e = sqrt((e + n_pix · sky_px) / e² + error_floor²)``; measured = true × (1 + σ/e · N(0, 1)).
``outlier_fraction`` of the observations are multiplied by ``10^(∓0.4 Δ)``, ``Δ`` uniform in
``outlier_mag`` (listed in ``truth/outliers/``). A reference catalogue (``reference.parquet``:
star, flux, flux_err in nJy) holds a random ``reference_fraction`` of the stars brighter than
``reference_mag_limit`` with relative error ``reference_error``.

Layout written by :func:`write_large_survey`
--------------------------------------------
``observations/part-NNNNNN.parquet``
    One file per sky cell of the *star* (whole stars per file), rows sorted by star: ``visit``
    int32, ``detector`` int16, ``star`` int64, ``x``, ``y``, ``instflux``, ``instflux_err``,
    ``pixel_area`` float32, ``ra``, ``dec`` float64 (the star's position).
``visits.parquet``
    ``visit``, ``ra``, ``dec`` (the pointing: the optical axis).
``reference.parquet``
    ``star``, ``flux``, ``flux_err`` (nJy).
``truth/visits.parquet``
    ``visit``, ``ra``, ``dec``, ``rotation_deg``, ``seeing``, ``grey`` (``G_v``), ``grey_mag`` (``δ_v``).
``truth/star_flat.parquet``
    ``detector``, ``x0``, ``y0``, ``width``, ``height``, ``ox``, ``oy`` (focal-plane offset) and
    ``c0 … c{n-1}``: the triangular coefficients in the fit's order (by ``j`` then ``i`` of
    ``T_i(u) T_j(v)``, :func:`triangular_terms`).
``truth/stars/part-NNNNNN.parquet``
    ``star``, ``ra``, ``dec``, ``flux`` (nJy), ``mag`` (AB), per cell.
``truth/outliers/part-NNNNNN.parquet``
    ``visit``, ``detector``, ``star``, ``delta_mag`` of the gross outliers, per cell.
``survey.json``
    The configuration and counts: :meth:`LargeSurvey.open` reads it back.

Each cell has its own random stream (``seed``, cell index), so a cell's file is the same
whichever worker writes it and in whatever order. Speed and memory are measured by
``benchmarks/bench_joint_stream.py``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import atomic_write
from ..calib import AB_ZERO_POINT_NJY_MAG
from ..errors import InputError
from ..geom import Box

__all__ = ["LargeSurvey", "LargeSurveyConfig", "LargeSurveyWcs", "triangular_terms", "wcs_header",
           "write_large_survey"]

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
_OBS_COLUMNS = ("visit", "detector", "star", "x", "y", "instflux", "instflux_err", "pixel_area", "ra", "dec")


class _CellMaker:
    """Generates one sky cell's stars and observations (a worker holds one of these)."""

    def __init__(self, cfg: LargeSurveyConfig) -> None:
        from scipy.spatial import cKDTree

        self.cfg = cfg
        self.visits = make_visits(cfg)
        self.coef = star_flat_coefficients(cfg)
        self.offsets = cfg.detector_offsets()
        self.n_ra, self.n_dec = cfg.cells()
        self.region = cfg.region()
        vec = _unit(self.visits["ra"], self.visits["dec"])
        self.tree = cKDTree(vec)
        self.vec = vec
        self.p, self.east, self.north = _basis(self.visits["ra"], self.visits["dec"])
        self.r_field = math.radians(cfg.field_radius_deg) * 1.001 + 1e-9
        self.density = cfg.star_density()

    def cell_bounds(self, cell: int) -> tuple[float, float, float, float]:
        ra1, ra2, d1, d2 = self.region
        i_ra, i_dec = cell % self.n_ra, cell // self.n_ra
        s1, s2 = math.sin(math.radians(d1)), math.sin(math.radians(d2))
        ds = (s2 - s1) / self.n_dec
        dra = (ra2 - ra1) / self.n_ra
        return ra1 + i_ra * dra, ra1 + (i_ra + 1) * dra, s1 + i_dec * ds, s1 + (i_dec + 1) * ds

    def stars(self, cell: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        cfg = self.cfg
        a1, a2, s1, s2 = self.cell_bounds(cell)
        area = math.radians(a2 - a1) * (s2 - s1) * (180.0 / math.pi) ** 2
        n = int(rng.poisson(self.density * area))
        ra = rng.uniform(a1, a2, n) % 360.0
        dec = np.degrees(np.arcsin(rng.uniform(s1, s2, n)))
        m1, m2 = cfg.mag_range
        b = cfg.mag_slope * math.log(10.0)
        # inverse CDF of dN/dm ∝ exp(b m) on [m1, m2]
        u = rng.uniform(size=n)
        mag = m1 + np.log1p(u * np.expm1(b * (m2 - m1))) / b
        star = (np.int64(cell) << np.int64(32)) + np.arange(n, dtype=np.int64)
        return {"star": star, "ra": ra, "dec": dec, "mag": mag, "flux": 10.0 ** (-0.4 * (mag - AB_NJY))}

    def candidate_visits(self, cell: int) -> np.ndarray:
        a1, a2, s1, s2 = self.cell_bounds(cell)
        d1, d2 = math.degrees(math.asin(s1)), math.degrees(math.asin(s2))
        centre = _unit(0.5 * (a1 + a2), math.degrees(math.asin(0.5 * (s1 + s2))))
        corners = _unit(np.array([a1, a2, a1, a2, 0.5 * (a1 + a2), 0.5 * (a1 + a2)]),
                        np.array([d1, d1, d2, d2, d1, d2]))
        r_cell = float(np.max(np.arccos(np.clip(corners @ centre, -1.0, 1.0))))
        ang = r_cell + self.r_field
        chord = 2.0 * math.sin(min(ang, math.pi) / 2.0)
        return np.sort(np.asarray(self.tree.query_ball_point(centre, chord), dtype=np.int64))

    def pairs(self, stars: dict, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(visit, star-index) pairs within the field radius, visit by visit."""
        if not cand.size or not stars["star"].size:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        q = _unit(stars["ra"], stars["dec"])
        cos_lim = math.cos(self.r_field)
        n_s = q.shape[0]
        step = max(1, 4_000_000 // n_s)
        vs, ss = [], []
        for i in range(0, cand.size, step):
            vc = cand[i:i + step]
            dots = self.vec[vc] @ q.T
            vi, si = np.nonzero(dots > cos_lim)
            vs.append(vc[vi])
            ss.append(si)
        return np.concatenate(vs), np.concatenate(ss)

    def make(self, cell: int) -> dict:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, 3, cell])
        st = self.stars(cell, rng)
        v, si = self.pairs(st, self.candidate_visits(cell))
        q = _unit(st["ra"][si], st["dec"][si])
        qp = np.einsum("ij,ij->i", q, self.p[v])
        xi = np.einsum("ij,ij->i", q, self.east[v]) / qp * ARCSEC_PER_RADIAN
        eta = np.einsum("ij,ij->i", q, self.north[v]) / qp * ARCSEC_PER_RADIAN
        px, py = tangent_to_focal(cfg, xi, eta, self.visits["rotation_deg"][v])
        ny, nx = cfg.detector_shape
        rows, cols = cfg.grid
        off = self.offsets
        col = np.clip(np.floor((px - off[0, 0] + 0.5 * cfg.gap) / (nx + cfg.gap)), 0, cols - 1).astype(np.int64)
        row = np.clip(np.floor((py - off[0, 1] + 0.5 * cfg.gap) / (ny + cfg.gap)), 0, rows - 1).astype(np.int64)
        det = row * cols + col
        x = px - off[det, 0]
        y = py - off[det, 1]
        on = (qp > 0) & (x >= cfg.edge) & (x <= nx - 1 - cfg.edge) & (y >= cfg.edge) & (y <= ny - 1 - cfg.edge)
        v, si, det, x, y = v[on], si[on], det[on], x[on], y[on]
        # observations in star order (stable: visits ascending within a star)
        order = np.argsort(si, kind="stable")
        v, si, det, x, y = v[order], si[order], det[order], x[order], y[order]
        n = v.size
        area = pixel_area(cfg, det, x, y)
        sf = _star_flat(cfg, self.coef, det, x, y)
        grey = self.visits["grey"][v]
        flux = st["flux"][si]
        electrons = flux / (sf * grey)  # fluence counts (gain 1)
        sky_px = 10.0 ** (-0.4 * (cfg.sky_mag - AB_NJY)) * area / (sf * grey)
        n_pix = math.pi * (cfg.aperture_fwhm * self.visits["seeing"][v]) ** 2 / area
        rel = np.sqrt((electrons + n_pix * sky_px) / electrons**2 + cfg.error_floor**2)
        true_sb = electrons / area
        meas = true_sb * (1.0 + rel * rng.standard_normal(n)) if cfg.noise else true_sb.copy()
        out = rng.uniform(size=n) < cfg.outlier_fraction
        dm = rng.uniform(*cfg.outlier_mag, size=n) * rng.choice(np.array([-1.0, 1.0]), size=n)
        meas[out] *= 10.0 ** (-0.4 * dm[out])
        obs = {
            "visit": v.astype(np.int32), "detector": det.astype(np.int16), "star": st["star"][si],
            "x": x.astype(np.float32), "y": y.astype(np.float32), "instflux": meas.astype(np.float32),
            "instflux_err": (rel * true_sb).astype(np.float32), "pixel_area": area.astype(np.float32),
            "ra": st["ra"][si], "dec": st["dec"][si],
        }
        outliers = {"visit": obs["visit"][out], "detector": obs["detector"][out], "star": obs["star"][out],
                    "delta_mag": dm[out].astype(np.float32)}
        # reference: a random fraction of the bright stars, with noise
        bright = st["mag"] < cfg.reference_mag_limit
        pick = bright & (rng.uniform(size=st["star"].size) < cfg.reference_fraction)
        rf = st["flux"][pick]
        ref = {"star": st["star"][pick], "flux": rf * (1.0 + cfg.reference_error * rng.standard_normal(rf.size)),
               "flux_err": rf * cfg.reference_error}
        stars = {"star": st["star"], "ra": st["ra"], "dec": st["dec"], "flux": st["flux"],
                 "mag": st["mag"].astype(np.float32)}
        return {"observations": obs, "outliers": outliers, "reference": ref, "stars": stars}


def _write_table(columns: dict, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns)
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp, compression="snappy")


_WORKER: dict = {}


def _init_worker(cfg_dict: dict) -> None:
    # one BLAS thread per worker process: the workers are the parallelism
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    _WORKER["maker"] = _CellMaker(LargeSurveyConfig.from_dict(cfg_dict))


def _run_cell(args: tuple[int, str]) -> dict:
    cell, root = args
    maker = _WORKER["maker"]
    res = maker.make(cell)
    root_p = Path(root)
    name = f"part-{cell:06d}.parquet"
    n_obs = int(res["observations"]["visit"].size)
    if n_obs:
        _write_table(res["observations"], root_p / "observations" / name)
    if res["stars"]["star"].size:
        _write_table(res["stars"], root_p / "truth" / "stars" / name)
    if res["outliers"]["visit"].size:
        _write_table(res["outliers"], root_p / "truth" / "outliers" / name)
    return {"cell": cell, "n_obs": n_obs, "n_stars": int(res["stars"]["star"].size),
            "n_outliers": int(res["outliers"]["visit"].size), "reference": res["reference"]}


@dataclass(frozen=True)
class LargeSurvey:
    """A large survey written by :func:`write_large_survey` (paths, counts, truth accessors).

    Attributes
    ----------
    path : pathlib.Path
    config : LargeSurveyConfig
    n_observations, n_stars, n_outliers, n_reference, n_partitions : int
    seconds : float
        Time taken to write it.
    """

    path: Path
    config: LargeSurveyConfig
    n_observations: int
    n_stars: int
    n_outliers: int
    n_reference: int
    n_partitions: int
    seconds: float

    @property
    def observations(self) -> Path:
        """The Parquet dataset of observations (one file per sky cell)."""
        return self.path / "observations"

    @property
    def visits(self) -> Path:
        return self.path / "visits.parquet"

    @property
    def reference(self) -> Path:
        return self.path / "reference.parquet"

    @property
    def truth(self) -> Path:
        return self.path / "truth"

    @property
    def bboxes(self) -> dict[int, Box]:
        """``{detector: Box(0, 0, nx, ny)}``: the boxes the true star flats are defined on."""
        ny, nx = self.config.detector_shape
        return {d: Box(0, 0, nx, ny) for d in range(self.config.n_detectors)}

    @classmethod
    def open(cls, path: str | os.PathLike) -> LargeSurvey:
        """Read back a survey from its ``survey.json``."""
        path = Path(path)
        try:
            meta = json.loads((path / "survey.json").read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{path / 'survey.json'}: cannot read a large survey's description ({exc}); "
                             "write it with write_large_survey") from exc
        return cls(path=path, config=LargeSurveyConfig.from_dict(meta["config"]),
                   **{k: meta[k] for k in ("n_observations", "n_stars", "n_outliers", "n_reference", "n_partitions",
                                           "seconds")})

    def partitions(self) -> list[Path]:
        """The observation files, in cell order."""
        return sorted(self.observations.glob("part-*.parquet"))

    def truth_visits(self):
        """pandas DataFrame: visit, ra, dec, rotation_deg, seeing, grey, grey_mag."""
        import pandas as pd

        return pd.read_parquet(self.truth / "visits.parquet")

    def star_flat_coefficients(self) -> np.ndarray:
        """``(n_detectors, n_terms)`` true star-flat coefficients in the fit's triangular order."""
        return star_flat_coefficients(self.config)

    def star_flat(self, detector, x, y) -> np.ndarray:
        """The true star flat ``S_d(x, y)`` (broadcast over arrays)."""
        x, y, detector = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float), np.asarray(detector))
        return _star_flat(self.config, self.star_flat_coefficients(), detector.ravel(), x.ravel(),
                          y.ravel()).reshape(x.shape)

    def star_flat_field(self, detector: int):
        """The true star flat of ``detector`` as a :class:`~photocalib.ChebyshevField`."""
        from ..fields import ChebyshevField

        o = self.config.star_flat_order
        ii, jj = triangular_terms(o)
        c = np.zeros((o + 1, o + 1))
        c[jj, ii] = self.star_flat_coefficients()[detector]
        return ChebyshevField(c, self.bboxes[detector])

    def pixel_area(self, detector, x, y) -> np.ndarray:
        """The exact pixel area (arcsec²) of the projection, any visit."""
        return pixel_area(self.config, detector, x, y)

    def calibration(self, visit, detector, x, y) -> np.ndarray:
        """True ``c = A · S_d · G_v``, nJy per unit of ``instflux`` (surface-brightness kind)."""
        grey = make_visits(self.config)["grey"][np.asarray(visit)]
        return self.pixel_area(detector, x, y) * self.star_flat(detector, x, y) * grey

    def read_observations(self, columns: list[str] | None = None):
        """All observations as one pandas DataFrame (small surveys only)."""
        import pyarrow.dataset as ds

        return ds.dataset(str(self.observations), format="parquet").to_table(columns=columns).to_pandas()

    def read_stars(self):
        """All true stars (star, ra, dec, flux, mag) as one pandas DataFrame."""
        import pyarrow.dataset as ds

        return ds.dataset(str(self.truth / "stars"), format="parquet").to_table().to_pandas()

    def read_outliers(self):
        """The gross outliers (visit, detector, star, delta_mag) as one pandas DataFrame."""
        import pandas as pd
        import pyarrow.dataset as ds

        if not (self.truth / "outliers").exists():
            return pd.DataFrame({"visit": [], "detector": [], "star": [], "delta_mag": []})
        return ds.dataset(str(self.truth / "outliers"), format="parquet").to_table().to_pandas()

    def wcs_by_detector(self, exact: bool = False) -> dict:
        """``{(visit, detector): WCS}`` of every visit and detector, for the in-memory fit.

        Parameters
        ----------
        exact : bool
            True: :class:`~photocalib.SkyWcs` objects from the TAN-SIP headers of
            :func:`wcs_header` (about 25 ms each: small surveys only). False (default):
            :class:`LargeSurveyWcs` objects evaluating the same projection directly (free to build;
            they have the methods the joint fit uses).
        """
        cfg = self.config
        vis = make_visits(cfg)
        out = {}
        if exact:
            from ..astrometry import SkyWcs
        for v in range(cfg.n_visits):
            for d in range(cfg.n_detectors):
                if exact:
                    out[(v, d)] = SkyWcs.from_header(wcs_header(cfg, d, vis["ra"][v], vis["dec"][v],
                                                                vis["rotation_deg"][v]))
                else:
                    out[(v, d)] = LargeSurveyWcs(cfg, d, vis["ra"][v], vis["dec"][v], vis["rotation_deg"][v])
        return out


def wcs_header(cfg: LargeSurveyConfig, detector: int, ra: float, dec: float, rotation_deg: float):
    """The TAN-SIP header of ``detector`` in a visit pointed at ``(ra, dec)`` with this rotation.

    Exactly the generator's projection (module docstring): the SIP forward polynomial is the
    radial distortion; no inverse terms (astropy inverts numerically).
    """
    from astropy.io import fits

    ny, nx = cfg.detector_shape
    ox, oy = cfg.detector_offsets()[detector]
    c, s = _rotation(rotation_deg)
    cd = (cfg.pixel_scale / 3600.0) * np.array([[-c, s], [s, c]])
    h = fits.Header()
    h["NAXIS"] = 2
    h["NAXIS1"], h["NAXIS2"] = int(nx), int(ny)
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    h["CRVAL1"], h["CRVAL2"] = float(ra) % 360.0, float(dec)
    h["CRPIX1"], h["CRPIX2"] = float(-ox) + 1.0, float(-oy) + 1.0
    h["CD1_1"], h["CD1_2"] = float(cd[0, 0]), float(cd[0, 1])
    h["CD2_1"], h["CD2_2"] = float(cd[1, 0]), float(cd[1, 1])
    h["A_ORDER"], h["B_ORDER"] = 3, 3
    k = cfg.k
    h["A_3_0"], h["A_1_2"] = k, k
    h["B_2_1"], h["B_0_3"] = k, k
    return h


class LargeSurveyWcs:
    """The projection of one detector in one visit, evaluated directly (no FITS header).

    Has what the joint fit uses of a WCS (``pixel_to_sky``, ``sky_to_pixel``, ``pixel_area``,
    ``pixel_area_field``, ``to_header``); :meth:`to_header` gives the equivalent TAN-SIP header.
    """

    __slots__ = ("_cfg", "_detector", "_ra", "_dec", "_rot")

    def __init__(self, cfg: LargeSurveyConfig, detector: int, ra: float, dec: float, rotation_deg: float) -> None:
        self._cfg, self._detector = cfg, int(detector)
        self._ra, self._dec, self._rot = float(ra), float(dec), float(rotation_deg)

    def pixel_to_sky(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) degrees of 0-based pixel positions."""
        from ..astrometry import tangent_to_sky

        ox, oy = self._cfg.detector_offsets()[self._detector]
        xi, eta = focal_to_tangent(self._cfg, np.asarray(x, float) + ox, np.asarray(y, float) + oy, self._rot)
        return tangent_to_sky(xi, eta, self._ra, self._dec)

    def sky_to_pixel(self, ra, dec) -> tuple[np.ndarray, np.ndarray]:
        """0-based pixel positions of (ra, dec) degrees."""
        from ..astrometry import sky_to_tangent

        ox, oy = self._cfg.detector_offsets()[self._detector]
        px, py = tangent_to_focal(self._cfg, *sky_to_tangent(ra, dec, self._ra, self._dec), self._rot)
        return px - ox, py - oy

    def pixel_area(self, x, y) -> np.ndarray:
        """Pixel area, arcsec²."""
        x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
        return pixel_area(self._cfg, np.full(x.shape, self._detector), x, y)

    def pixel_area_field(self, box: Box):
        from ..fields.pixel_area import PixelAreaField

        return PixelAreaField(self, box)

    def to_header(self):
        return wcs_header(self._cfg, self._detector, self._ra, self._dec, self._rot)


def write_large_survey(path: str | os.PathLike, *, n_visits: int, obs_per_visit: float = 1000.0, seed: int = 1,
                       outlier_fraction: float = 0.01, workers: int = 1, overwrite: bool = False,
                       progress: bool = False, **config) -> LargeSurvey:
    """Write a large survey's observations, visits, reference and truth under ``path``.

    Parameters
    ----------
    path : path-like
        Output folder (created).
    n_visits, obs_per_visit, seed, outlier_fraction
        See :class:`LargeSurveyConfig`; other keyword arguments go to it too.
    workers : int
        Processes generating cells in parallel (1: in this process).
    overwrite : bool
        Replace an existing survey at ``path`` (otherwise InputError).
    progress : bool
        Print a line every few percent.

    Returns
    -------
    LargeSurvey

    Raises
    ------
    InputError
        A bad configuration, or ``path`` already holds a survey and ``overwrite`` is False.

    Examples
    --------
    >>> import tempfile
    >>> from photocalib.sim.large_survey import write_large_survey
    >>> s = write_large_survey(tempfile.mkdtemp() + "/s", n_visits=20, obs_per_visit=50, seed=3,
    ...                        detector_shape=(512, 256), grid=(1, 2))
    >>> s.n_partitions >= 1 and s.n_observations > 500
    True
    """
    cfg = LargeSurveyConfig(n_visits=n_visits, obs_per_visit=obs_per_visit, seed=seed,
                            outlier_fraction=outlier_fraction, **config)
    root = Path(path)
    if (root / "survey.json").exists() or (root / "observations").exists():
        if not overwrite:
            raise InputError(f"{root}: already holds a survey; pass overwrite=True or choose another folder")
        import shutil

        for sub in ("observations", "truth"):
            shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n_ra, n_dec = cfg.cells()
    n_cells = n_ra * n_dec
    vis = make_visits(cfg)
    _write_table({k: vis[k] for k in ("visit", "ra", "dec")}, root / "visits.parquet")
    _write_table(vis, root / "truth" / "visits.parquet")
    ny, nx = cfg.detector_shape
    coef = star_flat_coefficients(cfg)
    off = cfg.detector_offsets()
    sf = {"detector": np.arange(cfg.n_detectors, dtype=np.int16),
          "x0": np.zeros(cfg.n_detectors, np.int32), "y0": np.zeros(cfg.n_detectors, np.int32),
          "width": np.full(cfg.n_detectors, nx, np.int32), "height": np.full(cfg.n_detectors, ny, np.int32),
          "ox": off[:, 0], "oy": off[:, 1]}
    sf.update({f"c{i}": coef[:, i] for i in range(coef.shape[1])})
    _write_table(sf, root / "truth" / "star_flat.parquet")
    totals = {"n_observations": 0, "n_stars": 0, "n_outliers": 0, "n_reference": 0, "n_partitions": 0}
    refs: dict[str, list] = {"star": [], "flux": [], "flux_err": []}
    for done, res in enumerate(_cells(cfg, root, n_cells, workers), start=1):
        totals["n_observations"] += res["n_obs"]
        totals["n_stars"] += res["n_stars"]
        totals["n_outliers"] += res["n_outliers"]
        totals["n_partitions"] += res["n_obs"] > 0
        totals["n_reference"] += res["reference"]["star"].size
        for k in refs:
            refs[k].append(res["reference"][k])
        if progress and (done % max(1, n_cells // 20) == 0 or done == n_cells):
            print(f"# {done}/{n_cells} cells, {totals['n_observations']:,} observations, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    # the reference is 10 % of the bright stars: small beside the observations
    _write_table({k: np.concatenate(v) if v else np.zeros(0) for k, v in refs.items()}, root / "reference.parquet")
    seconds = time.perf_counter() - t0
    meta = {"config": cfg.to_dict(), **totals, "seconds": seconds, "cells": [n_ra, n_dec]}
    with atomic_write(root / "survey.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return LargeSurvey(path=root, config=cfg, seconds=seconds, **totals)


def _cells(cfg: LargeSurveyConfig, root: Path, n_cells: int, workers: int) -> Iterator[dict]:
    """Results of every cell, in cell order."""
    tasks = [(c, str(root)) for c in range(n_cells)]
    if workers <= 1:
        _init_worker(cfg.to_dict())
        try:
            yield from map(_run_cell, tasks)
        finally:
            _WORKER.clear()
        return
    import multiprocessing as mp

    # spawn: no fork of a process that may hold BLAS or Numba threads
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(cfg.to_dict(),)) as pool:
        yield from pool.imap(_run_cell, tasks, chunksize=1)


def main(argv: list[str] | None = None) -> None:
    """``python -m photocalib.sim.large_survey PATH --visits N [--obs-per-visit M] [--workers W]``."""
    import argparse

    parser = argparse.ArgumentParser(description="Write a large synthetic survey (observations by sky cell) as Parquet.")
    parser.add_argument("path")
    parser.add_argument("--visits", type=float, required=True)
    parser.add_argument("--obs-per-visit", type=float, default=1000.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--outlier-fraction", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    s = write_large_survey(args.path, n_visits=int(args.visits), obs_per_visit=args.obs_per_visit, seed=args.seed,
                           outlier_fraction=args.outlier_fraction, workers=args.workers, overwrite=args.overwrite,
                           progress=True)
    print(f"{s.n_observations:,} observations of {s.n_stars:,} stars in {s.n_partitions} files, "
          f"{s.n_reference:,} reference stars, {s.n_outliers:,} outliers; {s.seconds:.1f} s -> {s.path}")


if __name__ == "__main__":
    main()
