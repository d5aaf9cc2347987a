"""Multi-epoch joint photometric calibration of many overlapping exposures (issue 5).

Three model families (monolithic, separated, reference-free) differing in how they treat the
Jacobian, solved by Gauss–Newton in magnitudes with the star magnitudes eliminated per star.

Model
-----
An observation ``o`` of star ``s`` in visit ``v`` on detector ``d`` at pixel ``(x, y)`` has
instrumental flux ``f_o``. Its calibration ``c_o`` (nJy per instrumental unit) maps it to the
star's fluence, ``F_s = c_o f_o``; in magnitudes (``m = -2.5 log10``),
``M_s = m_o - 2.5 log10 c_o``. The calibration is a product of factors, each a triangular
Chebyshev polynomial *in flux* (so the stored fields are exactly the fitted ones):

* ``separated`` (meas_mosaic-like): ``c = A(x, y) · S_{e,d}(x, y) · G_v(ξ, η)``, with ``A`` the
  pixel area from the visit's WCS (only for ``kind=SURFACE_BRIGHTNESS``; fluxes measured on a
  fluence image need no Jacobian), ``S`` a star flat per detector shared by the visits of an
  epoch ``e`` (order ``star_flat_order``), ``G`` a grey term per visit: a constant, or with
  ``grey_gradient=True`` a plane in the visit's tangent-plane coordinates. Reference fluxes
  enter the χ² as extra measurements of their stars.
* ``reference-free`` (FGCM-like): the same factors, plus an optional chromatic factor
  ``1 + colour_s · K_d(x, y)`` (``chromatic_order``; needs a ``colour`` column). No reference
  is needed: the absolute level is fixed by a constraint (below) or, when ``reference`` is
  given, by the weighted mean offset to those standards after the fit (the standards fix one
  number, they do not pull the relative calibration).
* ``monolithic`` (jointcal-like): ``c = P_d(x, y) · V_v(ξ, η)``, a per-detector polynomial
  (order ``detector_order``, 0 by default as in jointcal's constrained model) times a
  per-visit polynomial in tangent-plane coordinates (order ``visit_order``, 7 by default).
  The Jacobian is not given: it is absorbed into the fit.

``(ξ, η)`` are gnomonic coordinates about each visit's mean pointing (the normalised mean of
its detectors' centres, from the WCSs), divided by the visit's radius (largest ``|ξ|``,
``|η|`` over its detector boxes) so they lie in [-1, 1].

Degeneracies, removed by exact linear constraints on the coefficients
-------------------------------------------------------------------
* star flat vs grey (separated, reference-free): ``S → kS``, ``G → G/k`` for one epoch leaves
  every prediction unchanged. Constraint: the mean over the epoch's detectors of each star
  flat's mean over its box is 1, so star flats are relative and grey carries the level.
* common grey gradient vs star flats (``grey_gradient=True``): a gradient fixed in the *camera*
  frame, shared by every visit of an epoch, is (to first order) a linear term of each
  detector's star flat. Constraint: the visits' gradients, rotated into the camera frame (the
  rotation of each visit is measured from its detectors' axes in the WCSs), sum to zero.
* overall zero point (reference-free without standards): star magnitudes ``+δ`` and every
  calibration ``× 10^(0.4δ)``. Constraint: the mean over visits of the grey constant is 1.
  (Separated and monolithic fix it through the reference catalogue.)
* monolithic: ``P → kP``, ``V → V/k``. Constraint: the mean over detectors of ``P_d``'s mean
  is 1.
* chromatic: a constant ``K`` is absorbed by the star magnitudes (colours are per star).
  Constraint: the mean over detectors of ``K_d``'s mean is 0. ``photo_calib`` is for colour 0.

Anything still singular (a parameter no used observation touches) raises ``InputError`` naming
its visit or detector; a tiny ridge (1e-12 of the diagonal) only guards rounding.

Solver
------
Gauss–Newton in magnitudes. Per iteration the residuals and derivative rows are computed per
visit chunk (a map that can run on Dask workers) together with the visit-local normal matrix
``Σ w D Dᵀ``; the partial sums are added (the reduce), and the star magnitudes are eliminated
exactly by their Schur complement, ``N − Σ_s u_s u_sᵀ / W_s``, which is block-diagonal per star
and costs ``Σ_s (entries of u_s)²``. The reduced dense system (a few thousand parameters) is
solved by Cholesky with the constraints through a bordered (KKT) solve. Steps that raise χ² or
make a factor non-positive are halved. Once steps are below 0.02 mag the factorised Hessian is
kept (frozen-Hessian Newton: only the gradient is recomputed, at O(observations) cost) and it
is re-assembled at convergence to confirm it and to give the covariance. Convergence: no star
magnitude or model value moves by more than ``tol``, or χ² stops decreasing.

Map-reduce: the map is :func:`linearize_chunk` on whole visits (residuals, derivative rows,
``Σ w D Dᵀ``, ``Σ w D r``); the reduce adds the matrices and gathers the rows in star order;
the star elimination then runs where the reduce does. With ``client=`` the chunks are
scattered to the Dask workers once and each iteration maps over them; the answer equals the
in-process one to rounding.

Errors: parameter covariance from the constrained inverse of the reduced Hessian; star
magnitude variances ``1/W_s + u_sᵀ C u_s / W_s²`` (the measurement and calibration parts).

Outliers, inside the solve: from the robust start the fit first converges roughly by least
squares, then minimises the Cauchy cost ``Σ c² ln(1 + z² / c²)`` (``z`` the normalised residual,
``c = robust_scale``, 3 by default) by iteratively reweighted least squares: each map computes
the weights ``w / (1 + z² / c²)`` from its own residuals, so a gross outlier loses its weight
within the Gauss–Newton iterations instead of in rounds of rejecting and re-solving. At the
robust solution, observations whose leverage-corrected ``|z|`` exceeds ``n_sigma`` are set aside
and the fit is finished by plain least squares on the rest (so χ², the errors and the residual
table mean what they always did); the set is re-classified at that solution until it is stable
(usually once). ``robust_scale=None`` restores the older rounds: reject the worst observation per
star beyond ``max(n_sigma, 0.25 · max|z|)`` and re-converge, restoring any back within
``n_sigma``.

Thin data: where a detector or visit has stars on part of its area only, its polynomial is
unconstrained on the rest. Two weak Gaussian priors (:mod:`._priors`) keep every calibration finite
and positive over the whole detector: the star flats' non-constant coefficients are pulled to 0
(σ ``star_flat_prior``, so they go flat, i.e. to lower order, where nothing constrains them), and
each monolithic visit polynomial's shape, seen in one focal-plane frame shared by all visits, is
pulled to the visits' mean shape (σ ``visit_prior``), so it follows the camera where the visit has
no stars. Where the data constrain a coefficient they outweigh the prior by 10⁴ or more. The
solution's ``coverage`` table says, per (visit, detector), which fraction of the area its own
observations constrain.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..errors import InputError, PhotocalibError
from ..fields import BoundedField, ChebyshevField, ConstantField, ProductField
from ..geom import Box
from ..image.kind import ImageKind
from . import _kernels as K
from . import _priors
from ._joint_model import (
    Block,
    cheb_basis,
    cheb_means,
    coefficients_to_matrix,
    evaluate_blocks,
)

__all__ = ["JointCalibrator", "JointSolution", "fit_joint", "MODELS"]

#: The model families.
MODELS = ("separated", "monolithic", "reference-free")

_OBS_COLUMNS = ("visit", "detector", "star", "x", "y", "instflux", "instflux_err")
_MAG_ERR = 2.5 / math.log(10.0)


# ----------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------
def _column(table, name: str, what: str) -> np.ndarray:
    try:
        if hasattr(table, "to_numpy") and hasattr(table, "columns"):  # pandas
            if name not in table.columns:
                raise KeyError(name)
            return table[name].to_numpy()
        if name not in table.colnames:
            raise KeyError(name)
        col = table[name]
        if getattr(col, "mask", None) is not None and np.any(col.mask):
            if np.issubdtype(col.dtype, np.floating):
                return np.ma.filled(col, np.nan)
            raise InputError(f"{what} column {name!r} has masked (missing) values; fill or drop them")
        return np.asarray(col)
    except KeyError as exc:
        raise InputError(f"{what} has no column {name!r}; it needs {', '.join(_OBS_COLUMNS) if what == 'observations' else 'star, flux, flux_err'}") from exc


def _has_column(table, name: str) -> bool:
    if hasattr(table, "columns") and hasattr(table, "to_numpy"):
        return name in table.columns
    return name in getattr(table, "colnames", ())


def _key(v) -> Any:
    return v.item() if hasattr(v, "item") else v


def _duplicate_groups(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose key tuple occurs more than once, sorted by key, and their group starts.

    Returns ``(order, starts)``: ``order`` lists the rows of every repeated key (sorted by key,
    each group contiguous) and ``starts`` the index in ``order`` where each group begins.
    """
    keys = tuple(np.asarray(k) for k in keys)
    order = np.lexsort(keys[::-1])
    same = np.ones(len(order) - 1, dtype=bool) if len(order) > 1 else np.zeros(0, dtype=bool)
    for k in keys:
        ks = k[order]
        same &= ks[1:] == ks[:-1]
    # a row is in a repeated group if it equals its predecessor or its successor
    in_dup = np.zeros(len(order), dtype=bool)
    in_dup[1:] |= same
    in_dup[:-1] |= same
    first = in_dup.copy()
    first[1:] &= ~same
    rows = order[in_dup]
    starts = np.nonzero(first[in_dup])[0]
    return rows, starts


def _unit_vector(ra, dec):
    ra = np.deg2rad(ra)
    dec = np.deg2rad(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _camera_rotation(orient: np.ndarray) -> np.ndarray:
    """Each visit's camera rotation on the sky (radians, up to one constant) from detector axes.

    ``orient[v, d]`` is the unit complex direction of detector d's x axis in visit v (0 where
    not observed); the angle is ψ_v + β_d (β_d the detector's fixed orientation on the focal
    plane), so alternate least-squares on the circle separates ψ from β.
    """
    present = orient != 0
    psi = np.zeros(orient.shape[0])
    beta = np.zeros(orient.shape[1])
    for _ in range(20):
        beta = np.angle(np.sum(np.where(present, orient * np.exp(-1j * psi)[:, None], 0), axis=0))
        psi = np.angle(np.sum(np.where(present, orient * np.exp(-1j * beta)[None, :], 0), axis=1))
    return psi


def _subset_wcs(wcs: dict, visits, detectors) -> dict:
    vs = {_key(v) for v in visits}
    ds = {_key(d) for d in detectors}
    return {k: w for k, w in wcs.items() if k[0] in vs and k[1] in ds}


@dataclass
class _Problem:
    """Observations in star order and everything the solver needs (internal)."""

    model: str
    kind: ImageKind
    blocks: list
    n_p: int
    ptr: np.ndarray  # CSR over stars
    star: np.ndarray  # int32 star index per observation
    visit: np.ndarray
    detector: np.ndarray
    epdet: np.ndarray
    pu: np.ndarray
    pv: np.ndarray
    tu: np.ndarray
    tv: np.ndarray
    m: np.ndarray  # instrumental magnitude minus 2.5 log10 A where the Jacobian is known
    sigma2: np.ndarray  # magnitude variance incl. floor
    colour: np.ndarray | None
    starts: np.ndarray
    nbs: np.ndarray
    x: np.ndarray
    y: np.ndarray
    input_row: np.ndarray
    visit_ids: np.ndarray
    detector_ids: np.ndarray
    star_ids: np.ndarray
    epoch_ids: np.ndarray
    epdet_pairs: np.ndarray  # (n, 2): epoch index, detector index
    visit_epoch: np.ndarray
    visit_center: np.ndarray  # (n_visits, 2) ra0, dec0
    visit_radius: np.ndarray
    visit_rotation: np.ndarray  # camera rotation angle (rad) on the sky, up to a constant
    frame_offset: np.ndarray  # complex (arcsec): the shared focal-plane origin on each visit's tangent plane
    boxes: dict
    wcs: dict
    ref_w: np.ndarray
    ref_m: np.ndarray
    star_colour: np.ndarray | None
    chunks: list
    excluded: list = field(default_factory=list)


class JointCalibrator:
    """Multi-epoch joint photometric calibration (configure once, then :meth:`fit`).

    Parameters
    ----------
    model : {"separated", "monolithic", "reference-free"}
        The model family (see the module documentation for the formulae).
    kind : ImageKind or str
        What ``instflux`` was measured on. For ``SURFACE_BRIGHTNESS`` the separated and
        reference-free models multiply by the WCS pixel area; the resulting PhotoCalibs take
        fluxes of this kind.
    star_flat_order : int
        Triangular Chebyshev order of the per-detector star flat (separated, reference-free).
    visit_order : int
        Order of the per-visit tangent-plane polynomial (monolithic).
    detector_order : int
        Order of the per-detector polynomial (monolithic; 0 = one constant per detector).
    grey_gradient : bool
        Give each visit's grey term a linear gradient across the field.
    chromatic_order : int or None
        Order of the per-detector chromatic field ``K_d`` (reference-free only; needs a
        ``colour`` column in the observations). ``None``: no chromatic term.
    n_sigma : float
        Outlier threshold on leverage-corrected normalised residuals; ``None`` or ``inf``
        disables rejection.
    max_rejection_rounds : int
        Rounds of classification at ``n_sigma`` (each followed by re-convergence): after the
        robust solve the set of kept observations is re-classified until stable (usually one
        or two rounds); with ``robust_scale=None``, rounds of rejecting the worst per star.
    error_floor : float
        Magnitude error added in quadrature to every observation.
    max_iter : int
        Gauss–Newton iterations (over all rounds).
    tol : float
        Convergence when no star magnitude or model value moves by more than ``tol`` mag.
    min_obs_per_group : int or None
        Visits and (epoch, detector) groups with fewer used observations are excluded
        (default: twice their parameter count, at least 5).
    chunk_size : int
        Observations per map task (visits are kept whole).
    approx_order : int or None
        Chebyshev order used to express tangent-plane factors on a detector's pixels in
        :meth:`JointSolution.photo_calib` (default ``visit_order + 4``).
    compute_errors : bool
        Compute parameter covariances and the calibration part of star-flux errors.
    star_flat_prior : float or None
        σ (mag) of a Gaussian prior pulling every non-constant coefficient of the star flats
        (monolithic: the detector polynomials) to 0: where a detector has no stars its star flat
        stays flat instead of running away. ``None``: no prior. See :mod:`._priors`.
    robust_scale : float or None
        Scale ``c`` (in units of each observation's σ) of the Cauchy cost
        ``Σ c² ln(1 + z² / c²)`` minimised by iteratively reweighted least squares before the
        final classification at ``n_sigma`` (outliers lose their weight inside the solve, so
        there are no reject-and-resolve rounds). ``None``: the older rounds of rejecting the
        worst observation per star and re-solving (``max_rejection_rounds``).
    visit_prior : float or None
        Monolithic: σ (mag) of a Gaussian prior tying each visit polynomial's shape, in the
        focal-plane frame shared by all visits, to the visits' mean shape, so that a visit
        polynomial follows the camera's shape where the visit has no stars. ``None``: no prior.
    """

    def __init__(
        self,
        model: str = "separated",
        kind: ImageKind | str = ImageKind.SURFACE_BRIGHTNESS,
        *,
        star_flat_order: int = 3,
        visit_order: int = 7,
        detector_order: int = 0,
        grey_gradient: bool = False,
        chromatic_order: int | None = None,
        n_sigma: float | None = 5.0,
        max_rejection_rounds: int = 30,
        error_floor: float = 0.0,
        max_iter: int = 200,
        tol: float = 1e-7,
        min_obs_per_group: int | None = None,
        chunk_size: int = 1_000_000,
        approx_order: int | None = None,
        compute_errors: bool = True,
        star_flat_prior: float | None = 0.1,
        visit_prior: float | None = 0.01,
        robust_scale: float | None = 3.0,
    ) -> None:
        if model not in MODELS:
            raise InputError(f"unknown joint model {model!r}; use one of {', '.join(MODELS)}")
        self.model = model
        self.kind = ImageKind.parse(kind)
        for name, value in (("star_flat_order", star_flat_order), ("visit_order", visit_order),
                            ("detector_order", detector_order)):
            if int(value) != value or value < 0:
                raise InputError(f"JointCalibrator {name} must be a non-negative integer, got {value!r}")
        if chromatic_order is not None and (int(chromatic_order) != chromatic_order or chromatic_order < 0):
            raise InputError(f"chromatic_order must be None or a non-negative integer, got {chromatic_order!r}")
        if chromatic_order is not None and model != "reference-free":
            raise InputError("chromatic_order is only available for model='reference-free'")
        self.star_flat_order = int(star_flat_order)
        self.visit_order = int(visit_order)
        self.detector_order = int(detector_order)
        self.grey_gradient = bool(grey_gradient)
        self.chromatic_order = None if chromatic_order is None else int(chromatic_order)
        self.n_sigma = None if n_sigma is None or not np.isfinite(n_sigma) else float(n_sigma)
        self.max_rejection_rounds = int(max_rejection_rounds)
        if not (np.isfinite(error_floor) and error_floor >= 0):
            raise InputError(f"error_floor must be finite and >= 0 mag, got {error_floor!r}")
        self.error_floor = float(error_floor)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.min_obs_per_group = min_obs_per_group
        self.chunk_size = int(chunk_size)
        self.approx_order = approx_order
        self.compute_errors = bool(compute_errors)
        for name, value in (("star_flat_prior", star_flat_prior), ("visit_prior", visit_prior)):
            if value is not None and not (np.isfinite(value) and value > 0):
                raise InputError(f"JointCalibrator {name} must be None or a positive number of magnitudes, "
                                 f"got {value!r}")
        if robust_scale is not None and not (np.isfinite(robust_scale) and robust_scale > 0):
            raise InputError(f"JointCalibrator robust_scale must be None or a positive number (in σ), got {robust_scale!r}")
        self.robust_scale = None if robust_scale is None else float(robust_scale)
        self.star_flat_prior = None if star_flat_prior is None else float(star_flat_prior)
        self.visit_prior = None if visit_prior is None else float(visit_prior)

    def __repr__(self) -> str:
        return (f"JointCalibrator(model={self.model!r}, kind={self.kind.value}, "
                f"star_flat_order={self.star_flat_order}, visit_order={self.visit_order}, "
                f"detector_order={self.detector_order}, grey_gradient={self.grey_gradient}, "
                f"chromatic_order={self.chromatic_order}, n_sigma={self.n_sigma})")

    # ------------------------------------------------------------------------------------------
    def _blocks(self, n_epdet: int, n_det: int, n_visit: int, has_colour: bool) -> list[Block]:
        blocks: list[Block] = []
        offset = 0

        def add(name, coord, order, group, base, n_groups):
            nonlocal offset
            b = Block(name, coord, order, group, base, n_groups, offset)
            offset += b.n_params
            blocks.append(b)

        if self.model == "monolithic":
            add("detector", "pixel", self.detector_order, "detector", 0.0, n_det)
            add("visit", "tangent", self.visit_order, "visit", 0.0, n_visit)
        else:
            add("starflat", "pixel", self.star_flat_order, "epoch_detector", 0.0, n_epdet)
            add("grey", "tangent", 1 if self.grey_gradient else 0, "visit", 0.0, n_visit)
            if self.chromatic_order is not None:
                if not has_colour:
                    raise InputError("chromatic_order needs a 'colour' column in the observations")
                add("chromatic", "pixel", self.chromatic_order, "detector", 1.0, n_det)
        return blocks

    def _min_obs(self, n_params: int) -> int:
        if self.min_obs_per_group is not None:
            return int(self.min_obs_per_group)
        return max(5, 2 * n_params)

    @staticmethod
    def _duplicate_checks(cols: dict) -> list[tuple[str, np.ndarray]]:
        """Rows to drop because their (visit, detector, star) key is repeated, with the reasons.

        A star is measured once per (visit, detector). An identical repeated row (a catalog
        ingested twice) would count twice in the χ² and shrink the errors: one copy is kept.
        Copies that differ (two detections associated with one star) leave no telling which is
        the star: all of them are dropped. Both are listed in the solution's ``excluded``.
        """
        n = len(cols["visit"])
        dup_rows, dup_starts = _duplicate_groups(cols["visit"], cols["detector"], cols["star"])
        if not dup_rows.size:
            return []
        grp = np.repeat(np.arange(len(dup_starts)), np.diff(np.append(dup_starts, dup_rows.size)))
        head = dup_rows[dup_starts][grp]
        same = np.ones(dup_rows.size, dtype=bool)
        for c in ("x", "y", "instflux", "instflux_err"):
            same &= cols[c][dup_rows] == cols[c][head]
        conflicting = np.zeros(len(dup_starts), dtype=bool)
        conflicting[grp[~same]] = True
        out = []
        copies = np.zeros(n, dtype=bool)
        copies[dup_rows[~conflicting[grp]]] = True
        copies[dup_rows[dup_starts][~conflicting]] = False  # the first copy is kept
        differing = np.zeros(n, dtype=bool)
        differing[dup_rows[conflicting[grp]]] = True

        def named(groups):
            return ", ".join(f"(visit {_key(cols['visit'][i])}, detector {_key(cols['detector'][i])}, "
                             f"star {_key(cols['star'][i])})" for i in dup_rows[dup_starts[groups[:3]]])

        if copies.any():
            out.append((f"identical duplicate (visit, detector, star) rows, one copy kept, e.g. "
                        f"{named(np.nonzero(~conflicting)[0])}", copies))
        if differing.any():
            out.append((f"duplicate (visit, detector, star) rows that differ, all dropped, e.g. "
                        f"{named(np.nonzero(conflicting)[0])}", differing))
        return out

    def _prepare(self, observations, wcs_by_detector, reference, bboxes) -> _Problem:
        from ..astrometry import sky_to_tangent

        if observations is None or not (hasattr(observations, "colnames") or hasattr(observations, "columns")):
            raise InputError("observations must be an astropy Table or a pandas DataFrame")
        cols = {c: _column(observations, c, "observations") for c in _OBS_COLUMNS}
        n_in = len(cols["visit"])
        if n_in == 0:
            raise InputError("observations is empty")
        for c in ("x", "y", "instflux", "instflux_err"):
            if not np.issubdtype(np.asarray(cols[c]).dtype, np.number):
                raise InputError(f"observations column {c!r} must be numeric")
            cols[c] = np.asarray(cols[c], dtype=np.float64)
        epoch_col = _column(observations, "epoch", "observations") if _has_column(observations, "epoch") else np.zeros(n_in, dtype=np.int64)
        colour_name = "colour" if _has_column(observations, "colour") else ("color" if _has_column(observations, "color") else None)
        colour_col = np.asarray(_column(observations, colour_name, "observations"), dtype=np.float64) if colour_name else None
        use_colour = self.chromatic_order is not None
        if use_colour and colour_col is None:
            raise InputError("chromatic_order needs a 'colour' column in the observations")
        excluded: list[tuple[str, str, str]] = []
        # -- per-row validity: dropped and counted, never propagated as NaN
        good = np.ones(n_in, dtype=bool)
        checks = [
            ("non-finite x or y", ~(np.isfinite(cols["x"]) & np.isfinite(cols["y"]))),
            ("non-finite instflux", ~np.isfinite(cols["instflux"])),
            ("non-positive instflux", np.isfinite(cols["instflux"]) & (cols["instflux"] <= 0)),
            ("non-finite or non-positive instflux_err", ~(np.isfinite(cols["instflux_err"]) & (cols["instflux_err"] > 0))),
        ]
        if use_colour:
            checks.append(("non-finite colour", ~np.isfinite(colour_col)))
        checks.extend(self._duplicate_checks(cols))
        for reason, bad in checks:
            nb = int(np.count_nonzero(bad & good))
            if nb:
                excluded.append(("observations", str(nb), reason))
            good &= ~bad
        if not good.any():
            raise InputError("no usable observations: every row has a non-finite or non-positive x, y, instflux or instflux_err")
        row = np.nonzero(good)[0]
        visit_ids, visit = np.unique(np.asarray(cols["visit"])[row], return_inverse=True)
        det_ids, det = np.unique(np.asarray(cols["detector"])[row], return_inverse=True)
        star_ids_all, star = np.unique(np.asarray(cols["star"])[row], return_inverse=True)
        x = cols["x"][row]
        y = cols["y"][row]
        mag = -2.5 * np.log10(cols["instflux"][row])
        sig = _MAG_ERR * cols["instflux_err"][row] / cols["instflux"][row]
        sigma2 = sig**2 + self.error_floor**2
        epoch_raw = np.asarray(epoch_col)[row]
        epoch_ids, epoch = np.unique(epoch_raw, return_inverse=True)
        # epoch must be a property of the visit
        ve = np.zeros(len(visit_ids), dtype=np.int64)
        ve[visit] = epoch
        if np.any(ve[visit] != epoch):
            bad_v = visit_ids[np.unique(visit[ve[visit] != epoch])]
            raise InputError(f"observations column 'epoch' varies within visit(s) {[_key(v) for v in bad_v[:5]]}; an epoch is a set of whole visits")
        # -- WCS for every (visit, detector)
        if not isinstance(wcs_by_detector, dict):
            raise InputError("wcs_by_detector must be a dict {(visit, detector): SkyWcs}")
        pair = visit.astype(np.int64) * len(det_ids) + det
        upairs, pair_inv = np.unique(pair, return_inverse=True)
        wcs = {}
        missing = []
        for up in upairs:
            key = (_key(visit_ids[up // len(det_ids)]), _key(det_ids[up % len(det_ids)]))
            w = wcs_by_detector.get(key)
            if w is None:
                missing.append(key)
            wcs[key] = w
        if missing:
            raise InputError(
                f"wcs_by_detector has no WCS for (visit, detector) {missing[:5]}"
                f"{' and more' if len(missing) > 5 else ''}; add them or drop those observations")
        # -- detector boxes
        boxes: dict = {}
        for di, did in enumerate(det_ids):
            k = _key(did)
            if bboxes is not None and k in bboxes:
                boxes[k] = bboxes[k]
                continue
            sel = det == di
            x0 = int(math.floor(min(0.0, x[sel].min()) + 0.5))
            y0 = int(math.floor(min(0.0, y[sel].min()) + 0.5))
            boxes[k] = Box(x0, y0, int(math.ceil(x[sel].max() + 0.5)) - x0, int(math.ceil(y[sel].max() + 0.5)) - y0)
        # -- sky positions, pixel areas, visit pointings, tangent coordinates
        order = np.argsort(pair_inv, kind="stable")
        bounds = np.searchsorted(pair_inv[order], np.arange(len(upairs) + 1))
        ra = np.empty(len(row))
        dec = np.empty(len(row))
        need_area = self.kind is ImageKind.SURFACE_BRIGHTNESS and self.model != "monolithic"
        log_area = np.zeros(len(row))
        centre_vec = np.zeros((len(visit_ids), 3))
        for i, up in enumerate(upairs):
            idx = order[bounds[i]:bounds[i + 1]]
            vi, di = int(up // len(det_ids)), int(up % len(det_ids))
            key = (_key(visit_ids[vi]), _key(det_ids[di]))
            w = wcs[key]
            r_, d_ = w.pixel_to_sky(x[idx], y[idx])
            ra[idx] = r_
            dec[idx] = d_
            if need_area:
                a = np.asarray(w.pixel_area(x[idx], y[idx]), dtype=np.float64)
                if not np.all(np.isfinite(a) & (a > 0)):
                    raise InputError(f"WCS of (visit, detector) {key} gives a non-positive or non-finite pixel area")
                log_area[idx] = 2.5 * np.log10(a)
            cx, cy = boxes[key[1]].center
            centre_vec[vi] += _unit_vector(*w.pixel_to_sky(cx, cy))
        if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
            raise InputError("a WCS returned non-finite sky positions for some observations")
        nv = np.linalg.norm(centre_vec, axis=1)
        centre_vec /= nv[:, None]
        v_ra = np.rad2deg(np.arctan2(centre_vec[:, 1], centre_vec[:, 0])) % 360.0
        v_dec = np.rad2deg(np.arcsin(np.clip(centre_vec[:, 2], -1, 1)))
        xi = np.empty(len(row))
        eta = np.empty(len(row))
        radius = np.zeros(len(visit_ids))
        orient = np.zeros((len(visit_ids), len(det_ids)), dtype=np.complex128)
        centre_t = np.full((len(visit_ids), len(det_ids)), np.nan, dtype=np.complex128)
        # visit radius from the corners and edge midpoints of its detector boxes
        for up in upairs:
            vi, di = int(up // len(det_ids)), int(up % len(det_ids))
            key = (_key(visit_ids[vi]), _key(det_ids[di]))
            xmin, xmax, ymin, ymax = boxes[key[1]].extent
            px = np.array([xmin, xmax, xmin, xmax, 0.5 * (xmin + xmax), 0.5 * (xmin + xmax), xmin, xmax])
            py = np.array([ymin, ymin, ymax, ymax, ymin, ymax, 0.5 * (ymin + ymax), 0.5 * (ymin + ymax)])
            cr, cd = wcs[key].pixel_to_sky(px, py)
            cxi, ceta = sky_to_tangent(cr, cd, v_ra[vi], v_dec[vi])
            radius[vi] = max(radius[vi], float(np.max(np.abs(cxi))), float(np.max(np.abs(ceta))))
            # direction of the detector's x axis on the visit's tangent plane
            orient[vi, di] = np.exp(1j * math.atan2(ceta[7] - ceta[6], cxi[7] - cxi[6]))
            centre_t[vi, di] = 0.5 * (cxi[6] + cxi[7]) + 0.5j * (ceta[6] + ceta[7])
        visit_rotation = _camera_rotation(orient)
        frame_offset, _ = _priors.focal_plane_frame(centre_t, visit_rotation)
        vsel_order = np.argsort(visit, kind="stable")
        vb = np.searchsorted(visit[vsel_order], np.arange(len(visit_ids) + 1))
        for vi in range(len(visit_ids)):
            idx = vsel_order[vb[vi]:vb[vi + 1]]
            a, b = sky_to_tangent(ra[idx], dec[idx], v_ra[vi], v_dec[vi])
            xi[idx] = a
            eta[idx] = b
            radius[vi] = max(radius[vi], float(np.max(np.abs(a))), float(np.max(np.abs(b))))
        radius *= 1.0 + 1e-9
        tu = xi / radius[visit]
        tv = eta / radius[visit]
        # pixel coordinates on [-1, 1] from each detector's box (as ChebyshevField does)
        ext = np.array([boxes[_key(d)].extent for d in det_ids])
        pu = (x - ext[det, 0]) * (2.0 / (ext[det, 1] - ext[det, 0])) - 1.0
        pv = (y - ext[det, 2]) * (2.0 / (ext[det, 3] - ext[det, 2])) - 1.0
        m_eff = mag - log_area
        # -- reference catalogue
        ref_flux_by_star = None
        if reference is not None:
            rs = _column(reference, "star", "reference")
            rf = np.asarray(_column(reference, "flux", "reference"), dtype=np.float64)
            re = np.asarray(_column(reference, "flux_err", "reference"), dtype=np.float64)
            # identical repeated reference rows are harmless (one is kept); copies that disagree
            # on flux or flux_err leave the star's reference undefined: refuse, naming them
            dup_rows, dup_starts = _duplicate_groups(rs)
            if dup_rows.size:
                grp = np.repeat(np.arange(len(dup_starts)), np.diff(np.append(dup_starts, dup_rows.size)))
                head = dup_rows[dup_starts][grp]
                differs = ~((rf[dup_rows] == rf[head]) & (re[dup_rows] == re[head]))
                bad = np.unique(grp[differs])
                if bad.size:
                    named = ", ".join(str(_key(rs[dup_rows[dup_starts[g]]])) for g in bad[:10])
                    raise InputError(
                        f"reference has {bad.size} duplicate stars whose rows disagree on flux or "
                        f"flux_err (star {named}); keep one reference row per star")
                keep_ref = np.ones(len(rs), dtype=bool)
                keep_ref[dup_rows] = False
                keep_ref[dup_rows[dup_starts]] = True
                rs, rf, re = np.asarray(rs)[keep_ref], rf[keep_ref], re[keep_ref]
            okr = np.isfinite(rf) & (rf > 0) & np.isfinite(re) & (re > 0)
            if np.count_nonzero(~okr):
                excluded.append(("reference", str(int(np.count_nonzero(~okr))), "non-finite or non-positive flux or flux_err"))
            ref_flux_by_star = (np.asarray(rs)[okr], rf[okr], re[okr])
        elif self.model != "reference-free":
            raise InputError(f"model={self.model!r} needs a reference catalogue (Table with star, flux, flux_err); "
                             "use model='reference-free' to fit without one")
        # -- iterative exclusion of under-constrained stars, visits and detectors
        keep = np.ones(len(row), dtype=bool)
        ref_star_mask = np.zeros(len(star_ids_all), dtype=bool)
        if ref_flux_by_star is not None:
            ref_star_mask = np.isin(star_ids_all, ref_flux_by_star[0])
        n_sf = (self.star_flat_order + 1) * (self.star_flat_order + 2) // 2
        n_visit_par = ((self.visit_order + 1) * (self.visit_order + 2) // 2 if self.model == "monolithic"
                       else (3 if self.grey_gradient else 1))
        n_det_par = ((self.detector_order + 1) * (self.detector_order + 2) // 2 if self.model == "monolithic" else n_sf)
        epdet_raw = epoch.astype(np.int64) * len(det_ids) + det
        reported = {"visit": np.zeros(len(visit_ids), dtype=bool),
                    "detector": np.zeros(max(len(det_ids), int(epdet_raw.max()) + 1), dtype=bool)}
        for _ in range(100):
            changed = False
            ns = np.bincount(star[keep], minlength=len(star_ids_all))
            # a star needs two observations, or one plus a reference flux, to say anything
            # about the calibration (reference-free standards do not enter the χ²)
            ok_star = (ns >= 2) | ((ns >= 1) & ref_star_mask & (self.model != "reference-free"))
            drop = keep & ~ok_star[star]
            if drop.any():
                keep &= ~drop
                changed = True
            for name, gidx, ids, npar in (("visit", visit, visit_ids, n_visit_par),
                                          ("detector", epdet_raw if self.model != "monolithic" else det, None, n_det_par)):
                cnt = np.bincount(gidx[keep], minlength=int(gidx.max()) + 1)
                present = np.bincount(gidx, minlength=len(cnt)) > 0
                low = present & (cnt < self._min_obs(npar)) & ~reported[name][: len(cnt)]
                if low.any():
                    reported[name][np.nonzero(low)[0]] = True
                    for g in np.nonzero(low)[0]:
                        if name == "visit":
                            label = f"visit {_key(ids[g])}"
                        elif self.model == "monolithic":
                            label = f"detector {_key(det_ids[g])}"
                        else:
                            label = f"detector {_key(det_ids[g % len(det_ids)])} (epoch {_key(epoch_ids[g // len(det_ids)])})"
                        excluded.append((name, label, f"only {cnt[g]} usable observations (< {self._min_obs(npar)})"))
                    keep &= ~low[gidx]
                    changed = True
            if not changed:
                break
        n_single = int(np.count_nonzero(np.bincount(star, minlength=len(star_ids_all)) == 1))
        if n_single:
            excluded.append(("stars", str(n_single), "seen once (no constraint on the calibration)"))
        if not keep.any():
            raise InputError("no observations left after excluding stars seen once and visits/detectors with too few stars")
        # -- connectivity: each connected set of visits has its own zero point
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        ks = star[keep]
        kv = visit[keep]
        n_s_all = len(star_ids_all)
        graph = coo_matrix((np.ones(len(ks)), (ks, n_s_all + kv)), shape=(n_s_all + len(visit_ids),) * 2)
        ncomp, lab = connected_components(graph, directed=False)
        vis_lab = lab[n_s_all + np.unique(kv)]
        if len(np.unique(vis_lab)) > 1:
            labs, counts = np.unique(vis_lab, return_counts=True)
            main = labs[np.argmax(counts)]
            others = visit_ids[np.unique(kv)][vis_lab != main]
            raise InputError(
                f"the visits are not connected by common stars: visits {[_key(v) for v in others[:10]]} share no star "
                f"with the rest; fit them separately or drop them")
        # -- compact indices over what is kept, sorted by star
        idx = np.nonzero(keep)[0]
        idx = idx[np.argsort(star[idx], kind="stable")]
        s_ids, s_idx = np.unique(star[idx], return_inverse=True)
        v_used, v_idx = np.unique(visit[idx], return_inverse=True)
        d_used, d_idx = np.unique(det[idx], return_inverse=True)
        ed_used, ed_idx = np.unique(epdet_raw[idx], return_inverse=True)
        e_used, _ = np.unique(epoch[idx], return_inverse=True)
        epdet_pairs = np.stack([np.searchsorted(e_used, ed_used // len(det_ids)),
                                np.searchsorted(d_used, ed_used % len(det_ids))], axis=1)
        blocks = self._blocks(len(ed_used), len(d_used), len(v_used), colour_col is not None)
        n_p = sum(b.n_params for b in blocks)
        groups = {"epoch_detector": ed_idx, "detector": d_idx, "visit": v_idx}
        starts = np.empty((len(idx), len(blocks)), dtype=np.int64)
        for bi, b in enumerate(blocks):
            starts[:, bi] = b.offset + groups[b.group] * b.n_basis
        nbs = np.array([b.n_basis for b in blocks], dtype=np.int64)
        ptr = np.searchsorted(s_idx, np.arange(len(s_ids) + 1)).astype(np.int64)
        star_ids = star_ids_all[s_ids]
        visit_ids_u = visit_ids[v_used]
        det_ids_u = det_ids[d_used]
        # reference weights per (kept) star
        ref_w = np.zeros(len(s_ids))
        ref_m = np.zeros(len(s_ids))
        if ref_flux_by_star is not None:
            rs, rf, re = ref_flux_by_star
            pos = np.searchsorted(star_ids, rs)
            pos = np.clip(pos, 0, len(star_ids) - 1)
            hit = star_ids[pos] == rs
            if not hit.any():
                what = "reference" if self.model != "reference-free" else "standard"
                raise InputError(f"no {what} star matches a fitted star (reference column 'star' vs observations "
                                 "column 'star'); check the identifiers")
            ref_m[pos[hit]] = -2.5 * np.log10(rf[hit])
            ref_w[pos[hit]] = 1.0 / (_MAG_ERR * re[hit] / rf[hit]) ** 2
        star_colour = None
        if colour_col is not None:
            cc = colour_col[row][idx]
            sums = np.bincount(s_idx, weights=cc, minlength=len(s_ids))
            star_colour = sums / np.diff(ptr)
        # -- chunks: whole visits, about chunk_size observations each
        vorder = np.argsort(v_idx, kind="stable")
        vb = np.searchsorted(v_idx[vorder], np.arange(len(v_used) + 1))
        chunks = []
        cur: list[np.ndarray] = []
        cur_n = 0
        for vi in range(len(v_used)):
            part = vorder[vb[vi]:vb[vi + 1]]
            cur.append(part)
            cur_n += len(part)
            if cur_n >= self.chunk_size:
                chunks.append(np.sort(np.concatenate(cur)))
                cur, cur_n = [], 0
        if cur:
            chunks.append(np.sort(np.concatenate(cur)))
        f32 = np.float32
        return _Problem(
            model=self.model, kind=self.kind, blocks=blocks, n_p=n_p, ptr=ptr,
            star=s_idx.astype(np.int32), visit=v_idx.astype(np.int32), detector=d_idx.astype(np.int32),
            epdet=ed_idx.astype(np.int32),
            pu=pu[idx].astype(f32), pv=pv[idx].astype(f32), tu=tu[idx].astype(f32), tv=tv[idx].astype(f32),
            m=m_eff[idx], sigma2=sigma2[idx].astype(f32),
            colour=None if star_colour is None or not use_colour else star_colour[s_idx],
            starts=starts, nbs=nbs, x=x[idx].astype(f32), y=y[idx].astype(f32), input_row=row[idx],
            visit_ids=visit_ids_u, detector_ids=det_ids_u, star_ids=star_ids, epoch_ids=epoch_ids[e_used],
            epdet_pairs=epdet_pairs, visit_epoch=np.searchsorted(e_used, ve[v_used]),
            visit_center=np.stack([v_ra[v_used], v_dec[v_used]], axis=1), visit_radius=radius[v_used],
            visit_rotation=visit_rotation[v_used], frame_offset=frame_offset[v_used],
            boxes={_key(d): boxes[_key(d)] for d in det_ids_u},
            wcs=_subset_wcs(wcs, visit_ids_u, det_ids_u),
            ref_w=ref_w, ref_m=ref_m, star_colour=star_colour, chunks=chunks, excluded=excluded,
        )

    # ------------------------------------------------------------------------------------------
    def _constraints(self, prob: _Problem) -> tuple[np.ndarray, np.ndarray]:
        rows, targets = [], []
        bl = {b.name: b for b in prob.blocks}

        def mean_of_groups(b, groups) -> np.ndarray:
            # the mean over `groups` of a Chebyshev block's field means (each field's mean is
            # linear in its coefficients)
            r = np.zeros(prob.n_p)
            means = cheb_means(b.order) / len(groups)
            for g in groups:
                r[b.offset + g * b.n_basis: b.offset + (g + 1) * b.n_basis] = means
            return r

        if prob.model == "monolithic":
            b = bl["detector"]
            rows.append(mean_of_groups(b, range(b.n_groups)))
            targets.append(1.0)
            return np.array(rows), np.array(targets)
        sf = bl["starflat"]
        n_ep = int(prob.epdet_pairs[:, 0].max()) + 1
        for e in range(n_ep):
            rows.append(mean_of_groups(sf, np.nonzero(prob.epdet_pairs[:, 0] == e)[0]))
            targets.append(1.0)
        gr = bl["grey"]
        if prob.model == "reference-free":
            r = np.zeros(prob.n_p)
            r[gr.offset + np.arange(gr.n_groups) * gr.n_basis] = 1.0 / gr.n_groups
            rows.append(r)
            targets.append(1.0)
        if gr.order >= 1:
            # the gradient common to an epoch's visits *in the camera frame* is a star-flat term:
            # rotate each visit's (ξ, η) gradient into the camera frame and make them sum to 0
            c, s_ = np.cos(prob.visit_rotation), np.sin(prob.visit_rotation)
            for e in range(n_ep):
                vs = np.nonzero(prob.visit_epoch == e)[0]
                for row_c in ((c, s_), (-s_, c)):
                    r = np.zeros(prob.n_p)
                    r[gr.offset + vs * gr.n_basis + 1] = row_c[0][vs]
                    r[gr.offset + vs * gr.n_basis + 2] = row_c[1][vs]
                    rows.append(r)
                    targets.append(0.0)
        if "chromatic" in bl:
            b = bl["chromatic"]
            rows.append(mean_of_groups(b, range(b.n_groups)))
            targets.append(0.0)
        return np.array(rows), np.array(targets)

    def _prior(self, prob: _Problem, level: np.ndarray) -> np.ndarray | None:
        """The priors' quadratic form ``Q`` (χ² gets ``pᵀ Q p``), or None without priors.

        ``level`` is each visit's starting grey level (it normalises the shared-shape prior).
        """
        Q = None
        for b in prob.blocks:
            if b.coord == "pixel" and b.base == 0.0 and b.order > 0 and self.star_flat_prior is not None:
                Q = np.zeros((prob.n_p, prob.n_p)) if Q is None else Q
                Q[np.diag_indices(prob.n_p)] += _priors.ridge(prob.n_p, b, self.star_flat_prior)
            if b.name == "visit" and b.order > 0 and self.visit_prior is not None and b.n_groups > 1:
                frame_radius = float(np.max(prob.visit_radius))
                maps = [_priors.frame_map(b.order, prob.frame_offset[v], prob.visit_rotation[v],
                                          prob.visit_radius[v], frame_radius) for v in range(b.n_groups)]
                Qv = _priors.shared_shape(prob.n_p, b, maps, level, self.visit_prior)
                Q = Qv if Q is None else Q + Qv
        return Q

    def _describe_param(self, prob: _Problem, j: int) -> str:
        for b in prob.blocks:
            if b.offset <= j < b.offset + b.n_params:
                g = (j - b.offset) // b.n_basis
                if b.group == "visit":
                    return f"{b.name} term of visit {_key(prob.visit_ids[g])}"
                if b.group == "detector":
                    return f"{b.name} term of detector {_key(prob.detector_ids[g])}"
                e, d = prob.epdet_pairs[g]
                return f"{b.name} term of detector {_key(prob.detector_ids[d])} (epoch {_key(prob.epoch_ids[e])})"
        return f"parameter {j}"

    # ------------------------------------------------------------------------------------------
    def fit(self, observations, wcs_by_detector: dict, reference=None, *, bboxes: dict | None = None,
            client=None) -> JointSolution:
        """Fit the model to the observations.

        Parameters
        ----------
        observations : astropy.table.Table or pandas.DataFrame
            Columns ``visit, detector, star, x, y, instflux, instflux_err``; optional ``epoch``
            (constant per visit; one star flat per detector per epoch) and ``colour``. A
            repeated (visit, detector, star) key keeps one row if its copies are identical and
            none if they differ; both are listed in the solution's ``excluded``.
        wcs_by_detector : dict
            ``{(visit, detector): SkyWcs}`` (anything with ``pixel_to_sky`` and
            ``pixel_area``) for every pair present in the observations.
        reference : astropy.table.Table or pandas.DataFrame, optional
            Columns ``star, flux, flux_err`` in nJy. Required for ``separated`` and
            ``monolithic``; for ``reference-free`` it only fixes the absolute level.
        bboxes : dict, optional
            ``{detector: Box}``. By default the smallest box from (0, 0) containing the
            detector's observations.
        client : dask.distributed.Client or photocalib.execution.Executor, optional
            Run the per-visit map there (default: threads of this process). A chunk lost with a
            dying worker is placed again and rerun by the executor.

        Returns
        -------
        JointSolution

        Raises
        ------
        InputError
            Missing columns or WCSs, an unknown model, no reference where one is needed,
            reference rows of one star that disagree, visits not connected by common stars, or
            an unconstrained parameter.
        PhotocalibError
            With ``client``: Dask workers kept dying (the executor places a lost chunk again up
            to three times first).
        """
        from threadpoolctl import threadpool_limits

        # The map runs on every core and the Numba kernels use every core; a multi-threaded
        # BLAS on top (the dense solves) only spins against them (80× slower on 2 cores), so
        # BLAS gets one thread for the fit and its previous setting back afterwards.
        with threadpool_limits(limits=1, user_api="blas"):
            prob = self._prepare(observations, wcs_by_detector, reference, bboxes)
            return _solve(self, prob, client)


# ----------------------------------------------------------------------------------------------
# map step (module level so Dask workers can import it)
# ----------------------------------------------------------------------------------------------
def _chunk_data(prob: _Problem, sel: np.ndarray) -> dict:
    return {
        "sel": sel,
        "epoch_detector": prob.epdet[sel], "detector": prob.detector[sel], "visit": prob.visit[sel],
        "pu": prob.pu[sel], "pv": prob.pv[sel], "tu": prob.tu[sel], "tv": prob.tv[sel],
        "m": prob.m[sel], "colour": None if prob.colour is None else prob.colour[sel],
        "starts": prob.starts[sel],
    }


def linearize_chunk(chunk: dict, p: np.ndarray, star_mag: np.ndarray, w: np.ndarray, blocks: list,
                    nbs: np.ndarray, n_p: int, need_matrix: bool = True, robust: float | None = None) -> dict:
    """The map: residuals, derivative rows and the visit-local normal equations of one chunk.

    Parameters
    ----------
    chunk : dict
        Static per-observation data of a set of whole visits (from ``_chunk_data``).
    p : ndarray
        Current parameter vector.
    star_mag, w : ndarray
        Current magnitude of each observation's star, and the observation weights (0 =
        rejected), in chunk order.
    robust : float or None
        Cauchy scale ``c`` (in units of σ): the weights become ``w / (1 + w r² / c²)``, the
        iteratively reweighted least-squares weights of the cost ``Σ c² ln(1 + w r² / c²)``,
        computed here from this point's residuals (so every step decreases that cost).

    Returns
    -------
    dict
        ``sel, D, r, N`` (upper triangle of ``Σ w D Dᵀ``), ``b`` (``Σ w D r``), ``w`` (the
        weights used), ``chi2`` (the cost: ``Σ w r²``, or the Cauchy cost with ``robust``),
        ``n_bad`` (observations where a factor is not positive). ``N`` and ``b`` are ``None``
        when ``need_matrix`` is false (a frozen-Hessian iteration needs only ``D`` and ``r``).
    """
    groups = {"epoch_detector": chunk["epoch_detector"], "detector": chunk["detector"], "visit": chunk["visit"]}
    coords = {"pixel": (chunk["pu"], chunk["pv"]), "tangent": (chunk["tu"], chunk["tv"])}
    log_model, D, _starts, ok = evaluate_blocks(blocks, p, groups, coords, chunk["colour"])
    r = chunk["m"] - log_model - star_mag
    if robust is None:
        cost = float(np.sum(w * r * r))
    else:
        u = w * r * r / robust**2
        cost = float(robust**2 * np.sum(np.log1p(u)))
        w = w / (1.0 + u)
    N, b = K.accumulate_normal(chunk["starts"], nbs, D, w, r, n_p) if need_matrix else (None, None)
    return {"sel": chunk["sel"], "D": D, "r": r, "N": N, "b": b, "w": w,
            "chi2": cost, "n_bad": int(np.count_nonzero(~ok & (w > 0)))}


def _linearize_scattered(chunk: dict, star_mag: np.ndarray, w: np.ndarray, p: np.ndarray, blocks: list,
                         nbs: np.ndarray, n_p: int, need_matrix: bool, robust: float | None) -> dict:
    """:func:`linearize_chunk` with the per-chunk arguments first (for ``Executor.map_scattered``)."""
    return linearize_chunk(chunk, p, star_mag, w, blocks, nbs, n_p, need_matrix, robust)


class _Mapper:
    """Runs the map over chunks in process, or through an :class:`~photocalib.execution.Executor`
    (a Dask cluster), and reduces the results.

    On a cluster the chunks are placed once (``Executor.scatter``) and every iteration maps over
    them; a chunk lost with a dying worker is placed again and its task rerun by the executor
    (:meth:`~photocalib.execution.Executor.map_scattered`), not here.
    """

    def __init__(self, prob: _Problem, client=None) -> None:
        from ..execution import ThreadExecutor, as_executor

        self.prob = prob
        self.executor = as_executor(client, n_threads=K.num_threads())
        self.in_process = isinstance(self.executor, ThreadExecutor)
        sels = prob.chunks
        if self.in_process:
            # In process the chunks run on the executor's threads (NumPy and the nogil kernel
            # release the GIL); split them so that every thread has work even with one chunk.
            n_split = -(-self.executor.n_threads // max(len(sels), 1))
            if n_split > 1:
                sels = [part for sel in sels for part in np.array_split(sel, n_split) if len(part)]
        self.chunks = [_chunk_data(prob, sel) for sel in sels]
        self.data = None if self.in_process else self.executor.scatter(self.chunks)
        n = len(prob.m)
        k = int(prob.nbs.sum())
        self.D = np.empty((n, k))
        self.r = np.empty(n)
        self.w = np.empty(n)

    def __call__(self, p, star_mag_obs, w, need_matrix=True, robust=None):
        prob = self.prob
        N = np.zeros((prob.n_p, prob.n_p)) if need_matrix else None
        b = np.zeros(prob.n_p) if need_matrix else None
        chi2 = 0.0
        n_bad = 0
        if self.in_process:
            results = self._threaded(p, star_mag_obs, w, need_matrix, robust)
        else:
            per_chunk = [(star_mag_obs[c["sel"]], w[c["sel"]]) for c in self.chunks]
            results = self.executor.map_scattered(_linearize_scattered, self.data, per_chunk, p, prob.blocks,
                                                  prob.nbs, prob.n_p, need_matrix, robust)
        for res in results:
            sel = res["sel"]
            self.D[sel] = res["D"]
            self.r[sel] = res["r"]
            self.w[sel] = res["w"]
            if need_matrix:
                N += res["N"]
                b += res["b"]
            chi2 += res["chi2"]
            n_bad += res["n_bad"]
        return N, b, chi2, n_bad

    def _threaded(self, p, star_mag_obs, w, need_matrix, robust):
        """Results of the in-process map, in chunk order (a fixed summation order), with at most
        two chunks per thread in flight: each result holds its chunk's derivative rows, so
        collecting them all first (``Executor.map``) would double the fit's largest array."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        prob = self.prob
        n_threads = min(self.executor.n_threads, len(self.chunks))

        def one(c):
            return linearize_chunk(c, p, star_mag_obs[c["sel"]], w[c["sel"]], prob.blocks, prob.nbs, prob.n_p,
                                   need_matrix, robust)

        if n_threads <= 1:
            yield from (one(c) for c in self.chunks)
            return
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            pending: deque = deque()
            for c in self.chunks:
                if len(pending) >= 2 * n_threads:
                    yield pending.popleft().result()
                pending.append(pool.submit(one, c))
            while pending:
                yield pending.popleft().result()


# ----------------------------------------------------------------------------------------------
# the solver
# ----------------------------------------------------------------------------------------------
def _symmetrize(U: np.ndarray) -> np.ndarray:
    return U + U.T - np.diag(np.diag(U))


def _group_median(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Median (upper) of ``values`` per group; 0 for empty groups."""
    order = np.lexsort((values, groups))
    cnt = np.bincount(groups, minlength=n_groups)
    first = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    out = np.zeros(n_groups)
    ok = cnt > 0
    out[ok] = values[order][first[ok] + cnt[ok] // 2]
    return out


def _solve(cfg: JointCalibrator, prob: _Problem, client) -> JointSolution:
    import scipy.linalg as sla

    n_s = len(prob.ptr) - 1
    w0 = 1.0 / prob.sigma2.astype(np.float64)
    w = w0.copy()
    C, t = cfg._constraints(prob)
    p = np.concatenate([b.initial() for b in prob.blocks])
    mapper = _Mapper(prob, client)
    star = prob.star
    n_v = len(prob.visit_ids)
    # Start close to the answer, robustly (medians: outliers are still in): star magnitudes,
    # then one zero point per visit, then the stars again. A start near the solution keeps the
    # Hessian of the first iterations close to the final one (see the frozen-Hessian steps).
    M = _group_median(prob.m, star, n_s)
    has_ref = prob.ref_w > 0
    if prob.model != "reference-free":
        M = M - float(np.median((M - prob.ref_m)[has_ref]))
    zp = _group_median(prob.m - M[star], prob.visit, n_v)
    grey0 = 10 ** (0.4 * zp)
    if prob.model == "reference-free":
        grey0 /= grey0.mean()  # the zero-point constraint: mean grey = 1
    M = _group_median(prob.m - 2.5 * np.log10(grey0)[prob.visit], star, n_s)
    vis_block = next(b for b in prob.blocks if b.group == "visit")
    p[vis_block.offset + np.arange(vis_block.n_groups) * vis_block.n_basis] = grey0
    ref_w = prob.ref_w if prob.model != "reference-free" else np.zeros(n_s)
    Q = cfg._prior(prob, grey0)
    Qz = np.zeros((prob.n_p, prob.n_p)) if Q is None else Q

    lam = None
    history = []
    rounds = 0
    since_reject = 0
    n_iter = 0
    n_full = 0
    converged = False
    prev = None  # (chi2, p, M, dp, dM, whether the Hessian was assembled)
    step = 1.0
    S = None
    fact = None  # (cho, X, C X) of the last assembled Hessian
    last_step = np.inf
    force_full = True
    # Outliers: phase 0 converges roughly by least squares from the robust start, phase 1 by
    # iteratively reweighted least squares on a Cauchy cost (gross outliers lose their weight
    # inside the solve), then phase 2 refits by least squares on the observations whose
    # leverage-corrected |z| at the robust solution is below n_sigma, re-classifying until the
    # set is stable. Without robust_scale (None) the older reject-and-resolve rounds run.
    irls = cfg.n_sigma is not None and cfg.robust_scale is not None
    phase = 0 if irls else 2
    while True:
        # The Schur complement is the expensive part; once steps are small the Hessian hardly
        # changes, so it is re-used (a frozen-Hessian Newton step, converging linearly at a rate
        # of the Hessian's relative change) and re-assembled at the end to confirm convergence
        # and give the covariance.
        full = force_full or fact is None or last_step > 2e-2
        Npp, bpp, chi2_obs, n_bad = mapper(p, M[star], w, full, cfg.robust_scale if phase == 1 else None)
        we = mapper.w  # the weights of this iteration (w, or its Cauchy reweighting)
        ref_b = ref_w * (prob.ref_m - M)
        chi2 = chi2_obs + float(np.sum(ref_w * (M - prob.ref_m) ** 2)) + float(p @ Qz @ p)
        if prev is not None and (n_bad > 0 or chi2 > prev[0] * (1 + 1e-10) + 1e-12) and step > 1e-3:
            if not prev[5]:
                # a frozen-Hessian step went uphill: go back and assemble the true Hessian there
                p, M = prev[1], prev[2]
                prev = None
                force_full = True
                continue
            step *= 0.5
            p = prev[1] + step * prev[3]
            M = prev[2] + step * prev[4]
            continue
        if full:
            Ns, bs, W, B = K.eliminate_stars(prob.ptr, prob.starts, prob.nbs, mapper.D, we, mapper.r, ref_w, ref_b,
                                             prob.n_p, K.num_threads())
            n_full += 1
            S = _symmetrize(Npp + Ns) + Qz
            rhs = bpp + bs - Qz @ p
            diag = np.diag(S).copy()
            if lam is None:
                lam = float(np.mean(diag[diag > 0])) if np.any(diag > 0) else 1.0
            Sp = S + lam * (C.T @ C)
            dz = np.diag(Sp) <= 1e-14 * lam
            if dz.any():
                raise InputError(f"the fit cannot constrain the {cfg._describe_param(prob, int(np.nonzero(dz)[0][0]))}: "
                                 "no used observation touches it; drop that visit/detector or add stars")
            Sp[np.diag_indices_from(Sp)] += 1e-12 * np.diag(Sp)
            try:
                cho = sla.cho_factor(Sp, lower=False, check_finite=True)
            except (np.linalg.LinAlgError, ValueError) as exc:
                raise PhotocalibError(
                    "the joint fit's normal matrix is singular beyond the documented degeneracies; "
                    "check that visits overlap and detectors have stars across them") from exc
            X = sla.cho_solve(cho, C.T)
            fact = (cho, X, C @ X)
        else:
            W = np.bincount(star, weights=we, minlength=n_s) + ref_w
            B = np.bincount(star, weights=we * mapper.r, minlength=n_s) + ref_b
            mean_r = np.where(W > 0, B / np.where(W > 0, W, 1.0), 0.0)
            rhs = K.rows_scatter(prob.starts, prob.nbs, mapper.D, we * (mapper.r - mean_r[star]), prob.n_p) - Qz @ p
        cho, X, CX = fact
        rhs_p = rhs + lam * (C.T @ (t - C @ p))
        yv = sla.cho_solve(cho, rhs_p)
        nu = np.linalg.solve(CX, C @ yv - (t - C @ p))
        dp = yv - X @ nu
        dmod = K.rows_dot(prob.starts, prob.nbs, mapper.D, dp)
        udp = np.bincount(star, weights=we * dmod, minlength=n_s)
        dM = np.where(W > 0, (B - udp) / np.where(W > 0, W, 1.0), 0.0)
        history.append(chi2)
        n_iter += 1
        last_step = max(float(np.max(np.abs(dM))), float(np.max(np.abs(dmod))))
        small = last_step < cfg.tol
        # χ² no longer moving (same weights): nearly degenerate directions (e.g. monolithic
        # detector polynomials vs the common part of the visit polynomials) change nothing.
        if full and len(history) - since_reject >= 2 and 0.0 <= history[-2] - history[-1] <= 1e-11 * history[-1]:
            small = True
        force_full = False
        if phase < 2 and (small or (phase == 0 and last_step < 1e-3)) and n_iter < cfg.max_iter:
            if phase == 1:  # robust solution reached: keep what is within n_sigma of it
                w = w0 * _within(prob, mapper.r, we, w0, ref_w, cfg.n_sigma)
                rounds += 1
            phase += 1
            since_reject = len(history)
            prev = None
            step = 1.0
            force_full = True
            p = p + dp
            M = M + dM
            continue
        if small and not full and n_iter < cfg.max_iter:
            force_full = True  # confirm with the true Hessian (and get the covariance)
            prev = None
            p = p + dp
            M = M + dM
            continue
        if small or n_iter >= cfg.max_iter:
            if small and cfg.n_sigma is not None and rounds < cfg.max_rejection_rounds:
                if irls:
                    keep = _within(prob, mapper.r, we, w0, ref_w, cfg.n_sigma)
                    n_rej = int(np.count_nonzero(keep != (w > 0)))
                    w = w0 * keep
                else:
                    n_rej = _reject(prob, mapper.r, w, w0, W, cfg.n_sigma)
                if n_rej:
                    rounds += 1
                    since_reject = len(history)
                    prev = None
                    step = 1.0
                    p = p + dp
                    M = M + dM
                    if n_iter < cfg.max_iter:
                        continue
            converged = small
            if not full:
                # ran out of iterations on a frozen Hessian: assemble it for the covariance
                Npp, bpp, _, _ = mapper(p, M[star], w, True, cfg.robust_scale if phase == 1 else None)
                we = mapper.w
                Ns, bs, W, B = K.eliminate_stars(prob.ptr, prob.starts, prob.nbs, mapper.D, we, mapper.r, ref_w,
                                                 ref_w * (prob.ref_m - M), prob.n_p, K.num_threads())
                S = _symmetrize(Npp + Ns) + Qz
            break
        prev = (chi2, p, M, dp, dM, full)
        step = 1.0
        p = p + dp
        M = M + dM
    # -- final state: p, M, with S, mapper.D/r at p (the last step was below tol)
    chi2 -= float(p @ Qz @ p)  # the solution reports the data's χ²; the priors' share is not data
    cov = None
    perr = np.zeros(prob.n_p)
    var_cal = np.zeros(n_s)
    if cfg.compute_errors:
        Sp = S + lam * (C.T @ C)
        Sp[np.diag_indices_from(Sp)] += 1e-12 * np.diag(Sp)
        cho = sla.cho_factor(Sp, lower=False)
        inv = sla.cho_solve(cho, np.eye(prob.n_p))
        X = inv @ C.T
        cov = inv - X @ np.linalg.solve(C @ X, X.T)
        perr = np.sqrt(np.clip(np.diag(cov), 0, None))
        var_cal = K.star_quadratic(prob.ptr, prob.starts, prob.nbs, mapper.D, we, cov, K.num_threads())
    Wsafe = np.where(W > 0, W, np.inf)
    mag_err = np.sqrt(1.0 / Wsafe + var_cal / np.where(W > 0, W, 1.0) ** 2)
    used = w > 0
    n_used_star = np.bincount(star, weights=used, minlength=n_s).astype(np.int64)
    zp_offset = 0.0
    zp_offset_err = 0.0
    if prob.model == "reference-free" and np.any(has_ref & (W > 0)):
        sel = has_ref & (W > 0)
        wr = 1.0 / (1.0 / prob.ref_w[sel] + mag_err[sel] ** 2)
        zp_offset = float(np.sum(wr * (M[sel] - prob.ref_m[sel])) / np.sum(wr))
        zp_offset_err = float(1.0 / math.sqrt(np.sum(wr)))
        M = M - zp_offset
        # calibrations scale by 10^(0.4 δ): every grey coefficient
        gb = next(b for b in prob.blocks if b.name == "grey")
        p[gb.offset: gb.offset + gb.n_params] *= 10 ** (0.4 * zp_offset)
        perr[gb.offset: gb.offset + gb.n_params] *= 10 ** (0.4 * zp_offset)
    dof = int(np.count_nonzero(used) + np.count_nonzero(ref_w > 0) - np.count_nonzero(W > 0) - (prob.n_p - len(t)))
    lev = np.where(used, 1.0 / w0 - 1.0 / np.where(W[star] > 0, W[star], np.inf), 1.0 / w0)
    z = mapper.r / np.sqrt(np.clip(lev, 1e-30, None))
    z = np.where(lev > 1e-12 / w0, z, 0.0)
    return JointSolution._from_fit(cfg, prob, p, perr, M, mag_err, n_used_star, mapper.r, z, used, chi2, dof,
                                   n_iter, converged, rounds, zp_offset, zp_offset_err, history)


def _within(prob: _Problem, r: np.ndarray, we: np.ndarray, w0: np.ndarray, ref_w: np.ndarray,
            n_sigma: float) -> np.ndarray:
    """Observations whose leverage-corrected normalised residual is below ``n_sigma``.

    ``we`` are the weights the solution was fitted with: an observation that carried more than
    half its weight is in its star's mean (residual variance ``σ² − 1/W_s``), one that did not
    is compared with a mean it hardly entered (``σ² + 1/W_s``).
    """
    W = np.bincount(prob.star, weights=we, minlength=len(prob.ptr) - 1) + ref_w
    Wst = np.where(W[prob.star] > 0, W[prob.star], np.inf)
    inside = we > 0.5 * w0
    var = np.where(inside, 1.0 / w0 - 1.0 / Wst, 1.0 / w0 + 1.0 / Wst)
    z = np.abs(r) / np.sqrt(np.clip(var, 1e-30, None))
    return (z < n_sigma) | (inside & (var <= 1e-9 / w0))


def _reject(prob: _Problem, r: np.ndarray, w: np.ndarray, w0: np.ndarray, W: np.ndarray, n_sigma: float,
            shrink: float = 0.25) -> int:
    """One round of outlier rejection; returns how many weights changed (set to 0 or restored).

    The threshold is ``max(n_sigma, shrink × largest |z|)``: gross outliers distort the
    calibration, so good but precise measurements can exceed ``n_sigma`` until the worst are
    gone; lowering the threshold geometrically avoids rejecting them. Only the worst candidate
    per star goes per round, and rejected measurements now within ``n_sigma`` are restored.
    """
    star = prob.star
    used = w > 0
    Wst = np.where(W[star] > 0, W[star], np.inf)
    lev_in = 1.0 / w0 - 1.0 / Wst  # residual variance of a measurement in its star's mean
    lev_out = 1.0 / w0 + 1.0 / Wst  # ... of one left out of it
    z = np.abs(r) / np.sqrt(np.where(used, np.clip(lev_in, 1e-30, None), lev_out))
    valid = used & (lev_in > 1e-9 / w0)
    if not valid.any():
        return 0
    threshold = max(n_sigma, shrink * float(np.max(z[valid])))
    cand = np.nonzero(valid & (z > threshold))[0]
    restore = np.nonzero(~used & (z < n_sigma) & (threshold <= n_sigma))[0]
    n = 0
    if cand.size:
        o = np.lexsort((-z[cand], star[cand]))
        cs = cand[o]
        first = np.unique(star[cs], return_index=True)[1]
        worst = cs[first]
        w[worst] = 0.0
        n += int(worst.size)
    if restore.size:
        w[restore] = w0[restore]
        n += int(restore.size)
    return n


# ----------------------------------------------------------------------------------------------
# the solution
# ----------------------------------------------------------------------------------------------
#: Cells per axis of the grid on which :attr:`JointSolution.coverage` counts a detector's area.
COVERAGE_CELLS = 8


def _coverage(prob: _Problem, used: np.ndarray) -> Table:
    """Per (visit, detector) seen: used observations and the fraction of its area they constrain.

    The detector box is cut into ``COVERAGE_CELLS``² equal cells; a cell is constrained when it
    holds at least one used observation of that (visit, detector).
    """
    n = COVERAGE_CELLS
    n_d = len(prob.detector_ids)
    ext = np.array([prob.boxes[_key(d)].extent for d in prob.detector_ids], dtype=np.float64)
    e = ext[prob.detector]
    cx = np.clip(((prob.x - e[:, 0]) / (e[:, 1] - e[:, 0]) * n).astype(np.int64), 0, n - 1)
    cy = np.clip(((prob.y - e[:, 2]) / (e[:, 3] - e[:, 2]) * n).astype(np.int64), 0, n - 1)
    pair = prob.visit.astype(np.int64) * n_d + prob.detector
    cells = np.unique((pair * n * n + cx + n * cy)[used]) // (n * n)
    n_cells = np.bincount(cells, minlength=len(prob.visit_ids) * n_d)
    n_used = np.bincount(pair[used], minlength=len(prob.visit_ids) * n_d)
    vindex = {_key(v): i for i, v in enumerate(prob.visit_ids)}
    dindex = {_key(d): i for i, d in enumerate(prob.detector_ids)}
    keys = sorted(prob.wcs, key=lambda k: (vindex[k[0]], dindex[k[1]]))
    pk = np.array([vindex[k[0]] * n_d + dindex[k[1]] for k in keys], dtype=np.int64)
    return Table({"visit": prob.visit_ids[pk // n_d], "detector": prob.detector_ids[pk % n_d],
                  "n_used": n_used[pk].astype(np.int64), "area_fraction": n_cells[pk] / float(n * n)})


class _TangentPolynomial(BoundedField):
    """A visit polynomial in tangent-plane coordinates, seen on one detector's pixels (transient).

    Only used as the input of :meth:`ChebyshevField.approximate`; never persisted.
    """

    def __init__(self, coef, order, wcs, ra0, dec0, radius, box):
        self._coef = np.asarray(coef, dtype=np.float64)
        self._order = order
        self._wcs = wcs
        self._centre = (ra0, dec0)
        self._radius = radius
        self._box = box

    @property
    def bbox(self):
        return self._box

    def _evaluate(self, x, y):
        from ..astrometry import sky_to_tangent

        ra, dec = self._wcs.pixel_to_sky(x.ravel(), y.ravel())
        xi, eta = sky_to_tangent(ra, dec, *self._centre)
        basis = cheb_basis(np.asarray(xi) / self._radius, np.asarray(eta) / self._radius, self._order)
        return (basis @ self._coef).reshape(x.shape)


class JointSolution:
    """The result of a joint calibration: per-(visit, detector) PhotoCalibs, star fluxes, diagnostics.

    Attributes
    ----------
    model : str
    kind : ImageKind
        The kind of the PhotoCalibs (what the input fluxes were measured on).
    star_flux : astropy.table.Table
        ``star, flux, flux_err`` (nJy), ``mag, mag_err`` (AB), ``n_obs, n_used``.
    residuals : astropy.table.Table
        Per used-or-rejected observation: ``visit, detector, star, x, y, input_row,
        residual`` (mag, observed − model), ``z`` (leverage-corrected normalised), ``used``.
    chi2, dof : float, int
    chi2_visit, chi2_detector : astropy.table.Table
        ``chi2`` and ``n_used`` per visit / detector.
    n_iter, converged, n_rejection_rounds : int, bool, int
    zero_point_offset, zero_point_offset_err : float
        Reference-free with standards: the magnitude shift applied to match them.
    excluded : astropy.table.Table
        ``what, id, reason``: rows, stars, visits, detectors left out of the fit and why.
    coverage : astropy.table.Table
        Per (visit, detector) in the fit: ``n_used`` observations and ``area_fraction``, the
        fraction of the detector's area its used observations constrain (of the
        ``COVERAGE_CELLS``² equal cells of the box, those holding at least one). Elsewhere the
        calibration comes from the star flat (fitted on all visits) and, for the visit terms,
        from the priors (see ``star_flat_prior`` and ``visit_prior``).
    visits, detectors : list
    """

    def __init__(self, *, model, kind, config, blocks, params, param_err, visit_ids, detector_ids, epoch_ids,
                 epdet_pairs, visit_epoch, visit_center, visit_radius, boxes, wcs, star_flux, residuals,
                 chi2, dof, chi2_visit, chi2_detector, n_iter, converged, n_rejection_rounds,
                 zero_point_offset, zero_point_offset_err, excluded, chi2_history=(), coverage=None):
        self.model = model
        self.kind = kind
        self.config = dict(config)
        self._blocks = list(blocks)
        self._p = np.asarray(params, dtype=np.float64)
        self._perr = np.asarray(param_err, dtype=np.float64)
        self._p.setflags(write=False)
        self._perr.setflags(write=False)
        self._visit_ids = [_key(v) for v in visit_ids]
        self._detector_ids = [_key(d) for d in detector_ids]
        self._epoch_ids = [_key(e) for e in epoch_ids]
        self._vindex = {v: i for i, v in enumerate(self._visit_ids)}
        self._dindex = {d: i for i, d in enumerate(self._detector_ids)}
        self._eindex = {e: i for i, e in enumerate(self._epoch_ids)}
        self._epdet = {(int(e), int(d)): g for g, (e, d) in enumerate(np.asarray(epdet_pairs))}
        self._visit_epoch = np.asarray(visit_epoch, dtype=np.int64)
        self._visit_center = np.asarray(visit_center, dtype=np.float64)
        self._visit_radius = np.asarray(visit_radius, dtype=np.float64)
        self._boxes = dict(boxes)
        self._wcs = dict(wcs)
        self.star_flux = star_flux
        self.residuals = residuals
        self.chi2 = float(chi2)
        self.dof = int(dof)
        self.chi2_visit = chi2_visit
        self.chi2_detector = chi2_detector
        self.n_iter = int(n_iter)
        self.converged = bool(converged)
        self.n_rejection_rounds = int(n_rejection_rounds)
        self.zero_point_offset = float(zero_point_offset)
        self.zero_point_offset_err = float(zero_point_offset_err)
        self.excluded = excluded
        self.chi2_history = tuple(float(c) for c in chi2_history)
        self.coverage = coverage if coverage is not None else Table(
            {"visit": np.array([], dtype=np.int64), "detector": np.array([], dtype=np.int64),
             "n_used": np.array([], dtype=np.int64), "area_fraction": np.array([], dtype=np.float64)})
        self._cache: dict = {}

    # -- construction from a fit ---------------------------------------------------------------
    @classmethod
    def _from_fit(cls, cfg, prob, p, perr, M, mag_err, n_used_star, r, z, used, chi2, dof, n_iter, converged,
                  rounds, zp_offset, zp_offset_err, history):
        flux = 10 ** (-0.4 * M)
        n_obs_star = np.diff(prob.ptr)
        star_flux = Table({
            "star": prob.star_ids, "flux": flux, "flux_err": flux * mag_err / _MAG_ERR,
            "mag": M + 31.4, "mag_err": mag_err, "n_obs": n_obs_star, "n_used": n_used_star,
        })
        star_flux["flux"].unit = "nJy"
        star_flux["flux_err"].unit = "nJy"
        fitted = n_used_star > 0
        excluded_rows = list(prob.excluded)
        if np.any(~fitted):
            excluded_rows.append(("stars", str(int(np.count_nonzero(~fitted))), "every observation rejected as an outlier"))
            star_flux = star_flux[fitted]
        residuals = Table({
            "visit": prob.visit_ids[prob.visit], "detector": prob.detector_ids[prob.detector],
            "star": prob.star_ids[prob.star], "x": prob.x, "y": prob.y, "input_row": prob.input_row,
            "residual": r.astype(np.float32), "z": z.astype(np.float32), "used": used,
        })
        w0 = 1.0 / prob.sigma2.astype(np.float64)
        c2 = np.where(used, w0 * r * r, 0.0)
        chi2_visit = Table({"visit": prob.visit_ids,
                            "chi2": np.bincount(prob.visit, weights=c2, minlength=len(prob.visit_ids)),
                            "n_used": np.bincount(prob.visit, weights=used, minlength=len(prob.visit_ids)).astype(np.int64)})
        chi2_detector = Table({"detector": prob.detector_ids,
                               "chi2": np.bincount(prob.detector, weights=c2, minlength=len(prob.detector_ids)),
                               "n_used": np.bincount(prob.detector, weights=used, minlength=len(prob.detector_ids)).astype(np.int64)})
        excluded = Table(rows=excluded_rows, names=("what", "id", "reason"), dtype=(str, str, str)) if excluded_rows \
            else Table(names=("what", "id", "reason"), dtype=(str, str, str))
        config = {
            "model": cfg.model, "kind": cfg.kind.value, "star_flat_order": cfg.star_flat_order,
            "visit_order": cfg.visit_order, "detector_order": cfg.detector_order,
            "grey_gradient": cfg.grey_gradient, "chromatic_order": -1 if cfg.chromatic_order is None else cfg.chromatic_order,
            "n_sigma": np.inf if cfg.n_sigma is None else cfg.n_sigma, "error_floor": cfg.error_floor,
            "star_flat_prior": 0.0 if cfg.star_flat_prior is None else cfg.star_flat_prior,
            "robust_scale": 0.0 if cfg.robust_scale is None else cfg.robust_scale,
            "visit_prior": 0.0 if cfg.visit_prior is None else cfg.visit_prior,
            "approx_order": (cfg.visit_order + 4) if cfg.approx_order is None else int(cfg.approx_order),
        }
        return cls(model=cfg.model, kind=cfg.kind, config=config, blocks=prob.blocks, params=p, param_err=perr,
                   visit_ids=prob.visit_ids, detector_ids=prob.detector_ids, epoch_ids=prob.epoch_ids,
                   epdet_pairs=prob.epdet_pairs, visit_epoch=prob.visit_epoch, visit_center=prob.visit_center,
                   visit_radius=prob.visit_radius, boxes=prob.boxes, wcs=prob.wcs, star_flux=star_flux,
                   residuals=residuals, chi2=chi2, dof=dof, chi2_visit=chi2_visit, chi2_detector=chi2_detector,
                   n_iter=n_iter, converged=converged, n_rejection_rounds=rounds, zero_point_offset=zp_offset,
                   zero_point_offset_err=zp_offset_err, excluded=excluded, chi2_history=history,
                   coverage=_coverage(prob, used))

    # -- lookups -------------------------------------------------------------------------------
    @property
    def visits(self) -> list:
        """Visit identifiers in the fit."""
        return list(self._visit_ids)

    @property
    def detectors(self) -> list:
        """Detector identifiers in the fit."""
        return list(self._detector_ids)

    @property
    def parameters(self) -> np.ndarray:
        """The fitted coefficient vector (read-only)."""
        return self._p

    @property
    def parameter_errors(self) -> np.ndarray:
        """1σ errors of :attr:`parameters` (0 when ``compute_errors=False``)."""
        return self._perr

    def _block(self, name: str) -> Block | None:
        return next((b for b in self._blocks if b.name == name), None)

    def _visit(self, visit) -> int:
        v = _key(visit)
        if v not in self._vindex:
            why = self._why_excluded("visit", f"visit {v}")
            raise InputError(f"visit {v!r} is not in the joint solution{why}")
        return self._vindex[v]

    def _detector(self, detector) -> int:
        d = _key(detector)
        if d not in self._dindex:
            why = self._why_excluded("detector", f"detector {d}")
            raise InputError(f"detector {d!r} is not in the joint solution{why}")
        return self._dindex[d]

    def _why_excluded(self, what, label) -> str:
        for row in self.excluded:
            if row["what"] == what and str(row["id"]).startswith(label):
                return f" (excluded: {row['reason']})"
        return ""

    def _epoch_of(self, epoch, vi: int | None = None) -> int:
        if epoch is None:
            if vi is not None:
                return int(self._visit_epoch[vi])
            if len(self._epoch_ids) != 1:
                raise InputError(f"the solution has epochs {self._epoch_ids}; pass epoch=")
            return 0
        e = _key(epoch)
        if e not in self._eindex:
            raise InputError(f"epoch {e!r} is not in the joint solution (epochs: {self._epoch_ids})")
        return self._eindex[e]

    # -- fields --------------------------------------------------------------------------------
    def star_flat(self, detector, epoch=None) -> ChebyshevField:
        """The star flat ``S_{e,d}`` (separated, reference-free), or ``P_d`` (monolithic).

        Parameters
        ----------
        detector : detector identifier
        epoch : epoch identifier, optional (needed when the fit has several epochs)

        Returns
        -------
        ChebyshevField
            Dimensionless; mean over the focal plane 1 (see the degeneracy constraints).
        """
        di = self._detector(detector)
        box = self._boxes[self._detector_ids[di]]
        if self.model == "monolithic":
            b = self._block("detector")
            return ChebyshevField(coefficients_to_matrix(b.coefficients(self._p, di), b.order), box)
        e = self._epoch_of(epoch)
        g = self._epdet.get((e, di))
        if g is None:
            raise InputError(f"detector {self._detector_ids[di]!r} has no star flat in epoch {self._epoch_ids[e]!r}")
        b = self._block("starflat")
        return ChebyshevField(coefficients_to_matrix(b.coefficients(self._p, g), b.order), box)

    def grey(self, visit) -> float:
        """The visit's grey factor (its constant term; monolithic: the visit polynomial's)."""
        vi = self._visit(visit)
        b = self._block("grey") or self._block("visit")
        return float(b.coefficients(self._p, vi)[0])

    def grey_error(self, visit) -> float:
        """1σ error of :meth:`grey`."""
        vi = self._visit(visit)
        b = self._block("grey") or self._block("visit")
        return float(b.coefficients(self._perr, vi)[0])

    def chromatic_field(self, detector) -> ChebyshevField:
        """``K_d``: the calibration of a star of colour ``c`` is multiplied by ``1 + c K_d``."""
        b = self._block("chromatic")
        if b is None:
            raise InputError("this solution has no chromatic term (fit with chromatic_order=...)")
        di = self._detector(detector)
        return ChebyshevField(coefficients_to_matrix(b.coefficients(self._p, di), b.order),
                              self._boxes[self._detector_ids[di]])

    def grey_field(self, visit, detector) -> BoundedField:
        """The visit-level factor (grey, or monolithic visit polynomial) on a detector's pixels."""
        vi = self._visit(visit)
        di = self._detector(detector)
        key = (self._visit_ids[vi], self._detector_ids[di])
        box = self._boxes[key[1]]
        b = self._block("grey") or self._block("visit")
        coef = b.coefficients(self._p, vi)
        if b.order == 0:
            return ConstantField(float(coef[0]), box)
        if key not in self._wcs:
            raise InputError(f"no WCS for (visit, detector) {key}: the detector was not observed in that visit")
        ckey = ("grey", key)
        if ckey not in self._cache:
            raw = _TangentPolynomial(coef, b.order, self._wcs[key], *self._visit_center[vi], self._visit_radius[vi], box)
            self._cache[ckey] = ChebyshevField.approximate(raw, order=int(self.config["approx_order"]), bbox=box)
        return self._cache[ckey]

    def fluence_calibration(self, visit, detector) -> BoundedField:
        """The fluence-to-fluence factor: star flat × grey (separated, reference-free)."""
        return ProductField(self.star_flat(detector, self._epoch_ids[self._visit_epoch[self._visit(visit)]])
                            if self.model != "monolithic" else self.star_flat(detector),
                            self.grey_field(visit, detector))

    def photo_calib(self, visit, detector):
        """The PhotoCalib of one (visit, detector), of the solution's kind.

        Its field is a ``ProductField`` of the pixel area (``PixelAreaField`` from the visit's
        WCS; separated and reference-free on surface-brightness input), the star flat and the
        grey term, so ``fluence_to_fluence(wcs)`` is exact. The chromatic term is for colour 0.

        Raises
        ------
        InputError
            Unknown or excluded visit/detector, or a detector not observed in that visit.
        """
        from ..calib import PhotoCalib

        vi = self._visit(visit)
        di = self._detector(detector)
        key = (self._visit_ids[vi], self._detector_ids[di])
        if key not in self._wcs:
            raise InputError(f"no WCS for (visit, detector) {key}: the detector was not observed in that visit")
        box = self._boxes[key[1]]
        factors: list[BoundedField] = []
        if self.model != "monolithic" and self.kind is ImageKind.SURFACE_BRIGHTNESS:
            factors.append(self._wcs[key].pixel_area_field(box))
        if self.model == "monolithic":
            factors.append(self.star_flat(key[1]))
        else:
            factors.append(self.star_flat(key[1], self._epoch_ids[self._visit_epoch[vi]]))
        factors.append(self.grey_field(key[0], key[1]))
        err = self.grey_error(key[0]) / max(self.grey(key[0]), 1e-300)
        # The star flat is a polynomial fitted where the detector's stars are; with few stars
        # (all in one corner, say) it is unconstrained elsewhere and may cross zero. Such a
        # calibration is unusable: say which detector and what to do, rather than let
        # PhotoCalib report a bare pixel position.
        flat = factors[-2]
        xmin, xmax, ymin, ymax = box.extent
        xs = np.linspace(xmin + 0.5, xmax - 0.5, 33)
        ys = np.linspace(ymin + 0.5, ymax - 0.5, 33)
        sf = flat.evaluate(xs[None, :], ys[:, None])
        n_stars = int(self.chi2_detector["n_used"][di])
        if not np.all(np.isfinite(sf) & (sf > 0)):
            j, i = np.unravel_index(int(np.argmin(np.where(np.isfinite(sf), sf, -np.inf))), sf.shape)
            raise InputError(
                f"the star flat of (visit, detector) {key} (detector {_key(key[1])}) is {sf[j, i]:.4g} "
                f"at pixel ({xs[i]:.1f}, {ys[j]:.1f}): unconstrained beyond its {n_stars} used observations; "
                f"lower star_flat_order (now {self.config['star_flat_order']}) or add stars that cover the detector")
        try:
            return PhotoCalib(ProductField(*factors), kind=self.kind, error=err)
        except InputError as exc:
            raise InputError(f"the calibration of (visit, detector) {key} (detector {_key(key[1])}) "
                             f"is unusable: {exc}") from exc

    # -- persistence ---------------------------------------------------------------------------
    def write(self, path: str | os.PathLike, overwrite: bool = True) -> None:
        """Write the solution as FITS binary tables (no pickle; written atomically)."""
        from .._io import atomic_write_hdulist
        from ._joint_model import block_to_table_row

        hdr = fits.Header()
        hdr["PCJOINT"] = (1, "photocalib joint solution format version")
        hdr["MODEL"] = self.model
        hdr["PCKIND"] = self.kind.value
        for k, v in self.config.items():
            if k in ("model", "kind"):
                continue
            hdr[f"HIERARCH CFG {k.upper()}"] = v
        hdr["CHI2"] = self.chi2
        hdr["DOF"] = self.dof
        hdr["NITER"] = self.n_iter
        hdr["CONVERGE"] = self.converged
        hdr["NREJRND"] = self.n_rejection_rounds
        hdr["ZPOFF"] = self.zero_point_offset
        hdr["ZPOFFERR"] = self.zero_point_offset_err
        hdus = [fits.PrimaryHDU(header=hdr)]

        def add(table: Table, name: str):
            h = fits.table_to_hdu(table)
            h.name = name
            hdus.append(h)

        add(Table(rows=[block_to_table_row(b) for b in self._blocks]), "BLOCKS")
        add(Table({"value": self._p, "error": self._perr}), "PARAMS")
        add(Table({"visit": self._visit_ids, "epoch_index": self._visit_epoch,
                   "ra0": self._visit_center[:, 0], "dec0": self._visit_center[:, 1],
                   "radius": self._visit_radius}), "VISITS")
        boxes = [self._boxes[d] for d in self._detector_ids]
        add(Table({"detector": self._detector_ids, "x0": [b.x0 for b in boxes], "y0": [b.y0 for b in boxes],
                   "width": [b.width for b in boxes], "height": [b.height for b in boxes]}), "DETECTORS")
        add(Table({"epoch": self._epoch_ids}), "EPOCHS")
        pairs = sorted(self._epdet.items(), key=lambda kv: kv[1])
        add(Table({"epoch_index": np.array([k[0] for k, _ in pairs], dtype=np.int64),
                   "detector_index": np.array([k[1] for k, _ in pairs], dtype=np.int64)}), "EPDET")
        keys = sorted(self._wcs, key=lambda k: (self._vindex[k[0]], self._dindex[k[1]]))
        headers = []
        for k in keys:
            try:
                headers.append(self._wcs[k].to_header().tostring())
            except AttributeError as exc:
                raise InputError(f"the WCS of (visit, detector) {k} cannot be written (needs SkyWcs.to_header)") from exc
        add(Table({"visit": [k[0] for k in keys], "detector": [k[1] for k in keys], "header": headers}), "WCS")
        add(self.star_flux, "STARS")
        add(self.residuals, "RESIDUALS")
        add(self.chi2_visit, "CHI2_VISIT")
        add(self.chi2_detector, "CHI2_DETECTOR")
        add(self.excluded if len(self.excluded) else Table({"what": np.array([], dtype="U16"), "id": np.array([], dtype="U16"),
                                                            "reason": np.array([], dtype="U16")}), "EXCLUDED")
        add(Table({"chi2": np.asarray(self.chi2_history, dtype=np.float64)}), "HISTORY")
        add(self.coverage, "COVERAGE")
        atomic_write_hdulist(fits.HDUList(hdus), path, overwrite)

    @classmethod
    def read(cls, path: str | os.PathLike) -> JointSolution:
        """Read a solution written by :meth:`write`."""
        from .._io import open_fits
        from ..astrometry import SkyWcs

        with open_fits(path) as hdul:
            try:
                hdr = hdul[0].header
                if "PCJOINT" not in hdr:
                    raise InputError(f"{path}: not a photocalib joint solution (no PCJOINT keyword)")
                tabs = {n: Table.read(hdul[n]) for n in ("BLOCKS", "PARAMS", "VISITS", "DETECTORS", "EPOCHS", "EPDET",
                                                         "WCS", "STARS", "RESIDUALS", "CHI2_VISIT", "CHI2_DETECTOR",
                                                         "EXCLUDED", "HISTORY")}
            except KeyError as exc:
                raise InputError(f"{path}: joint solution lacks HDU {exc}") from exc
            coverage = Table.read(hdul["COVERAGE"]) if "COVERAGE" in hdul else None
            config = {"model": hdr["MODEL"], "kind": hdr["PCKIND"]}
            for k in hdr:
                if k.startswith("CFG "):
                    config[k[4:].lower()] = hdr[k]
        blocks = [Block(str(r["name"]), str(r["coord"]), int(r["order"]), str(r["group"]), float(r["base"]),
                        int(r["n_groups"]), int(r["offset"])) for r in tabs["BLOCKS"]]
        v = tabs["VISITS"]
        d = tabs["DETECTORS"]
        boxes = {_key(r["detector"]): Box(int(r["x0"]), int(r["y0"]), int(r["width"]), int(r["height"])) for r in d}
        wcs = {(_key(r["visit"]), _key(r["detector"])): SkyWcs.from_header(str(r["header"])) for r in tabs["WCS"]}
        e = tabs["EPDET"]
        for t in tabs.values():
            t.meta.clear()
        if coverage is not None:
            coverage.meta.clear()
        return cls(model=str(hdr["MODEL"]), kind=ImageKind.parse(hdr["PCKIND"]), config=config, blocks=blocks,
                   params=np.asarray(tabs["PARAMS"]["value"]), param_err=np.asarray(tabs["PARAMS"]["error"]),
                   visit_ids=np.asarray(v["visit"]), detector_ids=np.asarray(d["detector"]),
                   epoch_ids=np.asarray(tabs["EPOCHS"]["epoch"]),
                   epdet_pairs=np.stack([np.asarray(e["epoch_index"]), np.asarray(e["detector_index"])], axis=1),
                   visit_epoch=np.asarray(v["epoch_index"]), visit_center=np.stack([np.asarray(v["ra0"]), np.asarray(v["dec0"])], axis=1),
                   visit_radius=np.asarray(v["radius"]), boxes=boxes, wcs=wcs, star_flux=tabs["STARS"],
                   residuals=tabs["RESIDUALS"], chi2=hdr["CHI2"], dof=hdr["DOF"], chi2_visit=tabs["CHI2_VISIT"],
                   chi2_detector=tabs["CHI2_DETECTOR"], n_iter=hdr["NITER"], converged=hdr["CONVERGE"],
                   n_rejection_rounds=hdr["NREJRND"], zero_point_offset=hdr["ZPOFF"],
                   zero_point_offset_err=hdr["ZPOFFERR"], excluded=tabs["EXCLUDED"],
                   chi2_history=tabs["HISTORY"]["chi2"], coverage=coverage)

    def __repr__(self) -> str:
        return (f"JointSolution(model={self.model!r}, kind={self.kind.value}, visits={len(self._visit_ids)}, "
                f"detectors={len(self._detector_ids)}, stars={len(self.star_flux)}, chi2/dof={self.chi2:.1f}/{self.dof}, "
                f"converged={self.converged})")


def fit_joint(observations, wcs_by_detector: dict, model: str = "separated",
              kind: ImageKind | str = ImageKind.SURFACE_BRIGHTNESS, reference=None, colour_term=None,
              **config) -> JointSolution:
    """Joint photometric calibration of many overlapping exposures (convenience function).

    Equivalent to ``JointCalibrator(model, kind, **config).fit(observations, wcs_by_detector,
    reference)``; ``bboxes=`` and ``client=`` are passed to :meth:`JointCalibrator.fit`.

    Parameters
    ----------
    observations : astropy.table.Table or pandas.DataFrame
        Columns ``visit, detector, star, x, y, instflux, instflux_err``.
    wcs_by_detector : dict
        ``{(visit, detector): SkyWcs}``.
    model : {"separated", "monolithic", "reference-free"}
    kind : ImageKind or str
        What ``instflux`` was measured on.
    reference : Table, optional
        ``star, flux, flux_err`` (nJy); optional only for ``reference-free``.
    colour_term : photocalib.refcat.ColourTerm, optional
        The reference is in another photometric system: its ``flux`` is in the term's
        reference band and a ``colour`` column holds each star's reference colour. It is
        carried into the instrument band before the fit (:func:`photocalib.refcat.convert_reference`;
        stars outside the term's colour range are dropped from the reference).

    Returns
    -------
    JointSolution
    """
    if colour_term is not None and reference is not None:
        from ..refcat import convert_reference

        reference = convert_reference(reference, colour_term)
    fit_kw = {k: config.pop(k) for k in ("bboxes", "client") if k in config}
    return JointCalibrator(model, kind, **config).fit(observations, wcs_by_detector, reference, **fit_kw)
