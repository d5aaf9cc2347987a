"""The simulated camera: focal-plane layout, optical distortion, detectors and their response.

Gives the exact truth (pixel area on the sky, QE, illumination, star flat, chromatic response)
at any pixel position, and each detector's WCS as a real FITS TAN-SIP header.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits
from scipy import optimize

from ..errors import InputError
from . import spectra

__all__ = ["CameraConfig", "Detector", "Camera", "PRESETS", "PRESET_AMPLIFIERS"]

_ARCSEC_PER_RAD = 180.0 * 3600.0 / math.pi


@dataclass(frozen=True)
class CameraConfig:
    """Everything that defines a simulated camera; :meth:`Camera.preset` fills it from a preset.

    Lengths on the focal plane are in mm; the pixel scale is the one at the optical axis.
    ``detector_shape`` is an array shape ``(ny, nx)``.

    Attributes
    ----------
    name : str
        Preset name (``"hsc-like"``, ``"megacam-like"``, ``"decam-like"``) or a label.
    detector_shape : tuple of int
        ``(ny, nx)`` pixels per detector.
    n_detectors : int
        Number of detectors, placed nearest the optical axis on a regular grid.
    pixel_pitch_mm, pixel_scale_arcsec : float
        Physical pixel size and on-axis pixel scale (plate scale = scale / pitch).
    layout : {"circle", "square"}
        Detectors nearest the axis in Euclidean (circular field) or max-norm (square field).
    gap_fraction : float
        Gap between detectors as a fraction of the detector width.
    area_change_edge : float
        Relative change of the pixel area on the sky at the field edge (``t = 1``):
        the farthest detector corner for a circular layout, the half-width for a square one.
    area_change_corner : float or None
        For square layouts: relative change at the corner (``t = sqrt(2)``).
    vignetting_edge : float
        Sky illumination is ``1 - vignetting_edge * t**4``.
    dome_gradient, dome_radial : float
        Star flat (sky / dome illumination) is ``1 + dome_gradient * u / R + dome_radial * (t**2 - 1/2)``.
    qe_mean, qe_detector_sigma, qe_smooth_amplitude, qe_pixel_sigma : float
        Achromatic QE: per-detector level, smooth 2nd-order Chebyshev pattern, pixel-to-pixel noise.
    gain_mean, gain_sigma, read_noise_mean, read_noise_sigma, bias_mean, bias_sigma : float
        Per-detector gain (e-/ADU), read noise (e-) and bias (ADU).
    full_well_e : float
        Saturation in electrons (the ``SATURATE`` keyword is min(bias + full_well/gain, 65535) ADU).
    tree_rings : bool
        Whether pixels have small-scale size variations (tree rings) that change the area and the
        flat but not the WCS.
    tree_ring_amplitude, tree_ring_period_px : float
        Relative amplitude and period (pixels) of the tree rings.
    filter_shift_nm_edge : float
        Blue shift of the filter curve at ``t = 1``: T(lambda; t) = T0(lambda + shift * t**2).
    qe_chromatic_sigma : float
        Per-detector QE slope: q_d(lambda) = 1 + c_d (lambda - lambda_c) / 100 nm, c_d ~ N(0, sigma).
    collecting_area_cm2 : float
        Effective collecting area of the telescope.
    seed : int
        Seed of every per-detector random draw.
    n_amplifiers : int
        Amplifiers per detector. With more than one, raws are written as the real camera's are:
        each amplifier's data section followed by ``overscan_px`` overscan columns, with its own
        gain, read noise, bias (drifting along the rows) and saturation in the DECam keywords
        ``DATASEC<L>``, ``BIASSEC<L>``, ``CCDSEC<L>``, ``GAIN<L>``, ``RDNOISE<L>``,
        ``SATURAT<L>`` (``L`` = A, B, ...; :data:`PRESET_AMPLIFIERS` gives the real counts).
    overscan_px : int
        Overscan columns per amplifier.
    """

    name: str
    detector_shape: tuple[int, int]
    n_detectors: int
    pixel_pitch_mm: float
    pixel_scale_arcsec: float
    layout: str = "circle"
    gap_fraction: float = 0.05
    area_change_edge: float = -0.12
    area_change_corner: float | None = None
    vignetting_edge: float = 0.15
    dome_gradient: float = 0.02
    dome_radial: float = 0.015
    qe_mean: float = 0.9
    qe_detector_sigma: float = 0.02
    qe_smooth_amplitude: float = 0.01
    qe_pixel_sigma: float = 0.005
    gain_mean: float = 3.0
    gain_sigma: float = 0.1
    read_noise_mean: float = 4.5
    read_noise_sigma: float = 0.3
    bias_mean: float = 1000.0
    bias_sigma: float = 30.0
    full_well_e: float = 150000.0
    tree_rings: bool = False
    tree_ring_amplitude: float = 2e-3
    tree_ring_period_px: float = 40.0
    filter_shift_nm_edge: float = 0.0
    qe_chromatic_sigma: float = 0.0
    collecting_area_cm2: float = 5.3e5
    seed: int = 1
    n_amplifiers: int = 1
    overscan_px: int = 16

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dictionary (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["detector_shape"] = list(self.detector_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CameraConfig:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["detector_shape"] = tuple(int(v) for v in d["detector_shape"])
        return cls(**d)


#: Amplifiers per detector of the real cameras (``Camera.preset(..., amplifiers=True)``).
PRESET_AMPLIFIERS = {"hsc-like": 4, "megacam-like": 2, "decam-like": 2}

#: Presets: published distortion (pixel-area change at the field edge) and typical detectors.
PRESETS: dict[str, dict[str, Any]] = {
    "hsc-like": dict(detector_shape=(4176, 2048), n_detectors=104, pixel_pitch_mm=0.015,
                     pixel_scale_arcsec=0.168, layout="circle", area_change_edge=-0.12,
                     vignetting_edge=0.2, gain_mean=3.0, read_noise_mean=4.5,
                     collecting_area_cm2=4.9e5),
    "megacam-like": dict(detector_shape=(4612, 2048), n_detectors=36, pixel_pitch_mm=0.0135,
                         pixel_scale_arcsec=0.187, layout="square", area_change_edge=-0.03,
                         area_change_corner=-0.05, vignetting_edge=0.05, gain_mean=1.6,
                         read_noise_mean=5.0, filter_shift_nm_edge=3.0, qe_chromatic_sigma=0.03,
                         collecting_area_cm2=8.0e4),
    "decam-like": dict(detector_shape=(4096, 2048), n_detectors=62, pixel_pitch_mm=0.015,
                       pixel_scale_arcsec=0.263, layout="circle", area_change_edge=-0.01,
                       vignetting_edge=0.05, gain_mean=4.0, read_noise_mean=7.0,
                       collecting_area_cm2=9.5e4),
}


@dataclass(frozen=True)
class Detector:
    """One detector: where it sits and its electronic and QE parameters (all truth).

    Attributes
    ----------
    id : int
        Detector number (0-based), the ``DETECTOR`` keyword.
    center_mm : tuple of float
        Focal-plane position (u, v) of the detector centre, mm.
    shape : tuple of int
        ``(ny, nx)``.
    gain : float
        e-/ADU.
    read_noise : float
        Electrons.
    bias : float
        ADU.
    saturation : float
        ADU (raw value at which pixels saturate).
    qe_scale : float
        Detector-mean QE relative to the nominal bandpass.
    qe_coeffs : tuple
        3x3 Chebyshev coefficients of the smooth relative QE pattern (c[j][i] for T_j(y) T_i(x)).
    qe_slope : float
        Chromatic QE slope c_d (per 100 nm).
    tree_ring_center : tuple of float
        (x, y) pixel position of the wafer centre around which tree rings circle.
    """

    id: int
    center_mm: tuple[float, float]
    shape: tuple[int, int]
    gain: float
    read_noise: float
    bias: float
    saturation: float
    qe_scale: float
    qe_coeffs: tuple[tuple[float, ...], ...]
    qe_slope: float
    tree_ring_center: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["center_mm"] = list(self.center_mm)
        d["shape"] = list(self.shape)
        d["qe_coeffs"] = [list(r) for r in self.qe_coeffs]
        d["tree_ring_center"] = list(self.tree_ring_center)
        return d


def _layout(n: int, width: float, height: float, square: bool) -> np.ndarray:
    """Centres of ``n`` detectors on a grid of pitch (width, height), nearest the axis."""
    k = int(math.ceil(math.sqrt(n))) + 3
    i, j = np.meshgrid(np.arange(-k, k + 1), np.arange(-k, k + 1))
    # An even count per row/column puts the optical axis in a gap, as on real cameras.
    u = (i.ravel() + 0.5) * width
    v = (j.ravel() + 0.5) * height
    if square:
        dist = np.maximum(np.abs(u) + width / 2, np.abs(v) + height / 2)
    else:
        dist = np.hypot(np.abs(u) + width / 2, np.abs(v) + height / 2)
    # Ties broken by angle then radius so the choice is deterministic.
    order = np.lexsort((np.hypot(u, v), np.arctan2(v, u), np.round(dist, 9)))
    chosen = order[:n]
    centres = np.stack([u[chosen], v[chosen]], axis=1)
    return centres[np.lexsort((centres[:, 0], centres[:, 1]))]


class Camera:
    """A simulated wide-field camera with exact truth.

    The optical model maps focal-plane position (u, v) in mm (optical axis at the origin) to
    gnomonic tangent-plane coordinates about the pointing, in arcsec, by a radial polynomial

    .. math:: (\\xi', \\eta') = s\\,g(t)\\,(u, v),\\quad g(t) = 1 + a t^2 + b t^4,\\quad t = r / R,

    with s the on-axis plate scale (arcsec/mm), r = ``|(u, v)|``, R the field-edge radius, and a, b
    solved so that the pixel area on the sky changes by the preset's published amount at the
    edge (and corner). The visit then rotates and flips this to (east, north) and deprojects with
    TAN about the pointing. Pixel (x, y) of a detector (0-based, centre of pixel on integers) is
    at u = u_c + (x - (nx-1)/2) p, v = v_c + (y - (ny-1)/2) p, p the pixel pitch.

    The true pixel area (solid angle, arcsec^2, as docs/design.md defines it) is

    .. math:: A = (s p)^2\\, g\\,(g + t g')\\,(1 + \\rho^2)^{-3/2}\\,\\mathrm{TR}(x, y),

    where rho is the tangent-plane radius in radians (gnomonic area factor) and TR the tree-ring
    factor (1 unless tree rings are on). The WCS header reproduces everything but TR.

    Parameters
    ----------
    config : CameraConfig
    """

    def __init__(self, config: CameraConfig) -> None:
        ny, nx = config.detector_shape
        if nx < 16 or ny < 16:
            raise InputError(f"detector_shape {config.detector_shape}: need at least 16x16 pixels")
        if config.n_detectors < 1:
            raise InputError(f"n_detectors={config.n_detectors}: need at least one detector")
        if config.layout not in ("circle", "square"):
            raise InputError(f"layout {config.layout!r}: use 'circle' or 'square'")
        self._config = config
        p = config.pixel_pitch_mm
        width, height = nx * p, ny * p
        gap = config.gap_fraction * width
        centres = _layout(config.n_detectors, width + gap, height + gap, config.layout == "square")
        corner_u = np.abs(centres[:, 0]) + width / 2
        corner_v = np.abs(centres[:, 1]) + height / 2
        if config.layout == "square":
            self._r_edge = float(max(corner_u.max(), corner_v.max()))
        else:
            self._r_edge = float(np.hypot(corner_u, corner_v).max())
        self._plate_scale = config.pixel_scale_arcsec / p
        self._a, self._b = self._solve_distortion()
        rng = np.random.default_rng([config.seed, 7])
        dets = []
        for i, (uc, vc) in enumerate(centres):
            gain = float(config.gain_mean + config.gain_sigma * rng.standard_normal())
            bias = float(config.bias_mean + config.bias_sigma * rng.standard_normal())
            coeffs = config.qe_smooth_amplitude * rng.standard_normal((3, 3))
            coeffs[0, 0] = 0.0
            dets.append(Detector(
                id=i,
                center_mm=(float(uc), float(vc)),
                shape=(ny, nx),
                gain=gain,
                read_noise=float(max(config.read_noise_mean + config.read_noise_sigma * rng.standard_normal(), 1.0)),
                bias=bias,
                saturation=float(min(bias + config.full_well_e / gain, 65535.0)),
                qe_scale=float(np.clip(config.qe_mean + config.qe_detector_sigma * rng.standard_normal(), 0.5, 1.0)),
                qe_coeffs=tuple(tuple(float(c) for c in row) for row in coeffs),
                qe_slope=float(config.qe_chromatic_sigma * rng.standard_normal()),
                tree_ring_center=(float(rng.uniform(-1.5, -0.5) * nx), float(rng.uniform(-1.5, 2.5) * ny)),
            ))
        self._detectors = tuple(dets)
        self._rho_cache: dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._inverse_cache: dict[tuple[int, int], list] = {}

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def preset(
        cls,
        name: str,
        detector_shape: tuple[int, int] | None = None,
        n_detectors: int | None = None,
        tree_rings: bool = False,
        pixel_scale_arcsec: float | None = None,
        seed: int = 1,
        amplifiers: bool = False,
        **overrides: Any,
    ) -> Camera:
        """A camera from a preset, optionally with fewer or smaller detectors.

        The distortion is always scaled to the field the chosen detectors cover, so a
        "miniature" camera (few small detectors) still has the preset's published pixel-area
        change between its axis and its edge.

        Parameters
        ----------
        name : {"hsc-like", "megacam-like", "decam-like"}
        detector_shape : (ny, nx), optional
            Pixels per detector (default: the real camera's).
        n_detectors : int, optional
            Number of detectors (default: the real camera's).
        tree_rings : bool
            Add tree rings to the pixel sizes.
        pixel_scale_arcsec : float, optional
            On-axis pixel scale (default: the real camera's).
        seed : int
            Seed of the per-detector draws (gain, QE, ...).
        amplifiers : bool
            Write raws read through the real camera's amplifiers (:data:`PRESET_AMPLIFIERS`:
            DECam 2, HSC 4), each with its own overscan, gain, read noise and saturation.
        **overrides
            Any other :class:`CameraConfig` field.

        Raises
        ------
        InputError
            For an unknown preset or field.
        """
        if name not in PRESETS:
            raise InputError(f"camera preset {name!r}: unknown; use one of {', '.join(PRESETS)}")
        kw = dict(PRESETS[name])
        if detector_shape is not None:
            kw["detector_shape"] = (int(detector_shape[0]), int(detector_shape[1]))
        if n_detectors is not None:
            kw["n_detectors"] = int(n_detectors)
        if pixel_scale_arcsec is not None:
            kw["pixel_scale_arcsec"] = float(pixel_scale_arcsec)
        names = {f.name for f in dataclasses.fields(CameraConfig)}
        bad = set(overrides) - names
        if bad:
            raise InputError(f"camera option(s) {sorted(bad)}: unknown; valid names are {sorted(names)}")
        if amplifiers:
            kw["n_amplifiers"] = PRESET_AMPLIFIERS[name]
        kw.update(overrides)
        return cls(CameraConfig(name=name, tree_rings=tree_rings, seed=seed, **kw))

    def _area_ratio_t(self, t: np.ndarray | float, a: float, b: float) -> np.ndarray:
        """A(t) / A(0) without tree rings, for the radial model (vectorised in t)."""
        t = np.asarray(t, dtype=np.float64)
        g = 1 + a * t**2 + b * t**4
        dg = 1 + 3 * a * t**2 + 5 * b * t**4
        rho = self._plate_scale * self._r_edge * t * g / _ARCSEC_PER_RAD
        return g * dg * (1 + rho**2) ** -1.5

    def _solve_distortion(self) -> tuple[float, float]:
        c = self._config
        if c.layout == "square" and c.area_change_corner is not None:
            target = np.array([1 + c.area_change_edge, 1 + c.area_change_corner])
            ts = np.array([1.0, math.sqrt(2.0)])

            def eqs(p):
                return self._area_ratio_t(ts, p[0], p[1]) - target

            sol = optimize.fsolve(eqs, [c.area_change_edge / 4, 0.0], xtol=1e-12)
            return float(sol[0]), float(sol[1])
        a = optimize.brentq(lambda a: float(self._area_ratio_t(1.0, a, 0.0)) - (1 + c.area_change_edge),
                            -0.2, 0.2, xtol=1e-15)
        return float(a), 0.0

    # -- description --------------------------------------------------------------------------
    @property
    def config(self) -> CameraConfig:
        """The configuration the camera was built from."""
        return self._config

    @property
    def detectors(self) -> tuple[Detector, ...]:
        """The detectors, indexed by their id."""
        return self._detectors

    @property
    def n_detectors(self) -> int:
        return len(self._detectors)

    @property
    def field_radius_mm(self) -> float:
        """R: focal-plane radius where ``t = 1`` (field edge), mm."""
        return self._r_edge

    @property
    def field_radius_arcsec(self) -> float:
        """Field-edge radius on the sky, arcsec."""
        return float(self._plate_scale * self._r_edge * (1 + self._a + self._b))

    @property
    def plate_scale(self) -> float:
        """On-axis plate scale s, arcsec/mm."""
        return self._plate_scale

    @property
    def distortion(self) -> tuple[float, float]:
        """(a, b) of g(t) = 1 + a t^2 + b t^4."""
        return self._a, self._b

    def detector(self, detector: int) -> Detector:
        """The :class:`Detector` with that id (InputError if there is none)."""
        if not 0 <= int(detector) < len(self._detectors):
            raise InputError(f"detector {detector}: no such detector (camera has {len(self._detectors)})")
        return self._detectors[int(detector)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description: config, derived distortion and every detector's parameters."""
        return {
            "config": self._config.to_dict(),
            "field_radius_mm": self._r_edge,
            "plate_scale_arcsec_per_mm": self._plate_scale,
            "distortion_a": self._a,
            "distortion_b": self._b,
            "detectors": [d.to_dict() for d in self._detectors],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Camera:
        """Rebuild a camera from :meth:`to_dict` output (everything is re-derived from the config)."""
        return cls(CameraConfig.from_dict(d["config"]))

    def __repr__(self) -> str:
        c = self._config
        return (f"Camera({c.name!r}, {len(self._detectors)} detectors of {c.detector_shape[1]}x"
                f"{c.detector_shape[0]} px, {c.pixel_scale_arcsec}\"/px, area change at edge "
                f"{c.area_change_edge:+.3f})")

    # -- geometry -----------------------------------------------------------------------------
    def focal_plane(self, detector: int, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Focal-plane position (u, v), mm, of pixel positions (x, y) on ``detector``."""
        d = self.detector(detector)
        ny, nx = d.shape
        p = self._config.pixel_pitch_mm
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        return d.center_mm[0] + (x - (nx - 1) / 2) * p, d.center_mm[1] + (y - (ny - 1) / 2) * p

    def field_t(self, detector: int, x, y) -> np.ndarray:
        """Normalised field radius t = r / R at pixel positions."""
        u, v = self.focal_plane(detector, x, y)
        return np.hypot(u, v) / self._r_edge

    def optical_axis_pixel(self, detector: int) -> tuple[float, float]:
        """0-based pixel position (x, y) of the optical axis in ``detector``'s pixel frame."""
        d = self.detector(detector)
        ny, nx = d.shape
        p = self._config.pixel_pitch_mm
        return (nx - 1) / 2 - d.center_mm[0] / p, (ny - 1) / 2 - d.center_mm[1] / p

    def camera_tangent_plane(self, detector: int, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Distorted focal-plane coordinates (xi', eta') in arcsec, before the visit's rotation."""
        u, v = self.focal_plane(detector, x, y)
        t2 = (u * u + v * v) / self._r_edge**2
        g = self._plate_scale * (1 + self._a * t2 + self._b * t2 * t2)
        return g * u, g * v

    @staticmethod
    def _rotation_matrix(rotation_deg: float) -> np.ndarray:
        # Focal-plane +v points at position angle `rotation_deg` (east of north); +u points
        # 90 deg clockwise from it, so x increases to the west as on a standard sky image.
        th = math.radians(rotation_deg)
        return np.array([[-math.cos(th), math.sin(th)], [math.sin(th), math.cos(th)]])

    def tangent_plane(self, detector: int, x, y, rotation_deg: float) -> tuple[np.ndarray, np.ndarray]:
        """Gnomonic (xi east, eta north), arcsec, about the pointing, of pixel positions."""
        up, vp = self.camera_tangent_plane(detector, x, y)
        m = self._rotation_matrix(rotation_deg)
        return m[0, 0] * up + m[0, 1] * vp, m[1, 0] * up + m[1, 1] * vp

    def pixel_to_sky(self, detector: int, x, y, pointing_ra: float, pointing_dec: float,
                     rotation_deg: float) -> tuple[np.ndarray, np.ndarray]:
        """True sky position (ra, dec) in degrees of pixel positions (the model, not the header)."""
        xi, eta = self.tangent_plane(detector, x, y, rotation_deg)
        return tangent_to_sky(xi, eta, pointing_ra, pointing_dec)

    def sky_to_pixel(self, detector: int, ra, dec, pointing_ra: float, pointing_dec: float,
                     rotation_deg: float) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`pixel_to_sky` (Newton iterations on the radial polynomial)."""
        xi, eta = sky_to_tangent(ra, dec, pointing_ra, pointing_dec)
        m = self._rotation_matrix(rotation_deg)
        minv = np.linalg.inv(m)
        up = minv[0, 0] * xi + minv[0, 1] * eta
        vp = minv[1, 0] * xi + minv[1, 1] * eta
        w = np.hypot(up, vp) / self._plate_scale / self._r_edge  # = t g(t)
        t = w.copy()
        for _ in range(30):
            f = t * (1 + self._a * t**2 + self._b * t**4) - w
            t = t - f / (1 + 3 * self._a * t**2 + 5 * self._b * t**4)
        g = 1 + self._a * t**2 + self._b * t**4
        u = up / (self._plate_scale * g)
        v = vp / (self._plate_scale * g)
        d = self.detector(detector)
        ny, nx = d.shape
        p = self._config.pixel_pitch_mm
        return (u - d.center_mm[0]) / p + (nx - 1) / 2, (v - d.center_mm[1]) / p + (ny - 1) / 2

    # -- truth maps ---------------------------------------------------------------------------
    def pixel_area(self, detector: int, x, y, tree_rings: bool = True) -> np.ndarray:
        """True pixel area on the sky (solid angle), arcsec^2, at pixel positions.

        ``tree_rings=False`` gives the smooth area the WCS describes.
        """
        u, v = self.focal_plane(detector, x, y)
        t2 = (u * u + v * v) / self._r_edge**2
        a, b = self._a, self._b
        g = 1 + a * t2 + b * t2 * t2
        dg = 1 + 3 * a * t2 + 5 * b * t2 * t2
        s = self._plate_scale
        rho2 = (s * g) ** 2 * (u * u + v * v) / _ARCSEC_PER_RAD**2
        area = (s * self._config.pixel_pitch_mm) ** 2 * g * dg * (1 + rho2) ** -1.5
        if tree_rings and self._config.tree_rings:
            area = area * self.tree_ring(detector, x, y)
        return area

    def tree_ring(self, detector: int, x, y) -> np.ndarray:
        """Tree-ring factor TR = true area / smooth (WCS) area at pixel positions (1 if off)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if not self._config.tree_rings:
            return np.ones(np.broadcast(x, y).shape)
        d = self.detector(detector)
        r = np.hypot(x - d.tree_ring_center[0], y - d.tree_ring_center[1])
        c = self._config
        # Rings fade with distance from the wafer centre, as on real sensors.
        fade = np.exp(-r / (3.0 * max(d.shape)))
        return 1.0 + c.tree_ring_amplitude * fade * np.sin(2 * math.pi * r / c.tree_ring_period_px)

    def qe_smooth(self, detector: int, x, y) -> np.ndarray:
        """Smooth achromatic QE (detector level x Chebyshev pattern), without pixel noise."""
        d = self.detector(detector)
        ny, nx = d.shape
        xn = 2 * np.asarray(x, dtype=np.float64) / max(nx - 1, 1) - 1
        yn = 2 * np.asarray(y, dtype=np.float64) / max(ny - 1, 1) - 1
        return d.qe_scale * (1 + np.polynomial.chebyshev.chebval2d(yn, xn, np.array(d.qe_coeffs)))

    def qe_pixel_noise(self, detector: int) -> np.ndarray:
        """Pixel-to-pixel QE factor map ``1 + sigma N(0,1)``, float64 [ny, nx], deterministic."""
        d = self.detector(detector)
        rng = np.random.default_rng([self._config.seed, 11, d.id])
        return 1.0 + self._config.qe_pixel_sigma * rng.standard_normal(d.shape)

    def qe(self, detector: int, x=None, y=None) -> np.ndarray:
        """Achromatic QE (smooth x pixel noise). With no x, y: the full map [ny, nx]; otherwise at
        the nearest pixels of (x, y)."""
        d = self.detector(detector)
        noise = self.qe_pixel_noise(detector)
        if x is None:
            yy, xx = np.mgrid[0:d.shape[0], 0:d.shape[1]]
            return self.qe_smooth(detector, xx, yy) * noise
        ix = np.clip(np.rint(np.asarray(x)).astype(int), 0, d.shape[1] - 1)
        iy = np.clip(np.rint(np.asarray(y)).astype(int), 0, d.shape[0] - 1)
        return self.qe_smooth(detector, x, y) * noise[iy, ix]

    def illumination_sky(self, detector: int, x, y) -> np.ndarray:
        """Relative illumination of the focal plane by the sky (and stars): vignetting."""
        t = self.field_t(detector, x, y)
        return 1.0 - self._config.vignetting_edge * t**4

    def illumination_ratio(self, detector: int, x, y) -> np.ndarray:
        """Sky / dome illumination: the achromatic star flat."""
        u, _ = self.focal_plane(detector, x, y)
        t = self.field_t(detector, x, y)
        c = self._config
        return 1.0 + c.dome_gradient * u / self._r_edge + c.dome_radial * (t**2 - 0.5)

    def illumination_dome(self, detector: int, x, y) -> np.ndarray:
        """Relative illumination of the focal plane by the dome screen."""
        return self.illumination_sky(detector, x, y) / self.illumination_ratio(detector, x, y)

    @property
    def is_chromatic(self) -> bool:
        """Whether the response depends on the SED (filter shift or chromatic QE)."""
        c = self._config
        return c.filter_shift_nm_edge != 0.0 or c.qe_chromatic_sigma != 0.0

    def response_curve(self, detector: int, t: float, band: str) -> np.ndarray:
        """System response R(lambda) / qe at normalised radius t on :data:`spectra.WAVELENGTH_NM`:
        T0(lambda + shift t^2) q_d(lambda)."""
        d = self.detector(detector)
        w = spectra.WAVELENGTH_NM
        t0 = spectra.throughput(band)
        shifted = np.interp(w + self._config.filter_shift_nm_edge * t**2, w, t0)
        centre = float(np.sum(w * t0) / np.sum(t0))
        return shifted * (1 + d.qe_slope * (w - centre) / 100.0)

    def _rho_table(self, detector: int, sed: str, band: str) -> tuple[np.ndarray, np.ndarray]:
        key = (sed, band, int(detector))
        if key not in self._rho_cache:
            d = self.detector(detector)
            ny, nx = d.shape
            tmax = float(self.field_t(detector, [0, nx - 1, 0, nx - 1], [0, 0, ny - 1, ny - 1]).max()) + 0.01
            tmin = max(float(self.field_t(detector, *self.optical_axis_pixel(detector))), 0.0)
            tgrid = np.linspace(0.0, max(tmax, tmin + 0.02), 257)
            w = spectra.WAVELENGTH_NM
            t0 = spectra.throughput(band)
            photons = spectra.sed_photons(sed)
            shifted = np.interp(w[None, :] + self._config.filter_shift_nm_edge * tgrid[:, None] ** 2, w, t0)
            centre = float(np.sum(w * t0) / np.sum(t0))
            q = 1 + d.qe_slope * (w - centre) / 100.0
            rho = (shifted * q * photons).sum(axis=1) / (t0 * photons).sum()
            self._rho_cache[key] = (tgrid, rho)
        return self._rho_cache[key]

    def rho(self, detector: int, x, y, sed: str, band: str) -> np.ndarray:
        """Chromatic response factor of an SED at pixel positions.

        rho_S = integral N_S(lambda) T0(lambda + shift t^2) q_d(lambda) dlambda /
        integral N_S T0 dlambda, N_S the photon spectrum. Exactly 1 for achromatic cameras.

        Parameters
        ----------
        sed : str
            A stellar template name, ``"sky"``, ``"lamp"`` or ``"fiducial"``.
        band : str
            One of :data:`spectra.BANDS`.
        """
        t = self.field_t(detector, x, y)
        if not self.is_chromatic:
            return np.ones_like(t)
        tgrid, rho = self._rho_table(detector, sed, band)
        return np.interp(t, tgrid, rho)

    def star_flat(self, detector: int, x, y, band: str = "r", sed: str = "fiducial") -> np.ndarray:
        """True star flat: (I_sky / I_dome) x (rho_sed / rho_lamp).

        The factor by which a dome-flat-fielded image misstates the flux of a source of this SED
        (beyond the pixel area; see the package docstring)."""
        ratio = self.illumination_ratio(detector, x, y)
        if not self.is_chromatic:
            return ratio
        return ratio * self.rho(detector, x, y, sed, band) / self.rho(detector, x, y, "lamp", band)

    # -- WCS ------------------------------------------------------------------------------------
    def detector_wcs(self, detector: int, pointing_ra: float, pointing_dec: float,
                     rotation_deg: float, inverse_order: int = 7) -> fits.Header:
        """A FITS TAN-SIP header for ``detector`` on a visit pointed at (ra, dec) with a rotation.

        The tangent point (CRVAL) is the pointing and CRPIX the optical axis, so the forward SIP
        polynomial (order 5) represents the radial model exactly; the inverse (AP, BP) is a
        least-squares fit of all terms up to ``inverse_order`` over the detector (< 1e-5 pixel).

        Returns
        -------
        astropy.io.fits.Header
            Celestial WCS keywords (0-based pixel x corresponds to FITS pixel x + 1).
        """
        d = self.detector(detector)
        ny, nx = d.shape
        p = self._config.pixel_pitch_mm
        xa, ya = self.optical_axis_pixel(detector)
        sp = self._plate_scale * p
        m = self._rotation_matrix(rotation_deg) * sp / 3600.0
        q = p / self._r_edge
        a1 = self._a * q**2
        b1 = self._b * q**4
        # dx * (g - 1) with t^2 = q^2 (dx^2 + dy^2): the exact SIP forward coefficients.
        fwd = {(3, 0): a1, (1, 2): a1, (5, 0): b1, (3, 2): 2 * b1, (1, 4): b1}
        h = fits.Header()
        h["WCSAXES"] = 2
        h["CTYPE1"] = "RA---TAN-SIP"
        h["CTYPE2"] = "DEC--TAN-SIP"
        h["CUNIT1"] = "deg"
        h["CUNIT2"] = "deg"
        h["CRVAL1"] = float(pointing_ra % 360.0)
        h["CRVAL2"] = float(pointing_dec)
        h["CRPIX1"] = float(xa + 1.0)
        h["CRPIX2"] = float(ya + 1.0)
        h["CD1_1"] = float(m[0, 0])
        h["CD1_2"] = float(m[0, 1])
        h["CD2_1"] = float(m[1, 0])
        h["CD2_2"] = float(m[1, 1])
        h["RADESYS"] = "ICRS"
        h["A_ORDER"] = 5
        h["B_ORDER"] = 5
        for (i, j), c in fwd.items():
            if c != 0.0:
                h[f"A_{i}_{j}"] = float(c)
                h[f"B_{j}_{i}"] = float(c)
        h["AP_ORDER"] = inverse_order
        h["BP_ORDER"] = inverse_order
        for (i, j), ca, cb in self._inverse_sip(detector, inverse_order):
            h[f"AP_{i}_{j}"] = ca
            h[f"BP_{i}_{j}"] = cb
        return h

    def _inverse_sip(self, detector: int, order: int) -> list[tuple[tuple[int, int], float, float]]:
        """Inverse SIP coefficients; they do not depend on the pointing, so they are cached."""
        key = (int(detector), int(order))
        if key in self._inverse_cache:
            return self._inverse_cache[key]
        d = self.detector(detector)
        ny, nx = d.shape
        xa, ya = self.optical_axis_pixel(detector)
        q = self._config.pixel_pitch_mm / self._r_edge
        # Fit dx - U as a full polynomial in (U, V) on a grid covering the detector (and a pixel
        # beyond): locally that converges much faster than the odd series about the axis.
        gx, gy = np.meshgrid(np.linspace(-1, nx, 30), np.linspace(-1, ny, 30))
        dx = gx.ravel() - xa
        dy = gy.ravel() - ya
        t2 = q**2 * (dx**2 + dy**2)
        g = 1 + self._a * t2 + self._b * t2**2
        uu, vv = dx * g, dy * g
        scale = float(np.hypot(uu, vv).max())
        terms = [(i, n - i) for n in range(order + 1) for i in range(n + 1)]
        un, vn = uu / scale, vv / scale
        design = np.stack([un**i * vn**j for i, j in terms], axis=1)
        coef, *_ = np.linalg.lstsq(design, np.stack([(dx - uu) / scale, (dy - vv) / scale], axis=1), rcond=None)
        # Undo the normalisation: coefficients of U^i V^j in pixel units.
        out = [((i, j), float(coef[k, 0] * scale ** (1 - i - j)), float(coef[k, 1] * scale ** (1 - i - j)))
               for k, (i, j) in enumerate(terms)]
        self._inverse_cache[key] = out
        return out


def sky_to_tangent(ra, dec, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection about (ra0, dec0): (xi east, eta north) in arcsec; degrees in."""
    ra = np.radians(np.asarray(ra, dtype=np.float64))
    dec = np.radians(np.asarray(dec, dtype=np.float64))
    a0, d0 = math.radians(ra0), math.radians(dec0)
    cosc = math.sin(d0) * np.sin(dec) + math.cos(d0) * np.cos(dec) * np.cos(ra - a0)
    xi = np.cos(dec) * np.sin(ra - a0) / cosc
    eta = (math.cos(d0) * np.sin(dec) - math.sin(d0) * np.cos(dec) * np.cos(ra - a0)) / cosc
    return xi * _ARCSEC_PER_RAD, eta * _ARCSEC_PER_RAD


def tangent_to_sky(xi, eta, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse gnomonic projection: (xi, eta) arcsec about (ra0, dec0) to (ra, dec) degrees."""
    x = np.asarray(xi, dtype=np.float64) / _ARCSEC_PER_RAD
    y = np.asarray(eta, dtype=np.float64) / _ARCSEC_PER_RAD
    a0, d0 = math.radians(ra0), math.radians(dec0)
    denom = math.cos(d0) - y * math.sin(d0)
    ra = a0 + np.arctan2(x, denom)
    dec = np.arctan2(math.sin(d0) + y * math.cos(d0), np.hypot(x, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)

