"""The streamed joint fit's work on one partition: its compact form and its share of each pass.

Every function here is a pure function of the partition and of small arguments from the client
(the parameter vector, the phase, the points at which outliers were classified), so a task rerun
after a worker died gives the same answer. The star magnitudes are never carried between passes:
for given calibration parameters each star's magnitude is the weighted mean of its calibrated
observations (least squares), or their Cauchy location (the robust phase), computed here.
See ``_joint_stream`` for the mathematics and the passes.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np

from . import _joint_sparse as _sparse
from . import _kernels as K
from ._joint_model import evaluate_blocks
from ._joint_solver import _group_median
from ._joint_stream_scan import kept_rows, ref_lookup

#: Inner iterations of a star's Cauchy location, and the change (mag) at which they stop.
ROBUST_ITER, ROBUST_TOL = 200, 1e-11


def compact(raw: dict, ctx: dict) -> dict:
    """The partition's kept observations in the fit's compact form (about 50 bytes each)."""
    keep = kept_rows(raw, ctx)
    ref_w_all, ref_m_all = ref_lookup(raw, ctx)
    all_ids = np.unique(raw["star"])
    star_ids, s = np.unique(raw["star"][keep], return_inverse=True)
    at = np.searchsorted(all_ids, star_ids)
    vis = ctx["visit_map"][raw["visit"][keep]]
    det_g = np.searchsorted(ctx["detector_ids"], raw["detector"][keep])
    det = ctx["detector_map"][det_g]
    ep = np.searchsorted(ctx["epoch_ids"], raw["epoch"][keep])
    epdet = ctx["epdet_map"][ep.astype(np.int64) * len(ctx["detector_ids"]) + det_g]
    ext = ctx["extent"][det]
    x, y = raw["x"][keep], raw["y"][keep]
    f32 = np.float32
    rad = ctx["radius"][raw["visit"][keep]]
    m = raw["mag"][keep]
    if ctx["need_area"]:
        m = m - 2.5 * np.log10(raw["area"][keep])
    colour = star_colour = None
    if raw["colour"] is not None:
        n_s = len(star_ids)
        star_colour = np.bincount(s, weights=raw["colour"][keep], minlength=n_s) / np.bincount(s, minlength=n_s)
        if ctx["chromatic"]:
            colour = star_colour[s]
    return {
        "name": raw["name"], "star_ids": star_ids, "star": s.astype(np.int32),
        "ptr": np.searchsorted(s, np.arange(len(star_ids) + 1)).astype(np.int64),
        "visit": vis.astype(np.int32), "detector": det.astype(np.int32), "epdet": epdet.astype(np.int32),
        "pu": ((x - ext[:, 0]) * (2.0 / (ext[:, 1] - ext[:, 0])) - 1.0).astype(f32),
        "pv": ((y - ext[:, 2]) * (2.0 / (ext[:, 3] - ext[:, 2])) - 1.0).astype(f32),
        "tu": (raw["xi"][keep] / rad).astype(f32), "tv": (raw["eta"][keep] / rad).astype(f32),
        "m": m, "sigma2": raw["sigma2"][keep].astype(f32), "colour": colour, "star_colour": star_colour,
        "x": x.astype(f32), "y": y.astype(f32),
        "ref_w": ref_w_all[at], "ref_m": ref_m_all[at], "cache": {},
    }


# ----------------------------------------------------------------------------------------------
# star magnitudes for given parameters, and the outlier classification
# ----------------------------------------------------------------------------------------------
def _evaluate(part: dict, ctx: dict, p: np.ndarray):
    groups = {"epoch_detector": part["epdet"], "detector": part["detector"], "visit": part["visit"]}
    coords = {"pixel": (part["pu"], part["pv"]), "tangent": (part["tu"], part["tv"])}
    log_model, D, starts, ok = evaluate_blocks(ctx["blocks"], p, groups, coords, part["colour"])
    return part["m"] - log_model, D, starts, ok


def _chi2_ref(part: dict, ctx: dict) -> np.ndarray:
    return part["ref_w"] if ctx["reference_in_chi2"] else np.zeros(len(part["star_ids"]))


def _ls_mags(part, e, w, ref_w, frozen):
    """Least-squares star magnitudes: the weighted mean of ``e`` (and the reference).

    A star whose every observation is set aside keeps ``frozen``, its magnitude when it last
    had weight (as in the in-memory fit, where its magnitude then stops moving); only its
    residuals use it, when the outliers are classified again.
    """
    s, n_s = part["star"], len(part["star_ids"])
    W = np.bincount(s, weights=w, minlength=n_s) + ref_w
    B = np.bincount(s, weights=w * e, minlength=n_s) + ref_w * part["ref_m"]
    M = np.where(W > 0, B / np.where(W > 0, W, 1.0), frozen)
    return M, W


def _robust_mags(part, e, w0, ref_w, c):
    """Each star's Cauchy location from the median of its observations (inner IRLS, per star:
    :func:`._kernels.cauchy_locations`)."""
    return K.cauchy_locations(part["ptr"], np.ascontiguousarray(e, dtype=np.float64),
                              np.ascontiguousarray(w0, dtype=np.float64), np.asarray(ref_w, dtype=np.float64),
                              np.asarray(part["ref_m"], dtype=np.float64), float(c), ROBUST_ITER, ROBUST_TOL)


def _within(part, r, we, w0, ref_w, n_sigma):
    """The in-memory fit's classification (``_joint_solver._within``) on this partition's stars."""
    s = part["star"]
    W = np.bincount(s, weights=we, minlength=len(part["star_ids"])) + ref_w
    Wst = np.where(W[s] > 0, W[s], np.inf)
    inside = we > 0.5 * w0
    var = np.where(inside, 1.0 / w0 - 1.0 / Wst, 1.0 / w0 + 1.0 / Wst)
    z = np.abs(r) / np.sqrt(np.clip(var, 1e-30, None))
    return (z < n_sigma) | (inside & (var <= 1e-9 / w0))


def _state(part: dict, ctx: dict, p: np.ndarray, robust: bool, keep: np.ndarray, frozen=None):
    """Residuals, derivative rows and weights at ``p`` for the given phase and kept set
    (``frozen``: the magnitudes of stars left without weight, see :func:`_ls_mags`)."""
    e, D, starts, ok = _evaluate(part, ctx, p)
    w0 = 1.0 / part["sigma2"].astype(np.float64)
    w = w0 * keep
    ref_w = _chi2_ref(part, ctx)
    if robust:
        c = ctx["robust_scale"]
        M = _robust_mags(part, e, w, ref_w, c)
        r = e - M[part["star"]]
        u = w * r * r / c**2
        cost = float(c**2 * np.sum(np.log1p(u)))
        we = w / (1.0 + u)
    else:
        M, _ = _ls_mags(part, e, w, ref_w, np.zeros(len(part["star_ids"])) if frozen is None else frozen)
        r = e - M[part["star"]]
        cost = float(np.sum(w * r * r))
        we = w
    cost += float(np.sum(ref_w * (M - part["ref_m"]) ** 2))
    return SimpleNamespace(e=e, D=D, starts=starts, ok=ok, w0=w0, w=w, we=we, M=M, r=r, cost=cost, ref_w=ref_w)


def keep_for(part: dict, ctx: dict, chain: tuple) -> tuple[np.ndarray, np.ndarray | None]:
    """The observations kept after the classifications at the points in ``chain``, and the
    magnitudes of stars left without any (their value when they last had weight).

    The first point is the robust solution (the Cauchy weights there say which observations
    were in their star's mean), each later one a least-squares solution on the set kept before
    it: the in-memory fit's rounds, recomputed from the points alone (and cached).
    """
    keep = np.ones(len(part["m"]), dtype=bool)
    frozen = None
    if not chain:
        return keep, frozen
    digests = [hashlib.sha1(b"".join(np.ascontiguousarray(q).tobytes() for q in chain[:i + 1])).hexdigest()
               for i in range(len(chain))]
    cache = part["cache"].setdefault("keep", {})
    # the longest classified prefix already known here (a new round adds one classification)
    done = next((i + 1 for i in range(len(chain) - 1, -1, -1) if digests[i] in cache), 0)
    if done:
        keep, frozen = cache[digests[done - 1]]
    for i in range(done, len(chain)):
        st = _state(part, ctx, chain[i], i == 0, keep, frozen)
        weighted = np.bincount(part["star"], weights=st.w, minlength=len(part["star_ids"])) > 0
        frozen = st.M if frozen is None else np.where(weighted, st.M, frozen)
        keep = _within(part, st.r, st.we, st.w0, st.ref_w, ctx["n_sigma"])
        cache[digests[i]] = (keep, frozen)
    for d in list(cache)[:-2]:  # the last two rounds are all a new round starts from
        del cache[d]
    return keep, frozen


def keep_digest(keep: np.ndarray) -> str:
    """A short fingerprint of a kept set (the client compares rounds with it)."""
    return hashlib.sha1(np.packbits(keep).tobytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# the passes
# ----------------------------------------------------------------------------------------------
def _columns(starts: np.ndarray, nbs: np.ndarray) -> np.ndarray:
    slot = np.repeat(np.arange(len(nbs)), nbs)
    within = np.concatenate([np.arange(n) for n in nbs])
    return (starts[:, slot] + within).astype(np.int64)


def normal_pass(part: dict, ctx: dict, p: np.ndarray, robust: bool, chain: tuple, dp_prev,
                need_matrix: bool = True) -> dict:
    """This partition's reduced normal equations at ``p`` (stars eliminated), cost and checks.

    Returns ``S`` (sparse ``n_p × n_p``: ``Jᵀ W J − U diag(1/W_s) Uᵀ``), ``g`` (the reduced
    right-hand side ``Σ w D (r − r̄_s)``), ``cost`` (χ² or the Cauchy cost, with the reference
    terms), ``n_bad`` (used observations where a factor is not positive), ``step`` (largest
    ``|D dp_prev|``, the model change of the step that led here) and ``n_changed`` (how many
    observations a classification at ``p`` would change; least squares after a robust phase).
    With ``need_matrix`` false ``S`` is None (a frozen-Hessian step needs only ``g``): the
    sparse products are most of a pass's time.
    """
    keep, frozen = keep_for(part, ctx, chain)
    st = _state(part, ctx, p, robust, keep, frozen)
    n_p, nbs = ctx["n_p"], ctx["nbs"]
    s, n_s = part["star"], len(part["star_ids"])
    W = np.bincount(s, weights=st.we, minlength=n_s) + st.ref_w
    B = np.bincount(s, weights=st.we * st.r, minlength=n_s) + st.ref_w * (part["ref_m"] - st.M)
    mean_r = np.where(W > 0, B / np.where(W > 0, W, 1.0), 0.0)
    g = K.rows_scatter(st.starts, nbs, st.D, st.we * (st.r - mean_r[s]), n_p)
    shape = SimpleNamespace(n_p=n_p, ptr=part["ptr"], star=s)
    S = _sparse.reduced_matrix(shape, _columns(st.starts, nbs), st.D, st.we, W) if need_matrix else None
    step = 0.0
    if dp_prev is not None and len(s):
        step = float(np.max(np.abs(K.rows_dot(st.starts, nbs, st.D, dp_prev))))
    n_changed = 0
    if chain and not robust and ctx["n_sigma"] is not None:
        n_changed = int(np.count_nonzero(_within(part, st.r, st.we, st.w0, st.ref_w, ctx["n_sigma"]) != keep))
    return {"S": S, "g": g, "cost": st.cost, "n_bad": int(np.count_nonzero(~st.ok & (st.w > 0))),
            "step": step, "n_changed": n_changed, "kept": [keep_digest(keep)]}


def combine(a: dict, b: dict) -> dict:
    """Two partial sums of :func:`normal_pass` results (the reduce)."""
    S = None if a["S"] is None or b["S"] is None else (a["S"] + b["S"]).tocsc()
    return {"S": S, "g": a["g"] + b["g"], "cost": a["cost"] + b["cost"],
            "n_bad": a["n_bad"] + b["n_bad"], "step": max(a["step"], b["step"]),
            "n_changed": a["n_changed"] + b["n_changed"], "kept": a["kept"] + b["kept"]}


def _star_medians(part: dict) -> np.ndarray:
    """Each star's (upper) median instrumental magnitude, computed once per partition (the
    robust start asks for it in every round of its per-visit median)."""
    cache = part["cache"]
    if "star_median" not in cache:
        cache["star_median"] = _group_median(part["m"], part["star"], len(part["star_ids"]))
    return cache["star_median"]


def start_stars(part: dict, ctx: dict) -> dict:
    """The robust start's first step: each star's median magnitude, and its offset to the reference."""
    M = _star_medians(part)
    has = part["ref_w"] > 0
    return {"offsets": (M - part["ref_m"])[has]}


#: Bins per group and pass of :func:`visit_histogram`.
N_BINS = 64


def _start_values(part: dict, offset: float) -> np.ndarray:
    return part["m"] - (_star_medians(part) - offset)[part["star"]]


def visit_histogram(part: dict, ctx: dict, offset: float, lo: np.ndarray, hi: np.ndarray,
                    active: np.ndarray) -> dict:
    """One round of an exact per-visit median over all partitions (see ``_Solver.start``).

    The values are each observation's instrumental minus its star's median magnitude. For the
    visits still ``active``, the values in ``[lo, hi]`` are counted in ``N_BINS`` equal bins
    (with each bin's smallest and largest value), and those below ``lo`` are counted.
    """
    vals, v = _start_values(part, offset), part["visit"]
    sel = active[v] & (vals >= lo[v]) & (vals <= hi[v])
    vs, xs = v[sel], vals[sel]
    width = hi[vs] - lo[vs]
    b = np.where(width > 0, np.floor((xs - lo[vs]) / np.where(width > 0, width, 1.0) * N_BINS), 0)
    code = vs.astype(np.int64) * N_BINS + np.clip(b, 0, N_BINS - 1).astype(np.int64)
    ids, inv = np.unique(code, return_inverse=True)
    bmin = np.full(len(ids), np.inf)
    bmax = np.full(len(ids), -np.inf)
    np.minimum.at(bmin, inv, xs)
    np.maximum.at(bmax, inv, xs)
    below = active[v] & (vals < lo[v])
    bv, bc = np.unique(v[below], return_counts=True)
    return {"bins": ids, "count": np.bincount(inv, minlength=len(ids)), "min": bmin, "max": bmax,
            "below_visit": bv, "below": bc}


def summary(part: dict, ctx: dict, p: np.ndarray, robust: bool, chain: tuple) -> dict:
    """Per-star results and per-visit, per-detector and per-(visit, detector) diagnostics at ``p``."""
    keep, frozen = keep_for(part, ctx, chain)
    st = _state(part, ctx, p, robust, keep, frozen)
    s, n_s = part["star"], len(part["star_ids"])
    used = st.w > 0
    W = np.bincount(s, weights=st.we, minlength=n_s) + st.ref_w
    c2 = np.where(used, st.w0 * st.r * st.r, 0.0)
    n_v, n_d = ctx["n_visits"], ctx["n_detectors"]
    pair = part["visit"].astype(np.int64) * n_d + part["detector"]
    n = ctx["coverage_cells"]
    ext = ctx["extent"][part["detector"]]
    x, y = part["x"], part["y"]
    cx = np.clip(((x - ext[:, 0]) / (ext[:, 1] - ext[:, 0]) * n).astype(np.int64), 0, n - 1)
    cy = np.clip(((y - ext[:, 2]) / (ext[:, 3] - ext[:, 2]) * n).astype(np.int64), 0, n - 1)
    p_ids, p_inv = np.unique(pair, return_inverse=True)
    bits = np.zeros(len(p_ids), dtype=np.uint64)
    np.bitwise_or.at(bits, p_inv[used], np.left_shift(np.uint64(1), (cx + n * cy)[used].astype(np.uint64)))
    cols = _columns(st.starts, ctx["nbs"])
    return {
        "star_ids": part["star_ids"], "M": st.M, "W": W, "n_obs": np.diff(part["ptr"]),
        "n_used": np.bincount(s, weights=used, minlength=n_s).astype(np.int64),
        "ref_w": part["ref_w"], "ref_m": part["ref_m"],
        "visit_chi2": np.bincount(part["visit"], weights=c2, minlength=n_v),
        "visit_used": np.bincount(part["visit"], weights=used, minlength=n_v),
        "det_chi2": np.bincount(part["detector"], weights=c2, minlength=n_d),
        "det_used": np.bincount(part["detector"], weights=used, minlength=n_d),
        "pairs": p_ids, "pair_bits": bits, "pair_used": np.bincount(p_inv, weights=used, minlength=len(p_ids)),
        "chi2": float(np.sum(c2)), "n_used_obs": int(np.count_nonzero(used)), "cost": st.cost,
        "params": np.unique(cols[used]) if used.any() else np.zeros(0, dtype=np.int64),
    }


def star_variance(part: dict, ctx: dict, p: np.ndarray, robust: bool, chain: tuple, idx: np.ndarray,
                  cov: np.ndarray) -> np.ndarray:
    """``u_sᵀ C u_s`` per star, ``C`` the covariance block of the parameters ``idx`` it touches."""
    keep, frozen = keep_for(part, ctx, chain)
    st = _state(part, ctx, p, robust, keep, frozen)
    cols = np.searchsorted(idx, _columns(st.starts, ctx["nbs"]))
    n_s = len(part["star_ids"])
    U = np.zeros((n_s, len(idx)))
    np.add.at(U, (np.repeat(part["star"], cols.shape[1]), cols.ravel()), (st.D * st.we[:, None]).ravel())
    return np.einsum("si,ij,sj->s", U, cov, U)


def star_columns(part: dict, ctx: dict, p: np.ndarray, robust: bool, chain: tuple):
    """``U``: column ``s`` is the star's ``u_s = Σ w D`` (sparse, ``n_p × stars``), for its errors."""
    import scipy.sparse as sp

    keep, frozen = keep_for(part, ctx, chain)
    st = _state(part, ctx, p, robust, keep, frozen)
    cols = _columns(st.starts, ctx["nbs"])
    k = cols.shape[1]
    rows = np.repeat(part["star"].astype(np.int64), k)
    U = sp.coo_matrix(((st.D * st.we[:, None]).ravel(), (cols.ravel(), rows)),
                      shape=(ctx["n_p"], len(part["star_ids"])))
    return U.tocsc()


def write_residuals(part: dict, ctx: dict, p: np.ndarray, robust: bool, chain: tuple, path: str) -> int:
    """Write this partition's residual table (one Parquet file, atomically); returns its rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .._io import atomic_write

    keep, frozen = keep_for(part, ctx, chain)
    st = _state(part, ctx, p, robust, keep, frozen)
    table = pa.table({"visit": ctx["visit_ids"][part["visit"]], "detector": ctx["detector_ids_used"][part["detector"]],
                      "star": part["star_ids"][part["star"]], "x": part["x"], "y": part["y"],
                      "residual": st.r.astype(np.float32), "used": st.w > 0})
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp)
    return table.num_rows
