"""The joint fit's result: per-(visit, detector) PhotoCalibs, star fluxes, diagnostics, FITS I/O."""

from __future__ import annotations

import os

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..calib import AB_ZERO_POINT_NJY_MAG
from ..errors import InputError
from ..fields import BoundedField, ChebyshevField, ConstantField, ProductField
from ..geom import Box
from ..image.kind import ImageKind
from . import jointmodels
from ._joint_input import MAG_ERR, key
from ._joint_model import Block, cheb_basis, coefficients_to_matrix
from ._joint_problem import Problem

__all__ = ["COVERAGE_CELLS", "JointSolution"]

#: Cells per axis of the grid on which :attr:`JointSolution.coverage` counts a detector's area.
COVERAGE_CELLS = 8


def coverage_table(prob: Problem, used: np.ndarray) -> Table:
    """Per (visit, detector) seen: used observations and the fraction of its area they constrain.

    The detector box is cut into ``COVERAGE_CELLS``² equal cells; a cell is constrained when it
    holds at least one used observation of that (visit, detector).
    """
    n = COVERAGE_CELLS
    n_d = len(prob.detector_ids)
    ext = np.array([prob.boxes[key(d)].extent for d in prob.detector_ids], dtype=np.float64)
    e = ext[prob.detector]
    cx = np.clip(((prob.x - e[:, 0]) / (e[:, 1] - e[:, 0]) * n).astype(np.int64), 0, n - 1)
    cy = np.clip(((prob.y - e[:, 2]) / (e[:, 3] - e[:, 2]) * n).astype(np.int64), 0, n - 1)
    pair = prob.visit.astype(np.int64) * n_d + prob.detector
    cells = np.unique((pair * n * n + cx + n * cy)[used]) // (n * n)
    n_cells = np.bincount(cells, minlength=len(prob.visit_ids) * n_d)
    n_used = np.bincount(pair[used], minlength=len(prob.visit_ids) * n_d)
    vindex = {key(v): i for i, v in enumerate(prob.visit_ids)}
    dindex = {key(d): i for i, d in enumerate(prob.detector_ids)}
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


def fit_config(cfg) -> dict:
    """The fit's settings as the solution records them (FITS-friendly values: None as -1, inf or 0)."""
    return {
        "model": cfg.model, "kind": cfg.kind.value, "star_flat_order": cfg.star_flat_order,
        "visit_order": cfg.visit_order, "detector_order": cfg.detector_order,
        "grey_gradient": cfg.grey_gradient, "chromatic_order": -1 if cfg.chromatic_order is None else cfg.chromatic_order,
        "n_sigma": np.inf if cfg.n_sigma is None else cfg.n_sigma, "error_floor": cfg.error_floor,
        "star_flat_prior": 0.0 if cfg.star_flat_prior is None else cfg.star_flat_prior,
        "robust_scale": 0.0 if cfg.robust_scale is None else cfg.robust_scale,
        "visit_prior": 0.0 if cfg.visit_prior is None else cfg.visit_prior,
        "approx_order": (cfg.visit_order + 4) if cfg.approx_order is None else int(cfg.approx_order),
    }


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
        self._m = jointmodels.get(model)
        self.kind = kind
        self.config = dict(config)
        self._blocks = list(blocks)
        self._p = np.asarray(params, dtype=np.float64)
        self._perr = np.asarray(param_err, dtype=np.float64)
        self._p.setflags(write=False)
        self._perr.setflags(write=False)
        self._visit_ids = [key(v) for v in visit_ids]
        self._detector_ids = [key(d) for d in detector_ids]
        self._epoch_ids = [key(e) for e in epoch_ids]
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
    def _from_fit(cls, cfg, prob, fit: dict):
        p, perr, M, mag_err, n_used_star = fit["p"], fit["perr"], fit["M"], fit["mag_err"], fit["n_used_star"]
        r, z, used, chi2, dof = fit["r"], fit["z"], fit["used"], fit["chi2"], fit["dof"]
        n_iter, converged, rounds, history = fit["n_iter"], fit["converged"], fit["rounds"], fit["history"]
        zp_offset, zp_offset_err = fit["zp_offset"], fit["zp_offset_err"]
        flux = 10 ** (-0.4 * M)
        n_obs_star = np.diff(prob.ptr)
        star_flux = Table({
            "star": prob.star_ids, "flux": flux, "flux_err": flux * mag_err / MAG_ERR,
            "mag": M + AB_ZERO_POINT_NJY_MAG, "mag_err": mag_err, "n_obs": n_obs_star, "n_used": n_used_star,
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
        config = fit_config(cfg)
        return cls(model=cfg.model, kind=cfg.kind, config=config, blocks=prob.blocks, params=p, param_err=perr,
                   visit_ids=prob.visit_ids, detector_ids=prob.detector_ids, epoch_ids=prob.epoch_ids,
                   epdet_pairs=prob.epdet_pairs, visit_epoch=prob.visit_epoch, visit_center=prob.visit_center,
                   visit_radius=prob.visit_radius, boxes=prob.boxes, wcs=prob.wcs, star_flux=star_flux,
                   residuals=residuals, chi2=chi2, dof=dof, chi2_visit=chi2_visit, chi2_detector=chi2_detector,
                   n_iter=n_iter, converged=converged, n_rejection_rounds=rounds, zero_point_offset=zp_offset,
                   zero_point_offset_err=zp_offset_err, excluded=excluded, chi2_history=history,
                   coverage=coverage_table(prob, used))

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
        v = key(visit)
        if v not in self._vindex:
            why = self._why_excluded("visit", f"visit {v}")
            raise InputError(f"visit {v!r} is not in the joint solution{why}")
        return self._vindex[v]

    def _detector(self, detector) -> int:
        d = key(detector)
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
        e = key(epoch)
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
        b = self._block(self._m.detector_block)
        if self._m.detector_group == "detector":
            return ChebyshevField(coefficients_to_matrix(b.coefficients(self._p, di), b.order), box)
        e = self._epoch_of(epoch)
        g = self._epdet.get((e, di))
        if g is None:
            raise InputError(f"detector {self._detector_ids[di]!r} has no star flat in epoch {self._epoch_ids[e]!r}")
        return ChebyshevField(coefficients_to_matrix(b.coefficients(self._p, g), b.order), box)

    def grey(self, visit) -> float:
        """The visit's grey factor (its constant term; monolithic: the visit polynomial's)."""
        vi = self._visit(visit)
        b = self._block(self._m.visit_block)
        return float(b.coefficients(self._p, vi)[0])

    def grey_error(self, visit) -> float:
        """1σ error of :meth:`grey`."""
        vi = self._visit(visit)
        b = self._block(self._m.visit_block)
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
        b = self._block(self._m.visit_block)
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
        return ProductField(self._detector_factor(detector, self._visit(visit)), self.grey_field(visit, detector))

    def _detector_factor(self, detector, vi: int) -> ChebyshevField:
        if self._m.detector_group == "detector":
            return self.star_flat(detector)
        return self.star_flat(detector, self._epoch_ids[self._visit_epoch[vi]])

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
        if self._m.pixel_area and self.kind is ImageKind.SURFACE_BRIGHTNESS:
            factors.append(self._wcs[key].pixel_area_field(box))
        factors.append(self._detector_factor(key[1], vi))
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
                f"the star flat of (visit, detector) {key} (detector {key(key[1])}) is {sf[j, i]:.4g} "
                f"at pixel ({xs[i]:.1f}, {ys[j]:.1f}): unconstrained beyond its {n_stars} used observations; "
                f"lower star_flat_order (now {self.config['star_flat_order']}) or add stars that cover the detector")
        try:
            return PhotoCalib(ProductField(*factors), kind=self.kind, error=err)
        except InputError as exc:
            raise InputError(f"the calibration of (visit, detector) {key} (detector {key(key[1])}) "
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
        boxes = {key(r["detector"]): Box(int(r["x0"]), int(r["y0"]), int(r["width"]), int(r["height"])) for r in d}
        wcs = {(key(r["visit"]), key(r["detector"])): SkyWcs.from_header(str(r["header"])) for r in tabs["WCS"]}
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
