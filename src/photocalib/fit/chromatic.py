"""Catalog-level SED correction: the flux error of a source whose SED is not the fiducial one.

Images are flattened to a fiducial SED; a source of another colour is then mis-measured by
Δm(x, y, c) = Σ_p k_p(x, y) (c − c_fid)^p, fitted from a chromatic flat or from data.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from astropy.io import fits
from astropy.table import Table
from numpy.polynomial import chebyshev as C

from ..errors import InputError
from ..fields import ChebyshevField
from ..geom import Box

__all__ = [
    "ChromaticCorrection",
    "ChromaticCorrectionSet",
    "ab_colour",
    "chromatic_design",
    "fit_chromatic_residuals",
]


def ab_colour(spectrum, throughput_1, throughput_2) -> float:
    r"""AB colour ``m_1 − m_2`` of a spectrum through two throughputs.

    :math:`m_b = -2.5 \log_{10}\!\left(\int N T_b\, d\lambda \big/ \int N_{AB} T_b\, d\lambda\right)`
    with :math:`N` the photon density and :math:`N_{AB} \propto 1/\lambda` that of a source
    flat in :math:`f_\nu`: the photon-counting AB magnitude (GalSim's ``calculateMagnitude``).

    Parameters
    ----------
    spectrum : photocalib.isr.Spectrum
        The SED.
    throughput_1, throughput_2 : (wavelength_nm, T) pairs
        The two bands (e.g. LSST g and i from GalSim's ``share/bandpasses``).

    Returns
    -------
    float
        The colour in magnitudes.
    """

    def mag(tp) -> float:
        wl_t, t = (np.asarray(a, dtype=np.float64) for a in tp)
        lam = np.unique(np.concatenate([np.linspace(wl_t[0], wl_t[-1], 4001), wl_t,
                                        spectrum.wavelength_nm[(spectrum.wavelength_nm > wl_t[0])
                                                               & (spectrum.wavelength_nm < wl_t[-1])]]))
        tt = np.interp(lam, wl_t, t)
        num = np.trapezoid(tt * spectrum.photons(lam), lam)
        den = np.trapezoid(tt / lam, lam)
        if not (num > 0 and den > 0):
            raise InputError("ab_colour: the spectrum or a throughput has no photons in the band")
        return -2.5 * np.log10(num / den)

    return mag(throughput_1) - mag(throughput_2)


def _cheb_keep(order: int) -> np.ndarray:
    jj, ii = np.meshgrid(np.arange(order + 1), np.arange(order + 1), indexing="ij")
    return ii + jj <= order


def _spatial_basis(x, y, bbox: Box, order: int) -> np.ndarray:
    """Triangular Chebyshev basis of total ``order`` at points: ``(n, nterm)``, c-order of (j, i)."""
    xmin, xmax, ymin, ymax = bbox.extent
    u = (np.asarray(x, dtype=np.float64) - xmin) * (2.0 / (xmax - xmin)) - 1.0
    v = (np.asarray(y, dtype=np.float64) - ymin) * (2.0 / (ymax - ymin)) - 1.0
    vu = C.chebvander(u, order)
    vv = C.chebvander(v, order)
    return (vv[:, :, None] * vu[:, None, :]).reshape(u.size, -1)[:, _cheb_keep(order).ravel()]


def chromatic_design(x, y, colour, bbox: Box, order: int, colour_order: int, colour_fid: float) -> np.ndarray:
    """Design matrix of the chromatic term for one detector, for joint fits.

    Column ``(p − 1) * nterm + t`` is ``B_t(x, y) (c − c_fid)^p`` for ``p = 1..colour_order``
    and the triangular Chebyshev basis ``B_t`` of total ``order`` on ``bbox`` (the order of
    :class:`~photocalib.ChebyshevField` coefficients ``c[j, i]`` with ``i + j <= order``, row
    by row). A fitter adds these columns to its magnitude model (predicted instrumental
    magnitude − true magnitude) and turns the fitted parameters into a correction with
    :meth:`ChromaticCorrection.from_parameters`.

    Parameters
    ----------
    x, y, colour : array_like
        Pixel positions and colours of the observations (1-D, same length).
    bbox : Box
        The detector's box.
    order, colour_order : int
        Spatial (total) order and the highest power of ``c − c_fid`` (≥ 1).
    colour_fid : float
        Colour of the fiducial SED: sources of that colour need no correction.

    Returns
    -------
    numpy.ndarray, shape (n, nterm * colour_order)
    """
    colour = np.asarray(colour, dtype=np.float64).ravel()
    if colour_order < 1:
        raise InputError(f"chromatic_design: colour_order must be >= 1, got {colour_order}")
    basis = _spatial_basis(np.ravel(x), np.ravel(y), bbox, order)
    if basis.shape[0] != colour.size:
        raise InputError("chromatic_design: x, y and colour must have the same length")
    dc = colour - colour_fid
    powers = dc[:, None] ** np.arange(1, colour_order + 1)[None, :]
    return (powers[:, :, None] * basis[:, None, :]).reshape(colour.size, -1)


class ChromaticCorrection:
    r"""Per-detector SED correction in colour: :math:`\Delta m(x, y, c) = \sum_{p=1}^{P} k_p(x, y)\,(c - c_{\rm fid})^p`.

    ``Δm`` is the magnitude measured on a fiducial-SED-flattened image minus the magnitude in
    the photometric system of the throughput ``T`` (see :class:`photocalib.isr.ChromaticFlat`),
    for a source of colour ``c``; it vanishes at the fiducial colour. Correct with
    ``m − Δm``, or flux × ``10**(0.4 Δm)`` (:meth:`apply`).

    Parameters
    ----------
    terms : sequence of ChebyshevField
        ``k_1 ... k_P`` (magnitudes per magnitude of colour to the power p), all on one box.
    colour_fid : float
        Colour of the fiducial SED.
    colour_name : str
        Name of the colour (e.g. ``"g-i"``), recorded in the persisted form.
    """

    def __init__(self, terms: Sequence[ChebyshevField], colour_fid: float, colour_name: str = "colour") -> None:
        terms = tuple(terms)
        if not terms:
            raise InputError("ChromaticCorrection needs at least one colour term")
        for t in terms:
            if not isinstance(t, ChebyshevField):
                raise InputError(f"ChromaticCorrection terms must be ChebyshevFields, got {type(t).__name__}")
        if len({t.bbox for t in terms}) != 1:
            raise InputError("ChromaticCorrection terms must share one box")
        if not np.isfinite(colour_fid):
            raise InputError(f"ChromaticCorrection colour_fid must be finite, got {colour_fid}")
        self._terms = terms
        self._cfid = float(colour_fid)
        self._name = str(colour_name)

    @property
    def terms(self) -> tuple[ChebyshevField, ...]:
        """The fields ``k_1 ... k_P``."""
        return self._terms

    @property
    def colour_fid(self) -> float:
        """Colour of the fiducial SED."""
        return self._cfid

    @property
    def colour_name(self) -> str:
        """Name of the colour."""
        return self._name

    @property
    def colour_order(self) -> int:
        """Highest power P of ``c − c_fid``."""
        return len(self._terms)

    @property
    def bbox(self) -> Box:
        """The detector's box."""
        return self._terms[0].bbox

    def delta_mag(self, x, y, colour) -> np.ndarray:
        """Δm (mag) at pixel positions for sources of the given colours (broadcastable)."""
        x, y, colour = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (x, y, colour)))
        dc = colour - self._cfid
        out = np.zeros(x.shape)
        power = np.ones(x.shape)
        for k in self._terms:
            power = power * dc
            out += k.evaluate(x, y) * power
        return out

    def flux_factor(self, x, y, colour) -> np.ndarray:
        """Measured / true flux, ``10**(-0.4 Δm)``; divide measured fluxes by it."""
        return 10.0 ** (-0.4 * self.delta_mag(x, y, colour))

    def apply(
        self,
        table: Table,
        colour: str = "colour",
        x: str = "x",
        y: str = "y",
        flux_columns: Iterable[str] = (),
        mag_columns: Iterable[str] = (),
        suffix: str = "_sedcorr",
    ) -> Table:
        """Add SED-corrected columns to a calibrated catalog.

        Parameters
        ----------
        table : astropy.table.Table
            The catalog (not modified; a copy is returned).
        colour, x, y : str
            Columns with each source's colour and pixel position on this detector.
        flux_columns, mag_columns : iterable of str
            Flux (and flux-error) columns to multiply by ``10**(0.4 Δm)``, magnitude columns to
            shift by ``−Δm``; each gets a ``<name><suffix>`` column.
        suffix : str
            Suffix of the new columns. A ``chromatic_dmag`` column holds Δm itself.

        Returns
        -------
        astropy.table.Table

        Raises
        ------
        InputError
            A named column is missing.
        """
        _require_columns(table, [colour, x, y, *flux_columns, *mag_columns])
        out = Table(table, copy=True)
        dm = self.delta_mag(np.asarray(table[x]), np.asarray(table[y]), np.asarray(table[colour]))
        _add_corrected(out, dm, flux_columns, mag_columns, suffix)
        return out

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_parameters(
        cls,
        parameters,
        bbox: Box,
        order: int,
        colour_order: int,
        colour_fid: float,
        colour_name: str = "colour",
    ) -> ChromaticCorrection:
        """Build from the parameters of :func:`chromatic_design`'s columns."""
        keep = _cheb_keep(order)
        nterm = int(keep.sum())
        p = np.asarray(parameters, dtype=np.float64).ravel()
        if p.size != nterm * colour_order:
            raise InputError(
                f"ChromaticCorrection.from_parameters: {p.size} parameters for "
                f"{colour_order} colour terms of {nterm} spatial terms"
            )
        terms = []
        for k in range(colour_order):
            c = np.zeros((order + 1, order + 1))
            c[keep] = p[k * nterm : (k + 1) * nterm]
            terms.append(ChebyshevField(c, bbox))
        return cls(terms, colour_fid, colour_name)

    @classmethod
    def fit(
        cls,
        x,
        y,
        colour,
        delta_mag,
        bbox: Box,
        colour_fid: float,
        order: int = 4,
        colour_order: int = 2,
        weights=None,
        colour_name: str = "colour",
    ) -> ChromaticCorrection:
        """Least-squares fit to magnitude offsets Δm of sources (or sample points) of known colour.

        Parameters
        ----------
        x, y, colour, delta_mag : array_like
            Positions, colours and Δm = measured − true magnitude (after any grey terms).
        bbox : Box
            The detector's box.
        colour_fid : float
            Colour of the fiducial SED (Δm = 0 there by construction).
        order, colour_order : int
            Spatial total order and the highest colour power.
        weights : array_like, optional
            Inverse variances of ``delta_mag``.

        Raises
        ------
        InputError
            Fewer usable points than parameters.
        """
        dm = np.asarray(delta_mag, dtype=np.float64).ravel()
        w = np.ones_like(dm) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
        design = chromatic_design(x, y, colour, bbox, order, colour_order, colour_fid)
        good = np.isfinite(dm) & np.isfinite(w) & (w > 0) & np.all(np.isfinite(design), axis=1)
        if good.sum() < design.shape[1]:
            raise InputError(
                f"ChromaticCorrection.fit: {int(good.sum())} usable points for {design.shape[1]} "
                "parameters; lower order / colour_order or supply more sources"
            )
        sw = np.sqrt(w[good])
        sol, *_ = np.linalg.lstsq(design[good] * sw[:, None], dm[good] * sw, rcond=None)
        return cls.from_parameters(sol, bbox, order, colour_order, colour_fid, colour_name)

    @classmethod
    def from_chromatic_flat(
        cls,
        flat,
        fiducial,
        seds: Sequence,
        colours,
        colour_fid: float,
        order: int = 4,
        colour_order: int = 2,
        bin_size: int = 16,
        colour_name: str = "colour",
    ) -> ChromaticCorrection:
        """Fit the correction from a :class:`~photocalib.isr.ChromaticFlat` and a library of SEDs.

        For each SED, Δm(x, y) = −2.5 log10(F_SED / F_fid) on blocks of ``bin_size`` (cube)
        pixels; the colour polynomial is fitted through all of them at once.

        Parameters
        ----------
        flat : photocalib.isr.ChromaticFlat
            The detector's chromatic flat.
        fiducial : photocalib.isr.Spectrum
            The fiducial SED the images were flattened to.
        seds : sequence of photocalib.isr.Spectrum
            SEDs spanning the colours of the sources to correct (e.g. stellar templates).
        colours : array_like
            Their colours (e.g. :func:`ab_colour` through two bands).
        colour_fid : float
            Colour of the fiducial SED.
        order, colour_order, bin_size : int
            Spatial order, colour order and block size of the fit.
        """
        colours = np.asarray(colours, dtype=np.float64).ravel()
        if len(seds) != colours.size:
            raise InputError(f"from_chromatic_flat: {len(seds)} SEDs but {colours.size} colours")
        f_fid = flat.flatten(fiducial)
        f_fid_b, xb, yb = _block_means(f_fid, flat, bin_size)
        xs, ys, cs, dms = [], [], [], []
        for sed, c in zip(seds, colours, strict=True):
            fb, _, _ = _block_means(flat.flatten(sed), flat, bin_size)
            xs.append(xb)
            ys.append(yb)
            cs.append(np.full(xb.shape, c))
            dms.append(-2.5 * np.log10(fb / f_fid_b))
        return cls.fit(np.concatenate(xs), np.concatenate(ys), np.concatenate(cs), np.concatenate(dms),
                       flat.bbox, colour_fid, order=order, colour_order=colour_order,
                       colour_name=colour_name)

    @classmethod
    def from_joint_solution(
        cls,
        solution,
        detector,
        colour_fid: float = 0.0,
        colour_order: int = 3,
        colour_name: str = "colour",
    ) -> ChromaticCorrection:
        """The chromatic term of a reference-free joint fit as a correction.

        :class:`~photocalib.fit.joint.JointCalibrator` (``model="reference-free"``,
        ``chromatic_order=...``) multiplies the calibration of a star of colour ``c`` by
        ``1 + c K_d(x, y)``, so ``Δm = 2.5 log10(1 + c K_d)``. Give the joint fit colours
        relative to the fiducial (``colour = c − c_fid``), so that sources of the fiducial
        colour, which the fiducial-SED flat treats exactly, are left alone. The logarithm is
        expanded to ``colour_order`` (error ``~ (c K)^(P+1) / (P+1)``, below 1e-6 mag for
        ``|c K| < 0.03`` and ``P = 3``); each ``k_p ∝ K_d^p`` is an exact Chebyshev field.

        Without standards the fit cannot tell a colour term common to the whole focal plane
        from the stars' colours (it fixes the mean of ``K_d`` to 0), so neither can this.

        Parameters
        ----------
        solution : JointSolution
            A fit with a chromatic term (``solution.chromatic_field(detector)``).
        detector : int
            The detector.
        colour_fid : float
            The fiducial colour that was subtracted from the colours given to the fit.
        colour_order : int
            Order of the expansion of the logarithm.
        """
        k = solution.chromatic_field(detector)
        if colour_order < 1:
            raise InputError(f"from_joint_solution: colour_order must be >= 1, got {colour_order}")
        order = max(k.order)
        scale = 2.5 / np.log(10.0)
        terms = []
        power = None
        for p in range(1, colour_order + 1):
            power = k if power is None else power * k
            exact = ChebyshevField.approximate(power, order=order * p, bbox=k.bbox)
            coeff = scale * (-1.0) ** (p + 1) / p
            terms.append(ChebyshevField(exact.coefficients * coeff, k.bbox))
        return cls(terms, colour_fid, colour_name)

    # -- persistence ---------------------------------------------------------------------------
    def to_table(self) -> Table:
        """The correction as an astropy Table (coefficients of each term; meta: box, colour)."""
        # terms may differ in order (k_p ∝ K^p): pad to one shape, record each term's shape
        ny = max(t.coefficients.shape[0] for t in self._terms)
        nx = max(t.coefficients.shape[1] for t in self._terms)
        coeffs = np.zeros((len(self._terms), ny, nx))
        for i, t in enumerate(self._terms):
            coeffs[i, : t.coefficients.shape[0], : t.coefficients.shape[1]] = t.coefficients
        table = Table({"coefficients": coeffs,
                       "shape": np.array([t.coefficients.shape for t in self._terms], dtype=np.int32)})
        box = self.bbox
        table.meta.update(
            FIELD="ChromaticCorrection", COLFID=self._cfid, COLNAME=self._name,
            BBOX_X0=box.x0, BBOX_Y0=box.y0, BBOX_W=box.width, BBOX_H=box.height,
        )
        return table

    @classmethod
    def from_table(cls, table: Table) -> ChromaticCorrection:
        """Inverse of :meth:`to_table`."""
        try:
            box = Box(int(table.meta["BBOX_X0"]), int(table.meta["BBOX_Y0"]),
                      int(table.meta["BBOX_W"]), int(table.meta["BBOX_H"]))
            cfid = float(table.meta["COLFID"])
            name = str(table.meta.get("COLNAME", "colour"))
            coeffs = np.asarray(table["coefficients"], dtype=np.float64)
            shapes = np.asarray(table["shape"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a ChromaticCorrection table: missing or bad {exc}") from exc
        return cls([ChebyshevField(c[: sh[0], : sh[1]], box) for c, sh in zip(coeffs, shapes, strict=True)],
                   cfid, name)

    def write(self, path: str | os.PathLike, overwrite: bool = True) -> None:
        """Write to a FITS file (one binary table), atomically."""
        ChromaticCorrectionSet({0: self}).write(path, overwrite=overwrite)

    @classmethod
    def read(cls, path: str | os.PathLike) -> ChromaticCorrection:
        """Read a file written by :meth:`write`."""
        corr = ChromaticCorrectionSet.read(path)
        if len(corr) != 1:
            raise InputError(f"{path}: holds {len(corr)} detectors; use ChromaticCorrectionSet.read")
        return next(iter(corr.values()))

    def __eq__(self, other) -> bool:
        if not isinstance(other, ChromaticCorrection):
            return NotImplemented
        return (self._cfid == other._cfid and self._name == other._name
                and self._terms == other._terms)

    def __hash__(self) -> int:
        return hash((self._cfid, self._name, self.bbox))

    def __repr__(self) -> str:
        return (f"ChromaticCorrection({self._name}: colour_fid={self._cfid:.4g}, "
                f"colour_order={self.colour_order}, order={self._terms[0].order[0]}, bbox={self.bbox!r})")


class ChromaticCorrectionSet(Mapping):
    """Per-detector :class:`ChromaticCorrection` objects, keyed by detector id (a read-only mapping)."""

    def __init__(self, corrections: Mapping[int, ChromaticCorrection]) -> None:
        self._by_det = {int(k): v for k, v in corrections.items()}
        for k, v in self._by_det.items():
            if not isinstance(v, ChromaticCorrection):
                raise InputError(f"detector {k}: expected a ChromaticCorrection, got {type(v).__name__}")

    def __getitem__(self, detector: int) -> ChromaticCorrection:
        try:
            return self._by_det[int(detector)]
        except KeyError:
            raise InputError(
                f"no chromatic correction for detector {detector}; have {sorted(self._by_det)}"
            ) from None

    def __iter__(self):
        return iter(self._by_det)

    def __len__(self) -> int:
        return len(self._by_det)

    def delta_mag(self, detector, x, y, colour) -> np.ndarray:
        """Δm for sources on several detectors (1-D arrays of one length)."""
        det = np.asarray(detector).ravel()
        x, y, colour = (np.asarray(a, dtype=np.float64).ravel() for a in (x, y, colour))
        out = np.full(det.shape, np.nan)
        for d in np.unique(det):
            sel = det == d
            out[sel] = self[int(d)].delta_mag(x[sel], y[sel], colour[sel])
        return out

    def apply(
        self,
        table: Table,
        colour: str = "colour",
        detector: str = "detector",
        x: str = "x",
        y: str = "y",
        flux_columns: Iterable[str] = (),
        mag_columns: Iterable[str] = (),
        suffix: str = "_sedcorr",
    ) -> Table:
        """As :meth:`ChromaticCorrection.apply`, with each row's detector from ``detector``."""
        _require_columns(table, [colour, detector, x, y, *flux_columns, *mag_columns])
        out = Table(table, copy=True)
        dm = self.delta_mag(np.asarray(table[detector]), np.asarray(table[x]), np.asarray(table[y]),
                            np.asarray(table[colour]))
        _add_corrected(out, dm, flux_columns, mag_columns, suffix)
        return out

    def write(self, path: str | os.PathLike, overwrite: bool = True) -> None:
        """Write one FITS binary table per detector (EXTNAME ``DET<n>``), atomically."""
        from .._io import atomic_write_hdulist

        hdus = [fits.PrimaryHDU()]
        for d, corr in sorted(self._by_det.items()):
            hdu = fits.table_to_hdu(corr.to_table())
            hdu.name = f"DET{d}"
            hdu.header["DETECTOR"] = d
            hdus.append(hdu)
        atomic_write_hdulist(fits.HDUList(hdus), path, overwrite)

    @classmethod
    def read(cls, path: str | os.PathLike) -> ChromaticCorrectionSet:
        """Read a file written by :meth:`write`.

        Raises
        ------
        InputError
            A missing, truncated or non-FITS file, or an HDU without an integer DETECTOR
            keyword or with a damaged table (the message names the path and HDU).
        """
        from .._io import open_fits

        out = {}
        with open_fits(path) as hdul:
            for i, hdu in enumerate(hdul[1:], start=1):
                where = f"{path}[{hdu.name or i}]"
                # A damaged header or table (a keyword or TFORM of the wrong type, a column of
                # the wrong shape) cannot be rebuilt: name the file and HDU, whatever broke.
                try:
                    det = hdu.header["DETECTOR"]
                    if isinstance(det, bool) or not isinstance(det, int):
                        raise InputError(f"DETECTOR keyword is {det!r}, not an integer")
                    out[det] = ChromaticCorrection.from_table(Table.read(hdu))
                except KeyError as exc:
                    raise InputError(f"{where}: no DETECTOR keyword ({exc})") from exc
                except InputError as exc:
                    raise InputError(f"{where}: {exc}") from exc
                except Exception as exc:  # noqa: BLE001 - astropy/NumPy raise many types here
                    raise InputError(f"{where}: damaged chromatic-correction table "
                                     f"({type(exc).__name__}: {exc}); write it again") from exc
        return cls(out)

    def __repr__(self) -> str:
        return f"ChromaticCorrectionSet(detectors={sorted(self._by_det)})"


def fit_chromatic_residuals(
    table: Table,
    bboxes: Mapping[int, Box],
    colour_fid: float,
    residual: str = "dmag",
    colour: str = "colour",
    detector: str = "detector",
    x: str = "x",
    y: str = "y",
    weight: str | None = None,
    order: int = 2,
    colour_order: int = 1,
    colour_name: str = "colour",
) -> ChromaticCorrectionSet:
    """Fit the chromatic term from data: per-detector fits of star magnitude residuals.

    This is the reference-free route: after a grey (colour-blind) fit, the residuals of stars
    (observed − model magnitude) that correlate with colour *and* position are the chromatic
    term. Call it on the residual table of a joint fit and apply the result to the catalogs,
    or iterate the two. A joint fitter that wants the term inside its own least squares adds
    :func:`chromatic_design` columns instead.

    Parameters
    ----------
    table : astropy.table.Table
        One row per observation with ``residual``, ``colour``, ``detector``, ``x``, ``y``
        (and optionally ``weight``, an inverse variance).
    bboxes : mapping of int to Box
        The box of each detector.
    colour_fid : float
        The fiducial colour.
    order, colour_order : int
        Spatial order and colour order per detector.

    Returns
    -------
    ChromaticCorrectionSet

    Raises
    ------
    InputError
        A missing column, a detector without a box, or too few stars on a detector.
    """
    cols = [residual, colour, detector, x, y] + ([weight] if weight else [])
    _require_columns(table, cols)
    det = np.asarray(table[detector])
    out = {}
    for d in np.unique(det):
        if int(d) not in bboxes:
            raise InputError(f"fit_chromatic_residuals: no box for detector {d}; add it to bboxes")
        sel = det == d
        try:
            out[int(d)] = ChromaticCorrection.fit(
                np.asarray(table[x])[sel], np.asarray(table[y])[sel], np.asarray(table[colour])[sel],
                np.asarray(table[residual])[sel], bboxes[int(d)], colour_fid, order=order,
                colour_order=colour_order,
                weights=None if weight is None else np.asarray(table[weight])[sel],
                colour_name=colour_name,
            )
        except InputError as exc:
            raise InputError(f"detector {d}: {exc}") from exc
    return ChromaticCorrectionSet(out)


# -- helpers ---------------------------------------------------------------------------------------
def _require_columns(table: Table, names: Iterable[str]) -> None:
    missing = [n for n in names if n not in table.colnames]
    if missing:
        raise InputError(
            f"catalog lacks column(s) {', '.join(missing)}; it has {', '.join(table.colnames)}"
        )


def _add_corrected(out: Table, dm: np.ndarray, flux_columns, mag_columns, suffix: str) -> None:
    out["chromatic_dmag"] = dm
    factor = 10.0 ** (0.4 * dm)
    for name in flux_columns:
        out[name + suffix] = np.asarray(out[name], dtype=np.float64) * factor
    for name in mag_columns:
        out[name + suffix] = np.asarray(out[name], dtype=np.float64) - dm


def _block_means(image: np.ndarray, flat, bin_size: int):
    """Block means of a (cube-resolution) image and the block centres in detector pixels."""
    b = flat.binning
    box = flat.bbox
    ny, nx = image.shape
    py = np.diff(np.minimum(np.arange(ny + 1) * b, box.height)).astype(np.float64)
    px = np.diff(np.minimum(np.arange(nx + 1) * b, box.width)).astype(np.float64)
    ey = np.arange(0, ny, bin_size)
    ex = np.arange(0, nx, bin_size)
    w = image * py[:, None] * px[None, :]
    sums = np.add.reduceat(np.add.reduceat(w, ey, axis=0), ex, axis=1)
    cy = np.add.reduceat(py, ey)
    cx = np.add.reduceat(px, ex)
    means = sums / (cy[:, None] * cx[None, :])
    # centre of each block in detector pixels (pixel centres on integers)
    yc = box.y0 + ey * b + 0.5 * (cy - 1)
    xc = box.x0 + ex * b + 0.5 * (cx - 1)
    xx, yy = np.meshgrid(xc, yc)
    return means.ravel(), xx.ravel(), yy.ravel()
