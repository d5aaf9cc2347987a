"""The result of a streamed joint fit: a :class:`JointSolution` without per-observation tables.

A streamed fit has no WCS per (visit, detector). Where a calibration needs the geometry of a
detector in a visit (the pixel area of a surface-brightness calibration; the visit-level factor
when it varies across the field: the monolithic visit polynomial, a grey gradient), the
solution uses the cubic map from pixels to the visit's tangent plane, and the cubic
pixel-area polynomial, fitted to that (visit, detector)'s observations during the scan (their
``ra, dec`` and ``pixel_area`` columns). Pass the WCS to :meth:`StreamedJointSolution.photo_calib`
(``wcs=``) for the exact geometry: the calibration is then what the in-memory fit returns.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import numpy as np
from astropy.table import Table

from ..errors import InputError
from ..fields import BoundedField, ChebyshevField
from ._joint_input import MAG_ERR, key
from ._joint_solution import COVERAGE_CELLS, JointSolution, fit_config
from ._joint_stream_scan import GEO_ORDER, geo_terms

__all__ = ["StreamedJointSolution", "build_solution"]


class _Cubic(BoundedField):
    """The fitted cubic pixel-area polynomial on a box (transient: approximated exactly)."""

    def __init__(self, coef, box) -> None:
        self._coef = np.asarray(coef, dtype=np.float64)
        self._box = box

    @property
    def bbox(self):
        return self._box

    def _evaluate(self, x, y):
        return (geo_terms(x.ravel(), y.ravel()) @ self._coef).reshape(x.shape)


class FittedGeometry:
    """Pixel → sky and pixel area of one (visit, detector), from the fit's cubic maps."""

    def __init__(self, coef: np.ndarray, ra0: float, dec0: float, has_area: bool, label) -> None:
        self._coef, self._centre, self._has_area, self._label = coef, (ra0, dec0), has_area, label

    def pixel_to_sky(self, x, y):
        """Degrees, through the visit's tangent plane (the cubic map fitted to the observations)."""
        from ..astrometry import tangent_to_sky

        t = geo_terms(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        return tangent_to_sky(t @ self._coef[:, 0], t @ self._coef[:, 1], *self._centre)

    def pixel_area(self, x, y):
        """Arcsec², the cubic fitted to the observations' ``pixel_area`` column."""
        if not self._has_area:
            raise InputError(f"the streamed fit had no pixel_area column for (visit, detector) {self._label}")
        return geo_terms(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)) @ self._coef[:, 2]

    def pixel_area_field(self, box) -> ChebyshevField:
        """The fitted pixel area on ``box`` (a Chebyshev field of the same order, equal to the cubic)."""
        if not self._has_area:
            raise InputError(f"the streamed fit had no pixel_area column for (visit, detector) {self._label}")
        return ChebyshevField.approximate(_Cubic(self._coef[:, 2], box), order=GEO_ORDER, bbox=box)


class _Geometries(Mapping):
    """``{(visit, detector): FittedGeometry}`` built on demand from arrays (no object per pair).

    Pairs are codes ``visit index × n_detectors + detector index``, sorted; a lookup is a
    binary search, so 10⁷ pairs cost their coefficient arrays and nothing more.
    """

    def __init__(self, visit_ids, detector_ids, codes: np.ndarray, coef: np.ndarray, ok: np.ndarray,
                 centre: np.ndarray, has_area: bool) -> None:
        self._vids, self._dids = [key(v) for v in visit_ids], [key(d) for d in detector_ids]
        self._vindex = {v: i for i, v in enumerate(self._vids)}
        self._dindex = {d: i for i, d in enumerate(self._dids)}
        self._codes, self._coef, self._ok, self._centre, self._has_area = codes, coef, ok, centre, has_area

    def _find(self, k) -> int:
        try:
            vi, di = self._vindex[k[0]], self._dindex[k[1]]
        except (KeyError, TypeError, IndexError):
            return -1
        code = vi * len(self._dids) + di
        i = int(np.searchsorted(self._codes, code))
        return i if i < len(self._codes) and self._codes[i] == code else -1

    def __getitem__(self, k):
        i = self._find(k)
        if i < 0:
            raise KeyError(k)
        if not self._ok[i]:
            raise InputError(f"(visit, detector) {k} has too few observations for the streamed fit to map its "
                             "pixels onto the sky; pass its WCS: photo_calib(visit, detector, wcs=...)")
        vi = int(self._codes[i] // len(self._dids))
        return FittedGeometry(self._coef[i], *self._centre[vi], self._has_area, k)

    def __contains__(self, k) -> bool:
        return self._find(k) >= 0

    def __iter__(self):
        n_d = len(self._dids)
        return ((self._vids[int(c) // n_d], self._dids[int(c) % n_d]) for c in self._codes)

    def __len__(self) -> int:
        return len(self._codes)


class _Override(Mapping):
    """A geometry mapping with one entry replaced (an exact WCS given by the caller)."""

    def __init__(self, base: Mapping, k, wcs) -> None:
        self._base, self._k, self._wcs = base, k, wcs

    def __getitem__(self, k):
        return self._wcs if k == self._k else self._base[k]

    def __contains__(self, k) -> bool:
        return k == self._k or k in self._base

    def __iter__(self):
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)


class StreamedJointSolution(JointSolution):
    """A :class:`JointSolution` from a streamed fit (``fit_joint(..., visits=...)``).

    Everything of :class:`JointSolution` is there except the per-observation ``residuals``
    table (empty; ``fit_joint(..., residuals=folder)`` writes it as Parquet files instead), and
    :meth:`write` needs the WCSs.
    ``photo_calib``, ``grey_field`` and ``fluence_calibration`` take an optional ``wcs``: the
    exact WCS of that (visit, detector); without it the geometry fitted to the observations is
    used (see the module documentation).
    """

    def __init__(self, *, wcs: Mapping, **kwargs) -> None:
        super().__init__(wcs={}, **kwargs)
        self._wcs = wcs  # built on demand: one geometry per (visit, detector) asked for

    def _with_wcs(self, visit, detector, wcs):
        view = copy.copy(self)
        view._wcs = _Override(self._wcs, (key(visit), key(detector)), wcs)
        view._cache = {}
        return view

    def photo_calib(self, visit, detector, wcs=None):
        if wcs is not None:
            return JointSolution.photo_calib(self._with_wcs(visit, detector, wcs), visit, detector)
        return super().photo_calib(visit, detector)

    def grey_field(self, visit, detector, wcs=None):
        if wcs is not None:
            return JointSolution.grey_field(self._with_wcs(visit, detector, wcs), visit, detector)
        return super().grey_field(visit, detector)

    def fluence_calibration(self, visit, detector, wcs=None):
        if wcs is not None:
            return JointSolution.fluence_calibration(self._with_wcs(visit, detector, wcs), visit, detector)
        return super().fluence_calibration(visit, detector)

    def write(self, path, overwrite: bool = True, *, wcs_by_detector: dict | None = None) -> None:
        """Write the solution as FITS tables (as :meth:`JointSolution.write`), with the given WCSs.

        The file format stores each (visit, detector)'s WCS, which a streamed fit never had:
        ``wcs_by_detector`` gives them (every pair in the fit). Read back with
        :meth:`JointSolution.read`, the solution's calibrations are then exactly the in-memory
        fit's; the residual table is empty (see ``residuals=`` of the fit).

        Raises
        ------
        InputError
            Without ``wcs_by_detector``, or when it lacks a pair of the fit (both named).
        """
        if wcs_by_detector is None:
            raise InputError("a streamed joint solution is written with the WCSs it was fitted without: "
                             "pass wcs_by_detector={(visit, detector): SkyWcs} to write()")
        missing = [k for k in self._wcs if k not in wcs_by_detector]
        if missing:
            raise InputError(f"wcs_by_detector has no WCS for (visit, detector) {missing[:5]}"
                             f"{' and more' if len(missing) > 5 else ''}: write() needs one for every pair in the fit")
        view = copy.copy(self)
        view._wcs = {k: wcs_by_detector[k] for k in self._wcs}
        JointSolution.write(view, path, overwrite)


def _star_table(prob, gn, model, summaries, var_cal):
    """Stars sorted by id: magnitudes, errors, counts, and the standards' zero-point offset."""
    cat = {k: np.concatenate([s[k] for s in summaries]) for k in ("star_ids", "M", "W", "n_obs", "n_used", "ref_w",
                                                                   "ref_m")}
    vc = np.concatenate(var_cal)
    order = np.argsort(cat["star_ids"], kind="stable")
    cat = {k: v[order] for k, v in cat.items()}
    vc = vc[order]
    W, M = cat["W"], cat["M"]
    mag_err = np.sqrt(1.0 / np.where(W > 0, W, np.inf) + vc / np.where(W > 0, W, 1.0) ** 2)
    zp, zp_err = 0.0, 0.0
    has_ref = cat["ref_w"] > 0
    if not model.reference_in_chi2 and np.any(has_ref & (W > 0)):
        sel = has_ref & (W > 0)
        wr = 1.0 / (1.0 / cat["ref_w"][sel] + mag_err[sel] ** 2)
        zp = float(np.sum(wr * (M[sel] - cat["ref_m"][sel])) / np.sum(wr))
        zp_err = float(1.0 / math.sqrt(np.sum(wr)))
        M = M - zp
    flux = 10 ** (-0.4 * M)
    table = Table({"star": cat["star_ids"], "flux": flux, "flux_err": flux * mag_err / MAG_ERR, "mag": M + 31.4,
                   "mag_err": mag_err, "n_obs": cat["n_obs"].astype(np.int64), "n_used": cat["n_used"]})
    table["flux"].unit = "nJy"
    table["flux_err"].unit = "nJy"
    n_ref_chi2 = int(np.count_nonzero(has_ref)) if model.reference_in_chi2 else 0
    return table, zp, zp_err, int(np.count_nonzero(W > 0)), n_ref_chi2


def build_solution(cfg, model, prob, geo, vt, gn, summaries, perr, var_cal) -> StreamedJointSolution:
    """Assemble the :class:`StreamedJointSolution` from the solver and the summary pass."""
    p = gn.p.copy()
    star_flux, zp, zp_err, n_fitted, n_ref_chi2 = _star_table(prob, gn, model, summaries, var_cal)
    if zp:
        gb = next(b for b in prob.blocks if b.name == model.visit_block)
        p[gb.offset: gb.offset + gb.n_params] *= 10 ** (0.4 * zp)
        perr = perr.copy()
        perr[gb.offset: gb.offset + gb.n_params] *= 10 ** (0.4 * zp)
    excluded_rows = list(prob.excluded)
    fitted = np.asarray(star_flux["n_used"]) > 0
    if np.any(~fitted):
        excluded_rows.append(("stars", str(int(np.count_nonzero(~fitted))), "every observation rejected as an outlier"))
        star_flux = star_flux[fitted]
    n_used_obs = sum(s["n_used_obs"] for s in summaries)
    dof = int(n_used_obs + n_ref_chi2 - n_fitted - (prob.n_p - len(gn.t)))
    n_v, n_d = len(prob.visit_ids), len(prob.detector_ids)

    def total(name):
        return np.sum([s[name] for s in summaries], axis=0)

    chi2_visit = Table({"visit": prob.visit_ids, "chi2": total("visit_chi2"),
                        "n_used": total("visit_used").astype(np.int64)})
    chi2_detector = Table({"detector": prob.detector_ids, "chi2": total("det_chi2"),
                           "n_used": total("det_used").astype(np.int64)})
    coverage, geometries = _coverage_and_geometry(prob, geo, vt, summaries, n_v, n_d, cfg, model)
    excluded = Table(rows=excluded_rows, names=("what", "id", "reason"), dtype=(str, str, str)) if excluded_rows \
        else Table(names=("what", "id", "reason"), dtype=(str, str, str))
    residuals = Table({"visit": prob.visit_ids[:0], "detector": prob.detector_ids[:0],
                       "star": np.zeros(0, dtype=np.int64), "x": np.zeros(0, np.float32), "y": np.zeros(0, np.float32),
                       "input_row": np.zeros(0, dtype=np.int64), "residual": np.zeros(0, np.float32),
                       "z": np.zeros(0, np.float32), "used": np.zeros(0, dtype=bool)})
    config = {**fit_config(cfg), "streamed": True, "n_passes": gn.n_pass}
    return StreamedJointSolution(
        model=cfg.model, kind=cfg.kind, config=config, blocks=prob.blocks, params=p, param_err=perr,
        visit_ids=prob.visit_ids, detector_ids=prob.detector_ids, epoch_ids=prob.epoch_ids,
        epdet_pairs=prob.epdet_pairs, visit_epoch=prob.visit_epoch, visit_center=prob.visit_center,
        visit_radius=prob.visit_radius, boxes=prob.boxes, wcs=geometries, star_flux=star_flux, residuals=residuals,
        chi2=gn.chi2, dof=dof, chi2_visit=chi2_visit, chi2_detector=chi2_detector, n_iter=gn.n_iter,
        converged=gn.converged, n_rejection_rounds=gn.rounds, zero_point_offset=zp, zero_point_offset_err=zp_err,
        excluded=excluded, chi2_history=gn.history, coverage=coverage)


def _coverage_and_geometry(prob, geo, vt, summaries, n_v, n_d, cfg, model):
    """The coverage table over the (visit, detector) pairs in the fit, and their geometries."""
    from ..image.kind import ImageKind

    n_dg = len(geo["detector_ids"])
    gv, gd = geo["pairs"] // n_dg, geo["pairs"] % n_dg  # geometry-visit and all-detector indices
    vt_idx = geo["visits"][gv]
    v_used = np.searchsorted(prob.visit_ids, vt["visit_ids"][vt_idx])
    v_ok = (v_used < n_v) & (prob.visit_ids[np.clip(v_used, 0, n_v - 1)] == vt["visit_ids"][vt_idx])
    d_used = np.searchsorted(prob.detector_ids, geo["detector_ids"][gd])
    d_ok = (d_used < n_d) & (prob.detector_ids[np.clip(d_used, 0, n_d - 1)] == geo["detector_ids"][gd])
    sel = np.nonzero(v_ok & d_ok)[0]
    code = v_used[sel].astype(np.int64) * n_d + d_used[sel]
    order = np.argsort(code, kind="stable")
    sel, code = sel[order], code[order]
    bits = np.zeros(len(code), dtype=np.uint64)
    used = np.zeros(len(code))
    for s in summaries:
        i = np.searchsorted(code, s["pairs"])
        bits[i] |= s["pair_bits"]
        used[i] += s["pair_used"]
    byte_bits = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
    n_cells = byte_bits[bits.view(np.uint8).reshape(-1, 8)].sum(axis=1).astype(np.float64)
    coverage = Table({"visit": prob.visit_ids[code // n_d], "detector": prob.detector_ids[code % n_d],
                      "n_used": used.astype(np.int64), "area_fraction": n_cells / float(COVERAGE_CELLS ** 2)})
    has_area = cfg.kind is ImageKind.SURFACE_BRIGHTNESS and model.pixel_area
    return coverage, _Geometries(prob.visit_ids, prob.detector_ids, code, geo["pair_coef"][sel], geo["pair_ok"][sel],
                                 prob.visit_center, has_area)
