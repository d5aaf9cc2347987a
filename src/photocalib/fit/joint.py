"""Multi-epoch joint photometric calibration of many overlapping exposures.

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
solved by Cholesky with the constraints through a bordered (KKT) solve. From 3000 parameters on (or with
``solver="sparse"``) the reduced system is assembled sparsely instead (only visits that share
stars couple) and factorised by sparse LU in KKT form; see ``_joint_sparse``. Steps that raise χ² or
make a factor non-positive are halved. Once steps are below 0.02 mag (0.2 mag while the robust
cost is minimised) the factorised Hessian is kept (frozen-Hessian Newton: only the gradient is
recomputed, at O(observations) cost); it is re-assembled when it goes stale (a least-squares step
not under a quarter of the one before) and at convergence, to confirm it and to give the
covariance (``_joint_solver.GaussNewton`` says where the iterations go). Convergence: no star
magnitude or model value moves by more than ``tol``, or χ² stops decreasing.

Map-reduce: the map is :func:`linearize_chunk` on whole visits (residuals, derivative rows,
``Σ w D Dᵀ``, ``Σ w D r``); the reduce adds the matrices and gathers the rows in star order;
the star elimination then runs where the reduce does. With ``client=`` (a Dask client or a
:class:`photocalib.execution.Executor`) the chunks are placed on the workers once and each
iteration maps over them; a chunk lost with a dying worker is placed again by the executor. The
answer equals the in-process one to rounding.

Streaming: with ``visits=`` (a table of pointings) and no WCSs, the observations (a Parquet
dataset or a Dask DataFrame, whole stars per partition, with ``ra, dec`` and ``pixel_area``
columns) are streamed instead of gathered: each partition's task keeps its observations in
compact form where it runs (about 50 bytes each), eliminates its own stars for the client's
parameters (their magnitudes are weighted means, or Cauchy locations, recomputed every pass:
nothing is carried between passes) and returns its share of the sparse reduced system; the
client holds only that system and one row per star. One pass per Gauss–Newton iteration plus
about a dozen cheap ones (scan, exclusions, exact robust start, summary, errors). The answer is
the in-memory one (to 1e-8 mag in the tests) and does not change when a Dask worker dies. See
``_joint_stream``.

Code layout: this module holds the configuration (:class:`JointCalibrator`) and
:func:`fit_joint`; each model family is a class in :mod:`photocalib.fit.jointmodels` (one file
each, found by name in a registry: its blocks, constraints and reference rules); the problem
builder with the shared focal-plane frame is ``_joint_problem``, the priors ``_priors``, the
map/reduce and Gauss–Newton solver ``_joint_solver``, and the result ``_joint_solution``.

Errors: parameter covariance from the constrained inverse of the reduced Hessian; star
magnitude variances ``1/W_s + u_sᵀ C u_s / W_s²`` (the measurement and calibration parts).

Outliers, inside the solve: from the robust start the fit first converges roughly by least
squares, re-centres each star on the median of its residuals (least squares drags a star
towards a gross outlier, the more as an outlier that brightened it has the smaller σ), then
minimises the Cauchy cost ``Σ c² ln(1 + z² / c²)`` (``z`` the normalised residual,
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

import numpy as np

from ..errors import InputError
from ..image.kind import ImageKind
from . import jointmodels
from ._joint_problem import Problem, build_problem
from ._joint_solution import COVERAGE_CELLS, JointSolution, _TangentPolynomial
from ._joint_solver import linearize_chunk, solve

__all__ = ["COVERAGE_CELLS", "JointCalibrator", "JointSolution", "MODELS", "fit_joint", "linearize_chunk"]

#: The model families (names registered in :mod:`photocalib.fit.jointmodels`).
MODELS = jointmodels.names()

# The private name stays importable where tests and peers reach for it.
_TangentPolynomial = _TangentPolynomial
_Problem = Problem


class JointCalibrator:
    """Multi-epoch joint photometric calibration (configure once, then :meth:`fit`).

    Parameters
    ----------
    model : {"separated", "monolithic", "reference-free"}
        The model family (see the module documentation for the formulae); any name registered
        in :mod:`photocalib.fit.jointmodels`.
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
    solver : {"auto", "dense", "sparse"}
        How the reduced system (after eliminating the star magnitudes) is solved: ``"dense"``
        Cholesky, or ``"sparse"`` LU of the sparse system (only visits that share stars
        couple; memory grows with the overlaps, not with the square of the parameter count),
        see the module ``_joint_sparse``. ``"auto"``: sparse from
        ``SPARSE_MIN_PARAMS`` (3000) calibration parameters on. Both give the same answer
        (to 1e-6 mag, tested). With ``"sparse"`` the errors cost one sparse solve per
        parameter; pass ``compute_errors=False`` for the largest problems.
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
        solver: str = "auto",
    ) -> None:
        self._model_class = jointmodels.get(model)
        self.model = model
        self.kind = ImageKind.parse(kind)
        for name, value in (("star_flat_order", star_flat_order), ("visit_order", visit_order),
                            ("detector_order", detector_order)):
            if int(value) != value or value < 0:
                raise InputError(f"JointCalibrator {name} must be a non-negative integer, got {value!r}")
        if chromatic_order is not None and (int(chromatic_order) != chromatic_order or chromatic_order < 0):
            raise InputError(f"chromatic_order must be None or a non-negative integer, got {chromatic_order!r}")
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
        if solver not in ("auto", "dense", "sparse"):
            raise InputError(f"JointCalibrator solver must be 'auto', 'dense' or 'sparse', got {solver!r}")
        self.solver = solver
        self.star_flat_prior = None if star_flat_prior is None else float(star_flat_prior)
        self.visit_prior = None if visit_prior is None else float(visit_prior)
        self._model_class(self).validate()

    def __repr__(self) -> str:
        return (f"JointCalibrator(model={self.model!r}, kind={self.kind.value}, "
                f"star_flat_order={self.star_flat_order}, visit_order={self.visit_order}, "
                f"detector_order={self.detector_order}, grey_gradient={self.grey_gradient}, "
                f"chromatic_order={self.chromatic_order}, n_sigma={self.n_sigma})")

    def _min_obs(self, n_params: int) -> int:
        if self.min_obs_per_group is not None:
            return int(self.min_obs_per_group)
        return max(5, 2 * n_params)

    # ------------------------------------------------------------------------------------------
    def fit(self, observations, wcs_by_detector: dict | None = None, reference=None, *, bboxes: dict | None = None,
            client=None, visits=None, residuals=None) -> JointSolution:
        """Fit the model to the observations.

        Parameters
        ----------
        observations : astropy.table.Table, pandas.DataFrame, dask DataFrame or path
            Columns ``visit, detector, star, x, y, instflux, instflux_err``; optional ``epoch``
            (constant per visit; one star flat per detector per epoch), ``colour`` and
            ``pixel_area`` (arcsec², used instead of the WCS's for the Jacobian). A path is a
            Parquet file or (hive-partitioned) dataset; only these columns are read. A Dask
            DataFrame or a dataset is gathered into this process (not streamed). A
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
        visits : pandas.DataFrame, astropy.table.Table or path, optional
            The visit table (columns ``visit, ra, dec``: the pointing in degrees; optional
            ``epoch``). Given without ``wcs_by_detector``, the fit **streams** the observations
            (a Parquet dataset whose every file holds whole stars, or a Dask DataFrame whose
            partitions do) instead of gathering them: each partition is read once and kept in
            compact form where its task runs, and this process holds only the reduced system and
            one row per star. The observations then need ``ra, dec`` columns (each observation's
            sky position, degrees) and, for surface-brightness fluxes with a model that knows
            the Jacobian, ``pixel_area``. Returns a
            :class:`~._joint_stream_solution.StreamedJointSolution` (no per-observation
            ``residuals`` table). See :mod:`._joint_stream`.
        residuals : path, optional
            Streamed fits only: a folder to write the per-observation residuals to (one
            Parquet file per partition; columns ``visit, detector, star, x, y, residual, used``).

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
        model = self._model_class(self)
        if visits is not None and wcs_by_detector is None:
            from ._joint_stream import fit_streamed

            with threadpool_limits(limits=1, user_api="blas"):
                return fit_streamed(self, model, observations, visits, reference, bboxes, client, residuals)
        if wcs_by_detector is None:
            raise InputError("fit_joint needs wcs_by_detector ({(visit, detector): SkyWcs}), or visits= (a table of "
                             "visit, ra, dec) to stream observations that carry ra, dec columns")
        if residuals is not None:
            raise InputError("residuals= (a folder to write residuals to) is for streamed fits (visits=...); "
                             "an in-memory solution has them in solution.residuals")
        with threadpool_limits(limits=1, user_api="blas"):
            prob = build_problem(self, model, observations, wcs_by_detector, reference, bboxes)
            return JointSolution._from_fit(self, prob, solve(self, model, prob, client))

    def _prepare(self, observations, wcs_by_detector, reference, bboxes) -> Problem:
        """The :class:`~._joint_problem.Problem` the fit would solve (for peers and diagnostics)."""
        return build_problem(self, self._model_class(self), observations, wcs_by_detector, reference, bboxes)


def fit_joint(observations, wcs_by_detector: dict | None = None, model: str = "separated",
              kind: ImageKind | str = ImageKind.SURFACE_BRIGHTNESS, reference=None, colour_term=None,
              **config) -> JointSolution:
    """Joint photometric calibration of many overlapping exposures (convenience function).

    Equivalent to ``JointCalibrator(model, kind, **config).fit(observations, wcs_by_detector,
    reference)``; ``bboxes=``, ``client=``, ``visits=`` and ``residuals=`` are passed to
    :meth:`JointCalibrator.fit` (``visits=`` without WCSs streams the observations).

    Parameters
    ----------
    observations : astropy.table.Table, pandas.DataFrame, dask DataFrame or path
        Columns ``visit, detector, star, x, y, instflux, instflux_err`` (optional ``epoch``,
        ``colour``, ``pixel_area``); a path is a Parquet file or dataset.
    wcs_by_detector : dict or None
        ``{(visit, detector): SkyWcs}``; None with ``visits=`` for a streamed fit.
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
    fit_kw = {k: config.pop(k) for k in ("bboxes", "client", "visits", "residuals") if k in config}
    return JointCalibrator(model, kind, **config).fit(observations, wcs_by_detector, reference, **fit_kw)
