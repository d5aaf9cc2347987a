"""The joint fit's problem builder: observations in star order, one focal-plane frame, the blocks.

:func:`build_problem` turns the validated input into a :class:`Problem`: sky and tangent-plane
positions from the WCSs, the visits' pointings and radii, the focal-plane frame shared by all
visits (:func:`._priors.focal_plane_frame`), the exclusion of under-constrained stars, visits and
detectors, the model's parameter blocks, and the map's chunks of whole visits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..geom import Box
from ..image.kind import ImageKind
from . import _priors
from ._joint_input import MAG_ERR, key, read_observations, read_reference


@dataclass
class Problem:
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

    def describe(self, j: int) -> str:
        """Which factor of which visit or detector parameter ``j`` belongs to (for messages)."""
        for b in self.blocks:
            if b.offset <= j < b.offset + b.n_params:
                g = (j - b.offset) // b.n_basis
                if b.group == "visit":
                    return f"{b.name} term of visit {key(self.visit_ids[g])}"
                if b.group == "detector":
                    return f"{b.name} term of detector {key(self.detector_ids[g])}"
                e, d = self.epdet_pairs[g]
                return f"{b.name} term of detector {key(self.detector_ids[d])} (epoch {key(self.epoch_ids[e])})"
        return f"parameter {j}"


def _unit_vector(ra, dec):
    ra = np.deg2rad(ra)
    dec = np.deg2rad(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def camera_rotation(orient: np.ndarray) -> np.ndarray:
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


class _Builder:
    """Stages of :func:`build_problem`, sharing the arrays they derive as attributes."""

    def __init__(self, cfg, model, observations, wcs_by_detector, reference, bboxes) -> None:
        self.cfg = cfg
        self.model = model
        self.inp = read_observations(observations, cfg.chromatic_order is not None, cfg.error_floor)
        self.excluded = self.inp["excluded"]
        cols, row = self.inp["cols"], self.inp["row"]
        self.row = row
        self.visit_ids, self.visit = np.unique(np.asarray(cols["visit"])[row], return_inverse=True)
        self.det_ids, self.det = np.unique(np.asarray(cols["detector"])[row], return_inverse=True)
        self.star_ids_all, self.star = np.unique(np.asarray(cols["star"])[row], return_inverse=True)
        self.x = cols["x"][row]
        self.y = cols["y"][row]
        self.epoch_ids, self.epoch = np.unique(self.inp["epoch"], return_inverse=True)
        # epoch must be a property of the visit
        ve = np.zeros(len(self.visit_ids), dtype=np.int64)
        ve[self.visit] = self.epoch
        if np.any(ve[self.visit] != self.epoch):
            bad_v = self.visit_ids[np.unique(self.visit[ve[self.visit] != self.epoch])]
            raise InputError(f"observations column 'epoch' varies within visit(s) {[key(v) for v in bad_v[:5]]}; "
                             "an epoch is a set of whole visits")
        self.visit_epoch_all = ve
        self._wcs_and_boxes(wcs_by_detector, bboxes)
        self.ref = None
        if reference is not None:
            self.ref = read_reference(reference, self.excluded)
        elif model.needs_reference:
            raise InputError(f"model={model.name!r} needs a reference catalogue (Table with star, flux, flux_err); "
                             "use model='reference-free' to fit without one")

    def _wcs_and_boxes(self, wcs_by_detector, bboxes) -> None:
        if not isinstance(wcs_by_detector, dict):
            raise InputError("wcs_by_detector must be a dict {(visit, detector): SkyWcs}")
        n_d = len(self.det_ids)
        pair = self.visit.astype(np.int64) * n_d + self.det
        self.upairs, self.pair_inv = np.unique(pair, return_inverse=True)
        self.wcs = {}
        missing = []
        for up in self.upairs:
            k = (key(self.visit_ids[up // n_d]), key(self.det_ids[up % n_d]))
            w = wcs_by_detector.get(k)
            if w is None:
                missing.append(k)
            self.wcs[k] = w
        if missing:
            raise InputError(
                f"wcs_by_detector has no WCS for (visit, detector) {missing[:5]}"
                f"{' and more' if len(missing) > 5 else ''}; add them or drop those observations")
        self.boxes = {}
        for di, did in enumerate(self.det_ids):
            k = key(did)
            if bboxes is not None and k in bboxes:
                self.boxes[k] = bboxes[k]
                continue
            sel = self.det == di
            x0 = int(math.floor(min(0.0, self.x[sel].min()) + 0.5))
            y0 = int(math.floor(min(0.0, self.y[sel].min()) + 0.5))
            self.boxes[k] = Box(x0, y0, int(math.ceil(self.x[sel].max() + 0.5)) - x0,
                                int(math.ceil(self.y[sel].max() + 0.5)) - y0)

    def _pairs(self):
        n_d = len(self.det_ids)
        for i, up in enumerate(self.upairs):
            vi, di = int(up // n_d), int(up % n_d)
            yield i, vi, di, (key(self.visit_ids[vi]), key(self.det_ids[di]))

    def sky(self) -> None:
        """Sky positions and pixel areas of the observations; each visit's mean pointing."""
        n = len(self.row)
        order = np.argsort(self.pair_inv, kind="stable")
        bounds = np.searchsorted(self.pair_inv[order], np.arange(len(self.upairs) + 1))
        self.ra = np.empty(n)
        self.dec = np.empty(n)
        need_area = self.cfg.kind is ImageKind.SURFACE_BRIGHTNESS and self.model.pixel_area
        given = self.inp["pixel_area"]
        self.log_area = np.zeros(n)
        if need_area and given is not None:
            self.log_area = 2.5 * np.log10(given)  # the table's own pixel areas (arcsec²)
        centre_vec = np.zeros((len(self.visit_ids), 3))
        for i, vi, _di, k in self._pairs():
            idx = order[bounds[i]:bounds[i + 1]]
            w = self.wcs[k]
            self.ra[idx], self.dec[idx] = w.pixel_to_sky(self.x[idx], self.y[idx])
            if need_area and given is None:
                a = np.asarray(w.pixel_area(self.x[idx], self.y[idx]), dtype=np.float64)
                if not np.all(np.isfinite(a) & (a > 0)):
                    raise InputError(f"WCS of (visit, detector) {k} gives a non-positive or non-finite pixel area")
                self.log_area[idx] = 2.5 * np.log10(a)
            cx, cy = self.boxes[k[1]].center
            centre_vec[vi] += _unit_vector(*w.pixel_to_sky(cx, cy))
        if not (np.all(np.isfinite(self.ra)) and np.all(np.isfinite(self.dec))):
            raise InputError("a WCS returned non-finite sky positions for some observations")
        centre_vec /= np.linalg.norm(centre_vec, axis=1)[:, None]
        self.v_ra = np.rad2deg(np.arctan2(centre_vec[:, 1], centre_vec[:, 0])) % 360.0
        self.v_dec = np.rad2deg(np.arcsin(np.clip(centre_vec[:, 2], -1, 1)))

    def frames(self) -> None:
        """Tangent-plane coordinates per visit, the visits' radii and the shared focal-plane frame."""
        from ..astrometry import sky_to_tangent

        n_v, n_d = len(self.visit_ids), len(self.det_ids)
        radius = np.zeros(n_v)
        orient = np.zeros((n_v, n_d), dtype=np.complex128)
        centre_t = np.full((n_v, n_d), np.nan, dtype=np.complex128)
        # visit radius from the corners and edge midpoints of its detector boxes
        for _i, vi, di, k in self._pairs():
            xmin, xmax, ymin, ymax = self.boxes[k[1]].extent
            xm, ym = 0.5 * (xmin + xmax), 0.5 * (ymin + ymax)
            px = np.array([xmin, xmax, xmin, xmax, xm, xm, xmin, xmax])
            py = np.array([ymin, ymin, ymax, ymax, ymin, ymax, ym, ym])
            cxi, ceta = sky_to_tangent(*self.wcs[k].pixel_to_sky(px, py), self.v_ra[vi], self.v_dec[vi])
            radius[vi] = max(radius[vi], float(np.max(np.abs(cxi))), float(np.max(np.abs(ceta))))
            # direction of the detector's x axis on the visit's tangent plane, and its centre
            orient[vi, di] = np.exp(1j * math.atan2(ceta[7] - ceta[6], cxi[7] - cxi[6]))
            centre_t[vi, di] = 0.5 * (cxi[6] + cxi[7]) + 0.5j * (ceta[6] + ceta[7])
        self.visit_rotation = camera_rotation(orient)
        self.frame_offset, _ = _priors.focal_plane_frame(centre_t, self.visit_rotation)
        xi = np.empty(len(self.row))
        eta = np.empty(len(self.row))
        vorder = np.argsort(self.visit, kind="stable")
        vb = np.searchsorted(self.visit[vorder], np.arange(n_v + 1))
        for vi in range(n_v):
            idx = vorder[vb[vi]:vb[vi + 1]]
            xi[idx], eta[idx] = sky_to_tangent(self.ra[idx], self.dec[idx], self.v_ra[vi], self.v_dec[vi])
            radius[vi] = max(radius[vi], float(np.max(np.abs(xi[idx]))), float(np.max(np.abs(eta[idx]))))
        self.radius = radius * (1.0 + 1e-9)
        self.tu = xi / self.radius[self.visit]
        self.tv = eta / self.radius[self.visit]
        # pixel coordinates on [-1, 1] from each detector's box (as ChebyshevField does)
        ext = np.array([self.boxes[key(d)].extent for d in self.det_ids])
        self.pu = (self.x - ext[self.det, 0]) * (2.0 / (ext[self.det, 1] - ext[self.det, 0])) - 1.0
        self.pv = (self.y - ext[self.det, 2]) * (2.0 / (ext[self.det, 3] - ext[self.det, 2])) - 1.0

    def exclude(self) -> np.ndarray:
        """Iteratively drop stars seen once and visits/detectors with too few observations."""
        cfg, model = self.cfg, self.model
        star, n_s = self.star, len(self.star_ids_all)
        keep = np.ones(len(self.row), dtype=bool)
        ref_star = np.zeros(n_s, dtype=bool) if self.ref is None else np.isin(self.star_ids_all, self.ref[0])
        n_d = len(self.det_ids)
        self.epdet_raw = self.epoch.astype(np.int64) * n_d + self.det
        det_group = self.epdet_raw if model.detector_group == "epoch_detector" else self.det
        groups = (("visit", self.visit, model.n_params("visit")), ("detector", det_group, model.n_params("detector")))
        reported = {"visit": np.zeros(len(self.visit_ids), dtype=bool),
                    "detector": np.zeros(max(n_d, int(self.epdet_raw.max()) + 1), dtype=bool)}
        for _ in range(100):
            changed = False
            ns = np.bincount(star[keep], minlength=n_s)
            # a star needs two observations, or one plus a reference flux in χ², to say anything
            # about the calibration
            ok_star = (ns >= 2) | ((ns >= 1) & ref_star & model.reference_in_chi2)
            drop = keep & ~ok_star[star]
            if drop.any():
                keep &= ~drop
                changed = True
            for name, gidx, npar in groups:
                need = cfg._min_obs(npar)
                cnt = np.bincount(gidx[keep], minlength=int(gidx.max()) + 1)
                present = np.bincount(gidx, minlength=len(cnt)) > 0
                low = present & (cnt < need) & ~reported[name][: len(cnt)]
                if low.any():
                    reported[name][np.nonzero(low)[0]] = True
                    for g in np.nonzero(low)[0]:
                        self.excluded.append((name, self._label(name, g), f"only {cnt[g]} usable observations (< {need})"))
                    keep &= ~low[gidx]
                    changed = True
            if not changed:
                break
        n_single = int(np.count_nonzero(np.bincount(star, minlength=n_s) == 1))
        if n_single:
            self.excluded.append(("stars", str(n_single), "seen once (no constraint on the calibration)"))
        if not keep.any():
            raise InputError("no observations left after excluding stars seen once and visits/detectors with too few stars")
        self._check_connected(keep)
        return keep

    def _label(self, name: str, g: int) -> str:
        if name == "visit":
            return f"visit {key(self.visit_ids[g])}"
        if self.model.detector_group == "detector":
            return f"detector {key(self.det_ids[g])}"
        n_d = len(self.det_ids)
        return f"detector {key(self.det_ids[g % n_d])} (epoch {key(self.epoch_ids[g // n_d])})"

    def _check_connected(self, keep) -> None:
        """Each connected set of visits has its own zero point: refuse more than one."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        ks, kv = self.star[keep], self.visit[keep]
        n_s = len(self.star_ids_all)
        graph = coo_matrix((np.ones(len(ks)), (ks, n_s + kv)), shape=(n_s + len(self.visit_ids),) * 2)
        _, lab = connected_components(graph, directed=False)
        vis_lab = lab[n_s + np.unique(kv)]
        if len(np.unique(vis_lab)) > 1:
            labs, counts = np.unique(vis_lab, return_counts=True)
            others = self.visit_ids[np.unique(kv)][vis_lab != labs[np.argmax(counts)]]
            raise InputError(
                f"the visits are not connected by common stars: visits {[key(v) for v in others[:10]]} share no star "
                f"with the rest; fit them separately or drop them")

    def compact(self, keep) -> Problem:
        """The kept observations sorted by star, with compact indices, blocks and chunks."""
        n_d = len(self.det_ids)
        idx = np.nonzero(keep)[0]
        idx = idx[np.argsort(self.star[idx], kind="stable")]
        s_ids, s_idx = np.unique(self.star[idx], return_inverse=True)
        v_used, v_idx = np.unique(self.visit[idx], return_inverse=True)
        d_used, d_idx = np.unique(self.det[idx], return_inverse=True)
        ed_used, ed_idx = np.unique(self.epdet_raw[idx], return_inverse=True)
        e_used = np.unique(self.epoch[idx])
        epdet_pairs = np.stack([np.searchsorted(e_used, ed_used // n_d), np.searchsorted(d_used, ed_used % n_d)], axis=1)
        blocks = self.model.blocks(len(ed_used), len(d_used), len(v_used), self.inp["colour"] is not None)
        groups = {"epoch_detector": ed_idx, "detector": d_idx, "visit": v_idx}
        starts = np.empty((len(idx), len(blocks)), dtype=np.int64)
        for bi, b in enumerate(blocks):
            starts[:, bi] = b.offset + groups[b.group] * b.n_basis
        ptr = np.searchsorted(s_idx, np.arange(len(s_ids) + 1)).astype(np.int64)
        star_ids = self.star_ids_all[s_ids]
        ref_w, ref_m = self._reference_weights(star_ids)
        star_colour = None
        if self.inp["colour"] is not None:
            star_colour = np.bincount(s_idx, weights=self.inp["colour"][idx], minlength=len(s_ids)) / np.diff(ptr)
        visit_ids, det_ids = self.visit_ids[v_used], self.det_ids[d_used]
        vs, ds = {key(v) for v in visit_ids}, {key(d) for d in det_ids}
        f32 = np.float32
        return Problem(
            model=self.model.name, kind=self.cfg.kind, blocks=blocks, n_p=sum(b.n_params for b in blocks), ptr=ptr,
            star=s_idx.astype(np.int32), visit=v_idx.astype(np.int32), detector=d_idx.astype(np.int32),
            epdet=ed_idx.astype(np.int32), pu=self.pu[idx].astype(f32), pv=self.pv[idx].astype(f32),
            tu=self.tu[idx].astype(f32), tv=self.tv[idx].astype(f32), m=(self.inp["mag"] - self.log_area)[idx],
            sigma2=self.inp["sigma2"][idx].astype(f32),
            colour=None if star_colour is None or self.cfg.chromatic_order is None else star_colour[s_idx],
            starts=starts, nbs=np.array([b.n_basis for b in blocks], dtype=np.int64),
            x=self.x[idx].astype(f32), y=self.y[idx].astype(f32), input_row=self.row[idx],
            visit_ids=visit_ids, detector_ids=det_ids, star_ids=star_ids, epoch_ids=self.epoch_ids[e_used],
            epdet_pairs=epdet_pairs, visit_epoch=np.searchsorted(e_used, self.visit_epoch_all[v_used]),
            visit_center=np.stack([self.v_ra[v_used], self.v_dec[v_used]], axis=1), visit_radius=self.radius[v_used],
            visit_rotation=self.visit_rotation[v_used], frame_offset=self.frame_offset[v_used],
            boxes={key(d): self.boxes[key(d)] for d in det_ids},
            wcs={k: w for k, w in self.wcs.items() if k[0] in vs and k[1] in ds},
            ref_w=ref_w, ref_m=ref_m, star_colour=star_colour, chunks=_chunks(v_idx, len(v_used), self.cfg.chunk_size),
            excluded=self.excluded,
        )

    def _reference_weights(self, star_ids) -> tuple[np.ndarray, np.ndarray]:
        ref_w = np.zeros(len(star_ids))
        ref_m = np.zeros(len(star_ids))
        if self.ref is not None:
            rs, rf, re = self.ref
            pos = np.clip(np.searchsorted(star_ids, rs), 0, len(star_ids) - 1)
            hit = star_ids[pos] == rs
            if not hit.any():
                what = "reference" if self.model.reference_in_chi2 else "standard"
                raise InputError(f"no {what} star matches a fitted star (reference column 'star' vs observations "
                                 "column 'star'); check the identifiers")
            ref_m[pos[hit]] = -2.5 * np.log10(rf[hit])
            ref_w[pos[hit]] = 1.0 / (MAG_ERR * re[hit] / rf[hit]) ** 2
        return ref_w, ref_m


def _chunks(v_idx: np.ndarray, n_visits: int, chunk_size: int) -> list[np.ndarray]:
    """Map chunks: whole visits, about ``chunk_size`` observations each."""
    vorder = np.argsort(v_idx, kind="stable")
    vb = np.searchsorted(v_idx[vorder], np.arange(n_visits + 1))
    chunks, cur, cur_n = [], [], 0
    for vi in range(n_visits):
        part = vorder[vb[vi]:vb[vi + 1]]
        cur.append(part)
        cur_n += len(part)
        if cur_n >= chunk_size:
            chunks.append(np.sort(np.concatenate(cur)))
            cur, cur_n = [], 0
    if cur:
        chunks.append(np.sort(np.concatenate(cur)))
    return chunks


def build_problem(cfg, model, observations, wcs_by_detector, reference, bboxes) -> Problem:
    """The :class:`Problem` of a joint fit (see the module docstring).

    Parameters
    ----------
    cfg : JointCalibrator
        Orders, switches, error floor, chunk size.
    model : jointmodels.JointModel
        The model family (its blocks, reference and pixel-area rules).
    observations, wcs_by_detector, reference, bboxes
        As for :meth:`JointCalibrator.fit`.
    """
    b = _Builder(cfg, model, observations, wcs_by_detector, reference, bboxes)
    b.sky()
    b.frames()
    return b.compact(b.exclude())
