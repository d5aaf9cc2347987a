"""The streamed joint fit's set-up on the client: from the partitions' scans to a skeleton problem.

The scans (``_joint_stream_scan.scan``) are combined into what the in-memory builder
(``_joint_problem``) derives from the whole table: visits, detectors and epochs, default boxes,
each visit's tangent-plane radius, the detectors' orientations and centres (from per-(visit,
detector) cubic fits of tangent against pixel coordinates) and from them the camera rotation
and the shared focal-plane frame; then the exclusions and the connectedness check run as passes
over the partitions, and the model's blocks are laid out. The result is a :class:`Problem` with
the visit- and detector-level arrays filled and no observations, plus the context the partitions
need to compact themselves.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ..geom import Box
from ..image.kind import ImageKind
from . import _priors
from ._joint_input import key, read_reference
from ._joint_problem import Problem, camera_rotation
from ._joint_stream_scan import N_GEO, N_GEO_SUMS, components, count_kept, geo_terms, reference_hits


def read_visits(visits) -> dict:
    """The visit table as sorted arrays ``visit_ids, ra, dec, epoch`` (epoch None when absent)."""
    import os

    import pandas as pd

    if isinstance(visits, (str, os.PathLike)):
        try:
            visits = pd.read_parquet(os.fspath(visits))
        except (OSError, ValueError) as exc:
            raise InputError(f"visits {os.fspath(visits)!r}: cannot read as Parquet ({exc})") from exc
    if hasattr(visits, "colnames"):  # an astropy Table
        visits = visits.to_pandas()
    if not hasattr(visits, "columns"):
        raise InputError("visits must be a pandas DataFrame, an astropy Table or a Parquet file path "
                         "with columns visit, ra, dec (the pointing, degrees) and optionally epoch")
    for c in ("visit", "ra", "dec"):
        if c not in visits.columns:
            raise InputError(f"visits table has no column {c!r}; it needs visit, ra, dec (the pointing, degrees)")
    ids = visits["visit"].to_numpy()
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    dup = ids[1:][ids[1:] == ids[:-1]]
    if dup.size:
        raise InputError(f"visits table lists visit(s) {[key(v) for v in np.unique(dup)[:5]]} more than once; "
                         "keep one pointing per visit")
    ra = visits["ra"].to_numpy(dtype=np.float64)[order]
    dec = visits["dec"].to_numpy(dtype=np.float64)[order]
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec)) and np.all(np.abs(dec) <= 90)):
        raise InputError("visits table: ra and dec must be finite degrees with |dec| <= 90")
    epoch = visits["epoch"].to_numpy()[order] if "epoch" in visits.columns else None
    return {"visit_ids": ids, "ra": ra, "dec": dec, "epoch": epoch}


def check_whole_stars(scans: list[dict]) -> None:
    """Refuse a star whose rows are in two partitions, naming it and both partitions."""
    ids = np.concatenate([s["star_ids"] for s in scans]) if scans else np.zeros(0, dtype=np.int64)
    owner = np.repeat(np.arange(len(scans)), [len(s["star_ids"]) for s in scans])
    order = np.argsort(ids, kind="stable")
    same = ids[order][1:] == ids[order][:-1]
    if same.any():
        i = int(np.nonzero(same)[0][0])
        star = ids[order][i]
        a, b = scans[owner[order][i]]["name"], scans[owner[order][i + 1]]["name"]
        n = len(np.unique(ids[order][1:][same]))
        raise InputError(
            f"star {key(star)} has rows in two partitions of the observations ({a} and {b}; {n} stars are split); "
            "a streamed fit needs every star's rows in one partition: partition by star (e.g. "
            "photocalib.fit.partition_by_star(dataframe)) or by the star's sky cell")


def _pair_geometry(scans: list[dict], n_d: int, det_ids: np.ndarray, visit_index: np.ndarray):
    """Summed cubic-fit statistics per (visit, detector) and the fitted maps."""
    codes = np.concatenate([visit_index[s["pair_visit"]].astype(np.int64) * n_d
                            + np.searchsorted(det_ids, s["pair_detector"]) for s in scans])
    sums = np.concatenate([s["pair_sums"] for s in scans])
    pairs, inv = np.unique(codes, return_inverse=True)
    total = np.zeros((len(pairs), N_GEO_SUMS))
    np.add.at(total, inv, sums)
    iu, ju = np.triu_indices(N_GEO)
    A = np.zeros((len(pairs), N_GEO, N_GEO))
    A[:, iu, ju] = total[:, : len(iu)]
    A[:, ju, iu] = total[:, : len(iu)]
    rhs = total[:, len(iu):].reshape(len(pairs), 3, N_GEO).transpose(0, 2, 1)
    n_obs = A[:, 0, 0]
    scale = np.einsum("pii->pi", A)
    # a pair with fewer observations than terms (or all on a line) has no map
    ok = n_obs >= N_GEO
    coef = np.zeros((len(pairs), N_GEO, 3))
    if ok.any():
        d = np.sqrt(np.where(scale[ok] > 0, scale[ok], 1.0))
        An = A[ok] / d[:, :, None] / d[:, None, :]
        cond = np.linalg.cond(An)
        good = np.nonzero(ok)[0][cond < 1e12]
        d = np.sqrt(np.where(scale[good] > 0, scale[good], 1.0))
        An = A[good] / d[:, :, None] / d[:, None, :]
        coef[good] = np.linalg.solve(An, rhs[good] / d[:, :, None]) / d[:, :, None]
        ok[:] = False
        ok[good] = True
    return pairs, coef, ok


def geometry(scans: list[dict], vt: dict, bboxes) -> dict:
    """Visits, detectors, epochs, boxes, radii, rotations and the focal-plane frame (see module doc)."""
    vis = np.unique(np.concatenate([s["visits"] for s in scans]))
    visit_index = np.full(len(vt["visit_ids"]), -1, dtype=np.int64)
    visit_index[vis] = np.arange(len(vis))
    n_v = len(vis)
    epoch = np.zeros(n_v, dtype=object)
    seen = np.zeros(n_v, dtype=bool)
    bad = [vt["visit_ids"][b] for s in scans for b in s["visit_bad_epoch"]]
    for s in scans:
        i = visit_index[s["visits"]]
        clash = seen[i] & (epoch[i] != s["visit_epoch"])
        bad.extend(vt["visit_ids"][s["visits"][clash]])
        epoch[i] = s["visit_epoch"]
        seen[i] = True
    if bad:
        raise InputError(f"observations column 'epoch' varies within visit(s) {[key(v) for v in bad[:5]]}; "
                         "an epoch is a set of whole visits")
    epoch = np.asarray(epoch.tolist())
    det_ids = np.unique(np.concatenate([s["detectors"] for s in scans]))
    n_d = len(det_ids)
    ext = np.full((n_d, 4), np.nan)
    ext[:, [0, 2]] = np.inf
    ext[:, [1, 3]] = -np.inf
    for s in scans:
        i = np.searchsorted(det_ids, s["detectors"])
        ext[i, 0] = np.fmin(ext[i, 0], s["extent"][:, 0])
        ext[i, 1] = np.fmax(ext[i, 1], s["extent"][:, 1])
        ext[i, 2] = np.fmin(ext[i, 2], s["extent"][:, 2])
        ext[i, 3] = np.fmax(ext[i, 3], s["extent"][:, 3])
    boxes = {}
    for di, did in enumerate(det_ids):
        k = key(did)
        if bboxes is not None and k in bboxes:
            boxes[k] = bboxes[k]
            continue
        x0 = int(math.floor(min(0.0, ext[di, 0]) + 0.5))
        y0 = int(math.floor(min(0.0, ext[di, 2]) + 0.5))
        boxes[k] = Box(x0, y0, int(math.ceil(ext[di, 1] + 0.5)) - x0, int(math.ceil(ext[di, 3] + 0.5)) - y0)
    radius = np.zeros(n_v)
    for s in scans:
        i = visit_index[s["visits"]]
        np.maximum.at(radius, i, s["visit_radius"])
    pairs, coef, ok = _pair_geometry(scans, n_d, det_ids, visit_index)
    pv, pd_ = pairs // n_d, pairs % n_d
    orient = np.zeros((n_v, n_d), dtype=np.complex128)
    centre_t = np.full((n_v, n_d), np.nan, dtype=np.complex128)
    box_ext = np.array([boxes[key(d)].extent for d in det_ids], dtype=np.float64)
    xmin, xmax, ymin, ymax = (box_ext[pd_, j] for j in range(4))
    xm, ym = 0.5 * (xmin + xmax), 0.5 * (ymin + ymax)
    px = np.stack([xmin, xmax, xmin, xmax, xm, xm, xmin, xmax], axis=1)
    py = np.stack([ymin, ymin, ymax, ymax, ymin, ymax, ym, ym], axis=1)
    t = geo_terms(px, py)  # (n_pairs, 8, 6)
    cxi = np.einsum("pki,pi->pk", t, coef[:, :, 0])
    ceta = np.einsum("pki,pi->pk", t, coef[:, :, 1])
    corner = np.max(np.maximum(np.abs(cxi), np.abs(ceta)), axis=1)
    np.maximum.at(radius, pv[ok], corner[ok])
    orient[pv[ok], pd_[ok]] = np.exp(1j * np.arctan2(ceta[ok, 7] - ceta[ok, 6], cxi[ok, 7] - cxi[ok, 6]))
    centre_t[pv[ok], pd_[ok]] = 0.5 * (cxi[ok, 6] + cxi[ok, 7]) + 0.5j * (ceta[ok, 6] + ceta[ok, 7])
    rotation = camera_rotation(orient)
    offset, _ = _priors.focal_plane_frame(centre_t, rotation)
    return {"visits": vis, "visit_index": visit_index, "visit_epoch": epoch, "detector_ids": det_ids,
            "epoch_ids": np.unique(epoch), "boxes": boxes, "radius": radius * (1.0 + 1e-9),
            "rotation": rotation, "frame_offset": offset, "pairs": pairs, "pair_coef": coef, "pair_ok": ok}


def _sum_counts(a: dict, b: dict) -> dict:
    return {k: a[k] + b[k] for k in a}


def exclusions(ex, raw, scans, geo, vt, cfg, model, reference) -> dict:
    """Run the in-memory fit's exclusions as passes; returns the context for compaction."""
    excluded: list[tuple[str, str, str]] = []
    reasons: dict[str, int] = {}
    for s in scans:
        for reason, nb in s["excluded"]:
            reasons[reason] = reasons.get(reason, 0) + nb
    excluded.extend(("observations", str(nb), reason) for reason, nb in reasons.items())
    if sum(s["n_valid"] for s in scans) == 0:
        raise InputError("no usable observations: every row has a non-finite or non-positive x, y, instflux or "
                         "instflux_err")
    ref = None
    if reference is not None:
        rs, rf, re = read_reference(reference, excluded)
        o = np.argsort(rs, kind="stable")
        ref = (np.asarray(rs)[o], rf[o], re[o])
    elif model.needs_reference:
        raise InputError(f"model={model.name!r} needs a reference catalogue (Table with star, flux, flux_err); "
                         "use model='reference-free' to fit without one")
    n_d, n_e = len(geo["detector_ids"]), len(geo["epoch_ids"])
    n_vt = len(vt["visit_ids"])
    det_group = model.detector_group
    n_groups = n_e * n_d if det_group == "epoch_detector" else n_d
    ctx = {"detector_ids": geo["detector_ids"], "epoch_ids": geo["epoch_ids"], "detector_group": det_group,
           "visit_out": np.zeros(n_vt, dtype=bool), "group_out": np.zeros(n_groups, dtype=bool),
           "reference_in_chi2": model.reference_in_chi2, "reference": ref}
    present_v = np.zeros(n_vt, dtype=bool)
    present_v[geo["visits"]] = True
    pv, pd_ = geo["pairs"] // n_d, geo["pairs"] % n_d
    ep = np.searchsorted(geo["epoch_ids"], geo["visit_epoch"][pv])
    present_g = np.zeros(n_groups, dtype=bool)
    present_g[ep * n_d + pd_ if det_group == "epoch_detector" else pd_] = True
    need_v, need_g = cfg._min_obs(model.n_params("visit")), cfg._min_obs(model.n_params("detector"))
    for _ in range(100):
        cnt = ex.reduce_placed(count_kept, raw, _sum_counts, ctx)
        changed = False
        for name, c, present, need, out in (("visit", cnt["visit"], present_v, need_v, ctx["visit_out"]),
                                            ("detector", cnt["group"], present_g, need_g, ctx["group_out"])):
            low = present & (c < need) & ~out
            for g in np.nonzero(low)[0]:
                excluded.append((name, _label(name, g, vt, geo, det_group), f"only {c[g]} usable observations (< {need})"))
            out |= low
            changed |= bool(low.any())
        if not changed:
            break
    n_single = sum(s["n_single"] for s in scans)
    if n_single:
        excluded.append(("stars", str(n_single), "seen once (no constraint on the calibration)"))
    kept_v = cnt["visit"] > 0
    if not kept_v.any():
        raise InputError("no observations left after excluding stars seen once and visits/detectors with too few stars")
    _check_connected(ex, raw, ctx, kept_v, vt)
    if ref is not None and sum(ex.map_placed(reference_hits, raw, ctx)) == 0:
        what = "reference" if model.reference_in_chi2 else "standard"
        raise InputError(f"no {what} star matches a fitted star (reference column 'star' vs observations "
                         "column 'star'); check the identifiers")
    ctx["excluded"] = excluded
    ctx["counts"] = cnt
    return ctx


def _label(name, g, vt, geo, det_group) -> str:
    if name == "visit":
        return f"visit {key(vt['visit_ids'][g])}"
    n_d = len(geo["detector_ids"])
    if det_group == "detector":
        return f"detector {key(geo['detector_ids'][g])}"
    return f"detector {key(geo['detector_ids'][g % n_d])} (epoch {key(geo['epoch_ids'][g // n_d])})"


def _check_connected(ex, raw, ctx, kept_v, vt) -> None:
    """Each connected set of visits has its own zero point: refuse more than one."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(kept_v)
    a, b = [], []
    for comps in ex.map_placed(components, raw, ctx):
        for c in comps:
            a.append(c[:-1])
            b.append(c[1:])
    a = np.concatenate(a) if a else np.zeros(0, dtype=np.int64)
    b = np.concatenate(b) if b else np.zeros(0, dtype=np.int64)
    _, lab = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)
    kv = np.nonzero(kept_v)[0]
    labs, counts = np.unique(lab[kv], return_counts=True)
    if len(labs) > 1:
        others = vt["visit_ids"][kv[lab[kv] != labs[np.argmax(counts)]]]
        raise InputError(
            f"the visits are not connected by common stars: visits {[key(v) for v in others[:10]]} share no star "
            f"with the rest; fit them separately or drop them")


def skeleton(cfg, model, vt, geo, ctx, has_colour: bool) -> tuple[Problem, dict]:
    """The :class:`Problem` without observations, and the partitions' compaction context."""
    cnt = ctx["counts"]
    n_d, n_e = len(geo["detector_ids"]), len(geo["epoch_ids"])
    v_used = np.nonzero(cnt["visit"] > 0)[0]  # visit-table indices
    epdet_cnt = cnt["epdet"]
    ed_used = np.nonzero(epdet_cnt > 0)[0]
    d_used = np.unique(ed_used % n_d)
    e_used = np.unique(ed_used // n_d)
    epdet_pairs = np.stack([np.searchsorted(e_used, ed_used // n_d), np.searchsorted(d_used, ed_used % n_d)], axis=1)
    blocks = model.blocks(len(ed_used), len(d_used), len(v_used), has_colour)
    gi = geo["visit_index"][v_used]
    visit_map = np.full(len(vt["visit_ids"]), -1, dtype=np.int64)
    visit_map[v_used] = np.arange(len(v_used))
    det_map = np.full(n_d, -1, dtype=np.int64)
    det_map[d_used] = np.arange(len(d_used))
    epdet_map = np.full(n_e * n_d, -1, dtype=np.int64)
    epdet_map[ed_used] = np.arange(len(ed_used))
    det_ids = geo["detector_ids"][d_used]
    boxes = {key(d): geo["boxes"][key(d)] for d in det_ids}
    radius_vt = np.ones(len(vt["visit_ids"]))
    radius_vt[geo["visits"]] = geo["radius"]
    visit_epoch_e = np.searchsorted(geo["epoch_ids"], geo["visit_epoch"][gi])
    prob = Problem(
        model=model.name, kind=cfg.kind, blocks=blocks, n_p=sum(b.n_params for b in blocks),
        ptr=np.zeros(1, dtype=np.int64), star=np.zeros(0, dtype=np.int32), visit=np.zeros(0, dtype=np.int32),
        detector=np.zeros(0, dtype=np.int32), epdet=np.zeros(0, dtype=np.int32), pu=np.zeros(0, np.float32),
        pv=np.zeros(0, np.float32), tu=np.zeros(0, np.float32), tv=np.zeros(0, np.float32), m=np.zeros(0),
        sigma2=np.zeros(0, np.float32), colour=None, starts=np.zeros((0, len(blocks)), dtype=np.int64),
        nbs=np.array([b.n_basis for b in blocks], dtype=np.int64), x=np.zeros(0, np.float32),
        y=np.zeros(0, np.float32), input_row=np.zeros(0, dtype=np.int64), visit_ids=vt["visit_ids"][v_used],
        detector_ids=det_ids, star_ids=np.zeros(0, dtype=np.int64), epoch_ids=geo["epoch_ids"][e_used],
        epdet_pairs=epdet_pairs, visit_epoch=np.searchsorted(e_used, visit_epoch_e),
        visit_center=np.stack([vt["ra"][v_used], vt["dec"][v_used]], axis=1), visit_radius=geo["radius"][gi],
        visit_rotation=geo["rotation"][gi], frame_offset=geo["frame_offset"][gi], boxes=boxes, wcs={},
        ref_w=np.zeros(0), ref_m=np.zeros(0), star_colour=None, chunks=[], excluded=ctx["excluded"],
    )
    need_area = cfg.kind is ImageKind.SURFACE_BRIGHTNESS and model.pixel_area
    cctx = dict(ctx, visit_map=visit_map, detector_map=det_map, epdet_map=epdet_map,
                extent=np.array([b.extent for b in boxes.values()], dtype=np.float64),
                radius=radius_vt, need_area=need_area, chromatic=cfg.chromatic_order is not None)
    cctx.pop("excluded")
    cctx.pop("counts")
    return prob, cctx
