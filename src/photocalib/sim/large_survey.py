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
----------------------------------------------------------------------
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
------------------------------------------------------------------
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

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import atomic_write
from ..errors import InputError
from ..geom import Box
from ._large_survey_geometry import (
    AB_NJY,
    ARCSEC_PER_RADIAN,
    LargeSurveyConfig,
    _basis,
    _rotation,
    _star_flat,
    _unit,
    focal_to_tangent,
    make_visits,
    pixel_area,
    star_flat_coefficients,
    tangent_to_focal,
    triangular_terms,
)

__all__ = ["LargeSurvey", "LargeSurveyConfig", "LargeSurveyWcs", "triangular_terms", "wcs_header",
           "write_large_survey"]

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
