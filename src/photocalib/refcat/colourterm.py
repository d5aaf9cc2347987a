"""Colour terms: the magnitude offset from a reference band to an instrument band, as a
polynomial in a reference colour, fitted to matched stars or derived from bandpasses and SEDs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from .._io import atomic_write_hdulist, open_fits
from ..errors import InputError
from .catalogs import njy_to_mag

__all__ = ["ColourTerm", "blackbody_library", "write_colour_terms", "read_colour_terms", "convert_reference",
           "to_reference"]

_EXTNAME = "COLOURTERM"


def blackbody_library(temperatures=None, wavelength_aa=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Planck spectra f_λ (arbitrary normalisation) for stars from M to A type.

    Blackbodies follow the stellar locus in broad-band colours to a few hundredths of a
    magnitude for F–K stars, but lack the Balmer jump and the molecular bands of M stars; the
    synthetic colour terms they give are compared with empirical ones in the tests. Pass a real
    library (e.g. Pickles 1998 spectra) to :meth:`ColourTerm.synthetic` where that matters.

    Returns
    -------
    list of (wavelength in Å, f_λ) pairs
    """
    if temperatures is None:
        temperatures = np.geomspace(3000.0, 12000.0, 40)
    wave = np.arange(900.0, 25000.0, 5.0) if wavelength_aa is None else np.asarray(wavelength_aa, float)
    out = []
    for t in np.atleast_1d(temperatures):
        x = 1.4387769e8 / (wave * float(t))       # hc / (λ k T), λ in Å
        out.append((wave, (wave / 5000.0) ** -5 / np.expm1(x)))
    return out


def _load_filter(name):
    import speclite.filters

    if not isinstance(name, str):
        return name
    try:
        return speclite.filters.load_filter(name)
    except (ValueError, OSError, RuntimeError) as exc:
        raise InputError(f"bandpass {name!r}: not a speclite filter name (e.g. 'decam2014-r', "
                         "'panstarrs-g', 'gaiadr3-G'); see speclite.filters.filter_group_names") from exc


def _short(name) -> str:
    text = name if isinstance(name, str) else getattr(name, "name", str(name))
    return text.split("-", 1)[1] if "-" in text else text


def synthetic_ab_mags(bandpass, seds) -> np.ndarray:
    """AB magnitudes of each (wavelength Å, f_λ) SED through a speclite filter (or its name)."""
    filt = _load_filter(bandpass)
    unit = u.erg / (u.s * u.cm**2 * u.AA)
    out = []
    for wave, flam in seds:
        w = np.asarray(wave, float)
        f = np.asarray(flam, float)
        out.append(float(filt.get_ab_magnitude(f * unit, w * u.AA)))
    return np.asarray(out)


@dataclass(frozen=True)
class ColourTerm:
    """``m_target − m_reference = Σ c_k colour^k``, colour = m_blue − m_red (reference, AB).

    Evaluate with ``ct(colour)``; colours outside ``colour_range`` are evaluated at the nearest
    end of the range (a polynomial extrapolates badly). Build one with :meth:`fit` (from matched
    stars) or :meth:`synthetic` (from bandpasses and SEDs); apply it to a reference catalog with
    :meth:`apply`; save it with :meth:`write` (a FITS table, never a pickle).

    Attributes
    ----------
    coefficients : tuple of float
        c_0, c_1, ... (magnitudes per colour^k).
    reference_band, target_band : str
        The reference catalog's band (its ``<band>_flux`` column) and the instrument band.
    colour_bands : (str, str)
        The reference bands whose AB magnitude difference is the colour.
    colour_range : (float, float)
        Where the polynomial is valid.
    rms : float
        RMS of the residuals about the polynomial (mag): the scatter of the fit, or of the SED
        library about the synthetic polynomial.
    n_stars, n_rejected : int
        Stars (or SEDs) used and rejected as outliers.
    method : str
        ``fit`` or ``synthetic``.
    meta : dict
        Provenance (bandpass names, SED library).

    Examples
    --------
    >>> import numpy as np
    >>> ct = ColourTerm((0.01, -0.05, 0.002), reference_band="g", target_band="g",
    ...                 colour_bands=("g", "i"), colour_range=(0.0, 3.0))
    >>> round(float(ct(1.0)), 4)
    -0.038
    """

    coefficients: tuple[float, ...]
    reference_band: str = ""
    target_band: str = ""
    colour_bands: tuple[str, str] = ("", "")
    colour_range: tuple[float, float] = (-np.inf, np.inf)
    rms: float = float("nan")
    n_stars: int = 0
    n_rejected: int = 0
    method: str = "given"
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        coef = tuple(float(c) for c in np.atleast_1d(self.coefficients))
        if not coef or not np.all(np.isfinite(coef)):
            raise InputError(f"ColourTerm: coefficients must be finite numbers, got {self.coefficients!r}")
        lo, hi = (float(v) for v in self.colour_range)
        if not lo < hi:
            raise InputError(f"ColourTerm: colour_range {self.colour_range!r} must be (low, high) with low < high")
        object.__setattr__(self, "coefficients", coef)
        object.__setattr__(self, "colour_range", (lo, hi))
        object.__setattr__(self, "colour_bands", tuple(self.colour_bands))

    @property
    def order(self) -> int:
        """Polynomial order."""
        return len(self.coefficients) - 1

    def __call__(self, colour) -> np.ndarray:
        """``m_target − m_reference`` (mag) at ``colour`` (clipped to ``colour_range``)."""
        c = np.clip(np.asarray(colour, dtype=np.float64), *self.colour_range)
        return np.polynomial.polynomial.polyval(c, self.coefficients)

    def derivative(self, colour) -> np.ndarray:
        """d(ct)/d(colour), zero outside ``colour_range``."""
        c = np.asarray(colour, dtype=np.float64)
        d = np.polynomial.polynomial.polyval(np.clip(c, *self.colour_range),
                                             np.polynomial.polynomial.polyder(self.coefficients))
        return np.where((c >= self.colour_range[0]) & (c <= self.colour_range[1]), d, 0.0)

    # ------------------------------------------------------------------------------------------

    @classmethod
    def fit(cls, colour, delta_mag, order: int = 3, weights=None, *, nsigma: float = 3.0, max_iter: int = 20,
            colour_range=None, reference_band: str = "", target_band: str = "",
            colour_bands: tuple[str, str] = ("", "")) -> ColourTerm:
        """Fit ``delta_mag = m_target − m_reference`` of matched stars as a polynomial in colour.

        Weighted least squares (``weights`` = 1/σ², default equal) with iterative clipping at
        ``nsigma`` times a robust scatter (1.4826 × the median absolute deviation of the
        weighted residuals), until the kept set no longer changes.

        Parameters
        ----------
        colour, delta_mag : array_like
            Per star; NaN rows are ignored.
        order : int
            Polynomial order (0 = a constant offset).
        weights : array_like, optional
            Inverse variances of ``delta_mag``.
        colour_range : (float, float), optional
            Use only stars in this range. The valid range is that of the kept colours (within
            ``colour_range`` when given).

        Raises
        ------
        InputError
            Shapes differ, or fewer usable stars than 2 × (order + 1).
        """
        x = np.asarray(colour, dtype=np.float64).ravel()
        y = np.asarray(delta_mag, dtype=np.float64).ravel()
        if x.shape != y.shape:
            raise InputError(f"ColourTerm.fit: colour has {x.size} values but delta_mag {y.size}")
        w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != x.shape:
            raise InputError(f"ColourTerm.fit: weights has {w.size} values, colour {x.size}")
        if order < 0:
            raise InputError(f"ColourTerm.fit: order must be >= 0, got {order}")
        ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(w) & (w > 0)
        if colour_range is not None:
            ok &= (x >= colour_range[0]) & (x <= colour_range[1])
        if ok.sum() < 2 * (order + 1):
            raise InputError(f"ColourTerm.fit: {int(ok.sum())} usable stars for an order-{order} polynomial; "
                             f"need at least {2 * (order + 1)}")
        keep = ok.copy()
        sw = np.sqrt(w)
        for _ in range(max_iter):
            poly = np.polynomial.Polynomial.fit(x[keep], y[keep], order, w=sw[keep])
            r = (y - poly(x)) * sw
            sigma = 1.4826 * np.median(np.abs(r[keep] - np.median(r[keep])))
            if not sigma > 0:
                break
            new = ok & (np.abs(r) <= nsigma * sigma)
            if new.sum() < 2 * (order + 1) or np.array_equal(new, keep):
                keep = new if new.sum() >= 2 * (order + 1) else keep
                break
            keep = new
        poly = np.polynomial.Polynomial.fit(x[keep], y[keep], order, w=sw[keep])
        coef = poly.convert().coef
        coef = np.concatenate([coef, np.zeros(order + 1 - coef.size)])
        res = y[keep] - poly(x[keep])
        # Valid only where there were stars: a polynomial is not extrapolated.
        rng = (float(x[keep].min()), float(x[keep].max()))
        if colour_range is not None:
            rng = (max(rng[0], float(colour_range[0])), min(rng[1], float(colour_range[1])))
        return cls(tuple(coef), reference_band=reference_band, target_band=target_band,
                   colour_bands=colour_bands, colour_range=rng, rms=float(np.sqrt(np.mean(res**2))),
                   n_stars=int(keep.sum()), n_rejected=int(ok.sum() - keep.sum()), method="fit")

    @classmethod
    def synthetic(cls, reference, target, colour: tuple, *, seds=None, order: int = 3, colour_range=None,
                  reference_band: str | None = None, target_band: str | None = None,
                  colour_bands: tuple[str, str] | None = None, sed_library: str | None = None) -> ColourTerm:
        """A colour term from bandpasses: synthetic AB magnitudes of a library of stellar SEDs.

        Parameters
        ----------
        reference, target : str or speclite FilterResponse
            speclite filter names, e.g. ``'panstarrs-r'`` and ``'decam2014-r'``.
        colour : (str, str)
            The two reference bandpasses of the colour, e.g. ``('panstarrs-g', 'panstarrs-i')``.
        seds : sequence of (wavelength Å, f_λ), optional
            The SED library; default :func:`blackbody_library` (3000–12000 K).
        order : int
            Polynomial order.
        colour_range : (float, float), optional
            Fit only SEDs with colours inside it (and mark it as the valid range).
        reference_band, target_band, colour_bands : optional
            Band names as they appear in the reference catalog (``<band>_flux``); default the
            filter names without their group (``'panstarrs-g'`` → ``'g'``).

        Examples
        --------
        >>> ct = ColourTerm.synthetic("panstarrs-r", "decam2014-r", ("panstarrs-g", "panstarrs-i"))
        >>> abs(float(ct(1.0))) < 0.1
        True
        """
        library = blackbody_library() if seds is None else list(seds)
        if len(library) < order + 2:
            raise InputError(f"ColourTerm.synthetic: {len(library)} SEDs for an order-{order} polynomial; "
                             f"need at least {order + 2}")
        m_ref = synthetic_ab_mags(reference, library)
        m_tgt = synthetic_ab_mags(target, library)
        c = synthetic_ab_mags(colour[0], library) - synthetic_ab_mags(colour[1], library)
        ct = cls.fit(c, m_tgt - m_ref, order=order, nsigma=np.inf, colour_range=colour_range,
                     reference_band=reference_band or _short(reference),
                     target_band=target_band or _short(target),
                     colour_bands=colour_bands or (_short(colour[0]), _short(colour[1])))
        names = [n if isinstance(n, str) else getattr(n, "name", "?") for n in (reference, target, *colour)]
        meta = {"reference_bandpass": names[0], "target_bandpass": names[1],
                "colour_bandpasses": names[2:], "sed_library": sed_library or ("blackbody" if seds is None else "user")}
        return cls(ct.coefficients, ct.reference_band, ct.target_band, ct.colour_bands, ct.colour_range,
                   ct.rms, ct.n_stars, ct.n_rejected, "synthetic", meta)

    @classmethod
    def from_polynomial(cls, coefficients, *, reference_band: str, target_band: str,
                        colour_bands: tuple[str, str], colour_range: tuple[float, float],
                        reference_to_ab: float = 0.0, colour_to_ab: float = 0.0,
                        source: str = "") -> ColourTerm:
        """A published transformation ``m_target = m_ref + Σ p_k c^k`` whose reference magnitude
        and colour may be on the Vega scale, re-expressed for AB reference fluxes.

        With ``m_ref,AB = m_ref + reference_to_ab`` and ``c_AB = c + colour_to_ab`` (e.g. Gaia
        DR3: ``reference_to_ab`` = 0.1136 for G, ``colour_to_ab`` = 0.0155 − 0.3561 for BP − RP,
        from :data:`GAIA_ZERO_POINTS`), the term becomes
        ``m_target − m_ref,AB = P(c_AB − colour_to_ab) − reference_to_ab``. ``colour_range`` is
        given in the published (e.g. Vega) colour.

        Examples
        --------
        >>> ct = ColourTerm.from_polynomial([0.1, 0.2], reference_band="G", target_band="r",
        ...                                 colour_bands=("BP", "RP"), colour_range=(0.0, 3.0),
        ...                                 reference_to_ab=0.1, colour_to_ab=-0.3)
        >>> round(float(ct(1.0 - 0.3)), 6)   # Vega colour 1.0: 0.1 + 0.2 - 0.1
        0.2
        """
        poly = np.polynomial.Polynomial(np.asarray(coefficients, dtype=np.float64))
        shifted = poly(np.polynomial.Polynomial([-colour_to_ab, 1.0])) - reference_to_ab
        lo, hi = colour_range
        return cls(tuple(shifted.coef), reference_band, target_band, tuple(colour_bands),
                   (lo + colour_to_ab, hi + colour_to_ab), float("nan"), 0, 0, "published",
                   {"source": source} if source else {})

    # ------------------------------------------------------------------------------------------

    def colour_of(self, reference: Table) -> tuple[np.ndarray, np.ndarray]:
        """The colour (and its error) of each row of a reference catalog (``<band>_flux`` in nJy)."""
        blue, red = self.colour_bands
        for b in (blue, red):
            if f"{b}_flux" not in reference.colnames:
                raise InputError(f"ColourTerm: the reference has no column '{b}_flux' for the colour "
                                 f"{blue} - {red}; columns: {reference.colnames}")
        fb = np.asarray(reference[f"{blue}_flux"], dtype=np.float64)
        fr = np.asarray(reference[f"{red}_flux"], dtype=np.float64)
        eb = np.asarray(reference[f"{blue}_flux_err"], dtype=np.float64) if f"{blue}_flux_err" in reference.colnames \
            else np.zeros_like(fb)
        er = np.asarray(reference[f"{red}_flux_err"], dtype=np.float64) if f"{red}_flux_err" in reference.colnames \
            else np.zeros_like(fr)
        with np.errstate(divide="ignore", invalid="ignore"):
            colour = njy_to_mag(fb) - njy_to_mag(fr)
            err = 1.0857362047581294 * np.hypot(eb / fb, er / fr)
        return colour, err

    def convert_flux(self, flux, flux_err, colour, colour_err=None, *, outside: str = "drop"):
        """Reference-band fluxes (nJy) → target-band fluxes, star by star.

        ``f_target = f_reference × 10^(−0.4 ct(colour))``; the error adds the reference flux
        error and the colour error (when given) through the slope of the polynomial. Stars
        without a colour, or (``outside='drop'``) with a colour outside ``colour_range``, get
        NaN; ``outside='clip'`` evaluates them at the nearest end of the range.

        Returns
        -------
        flux, flux_err : numpy.ndarray
        """
        if outside not in ("drop", "clip"):
            raise InputError(f"ColourTerm: outside={outside!r}; use 'drop' or 'clip'")
        f = np.asarray(flux, dtype=np.float64)
        fe = np.zeros_like(f) if flux_err is None else np.asarray(flux_err, dtype=np.float64)
        c = np.asarray(colour, dtype=np.float64)
        ce = np.zeros_like(c) if colour_err is None else np.nan_to_num(np.asarray(colour_err, dtype=np.float64))
        out = f * 10.0 ** (-0.4 * self(c))
        dmag = np.abs(self.derivative(c)) * ce
        with np.errstate(divide="ignore", invalid="ignore"):
            err = out * np.hypot(fe / f, 0.4 * np.log(10.0) * dmag)
        bad = ~np.isfinite(c)
        if outside == "drop":
            bad = bad | (c < self.colour_range[0]) | (c > self.colour_range[1])
        return np.where(bad, np.nan, out), np.where(bad, np.nan, err)

    def apply(self, reference: Table, *, outside: str = "drop") -> Table:
        """A copy of ``reference`` (``<band>_flux`` columns, nJy) with ``<target_band>_flux`` and
        ``_flux_err`` added; see :meth:`convert_flux`."""
        name = f"{self.reference_band}_flux"
        if name not in reference.colnames:
            raise InputError(f"ColourTerm.apply: the reference has no column {name!r}; columns: {reference.colnames}")
        colour, colour_err = self.colour_of(reference)
        fe = reference[f"{name}_err"] if f"{name}_err" in reference.colnames else None
        flux, err = self.convert_flux(reference[name], fe, colour, colour_err, outside=outside)
        out = reference.copy(copy_data=True)
        out[f"{self.target_band}_flux"] = flux * u.nJy
        out[f"{self.target_band}_flux_err"] = err * u.nJy
        out.meta = dict(reference.meta)
        out.meta["colour_terms"] = [*out.meta.get("colour_terms", []), self.describe()]
        return out

    def describe(self) -> str:
        """One line: ``target − reference = polynomial in (blue − red)`` with its range and rms."""
        terms = " ".join(f"{c:+.5f}" + ("" if k == 0 else f"·c^{k}" if k > 1 else "·c")
                         for k, c in enumerate(self.coefficients))
        blue, red = self.colour_bands
        where = f"c = {blue} − {red} in [{self.colour_range[0]:.2f}, {self.colour_range[1]:.2f}]"
        if self.method in ("fit", "synthetic"):
            what = "stars" if self.method == "fit" else "SEDs"
            how = f"rms {1000 * self.rms:.1f} mmag, {self.method}, {self.n_stars} {what}"
        else:
            how = self.meta.get("source", self.method)
        return f"{self.target_band} − {self.reference_band} = {terms}  ({where}, {how})"

    # ------------------------------------------------------------------------------------------

    def to_hdu(self) -> fits.BinTableHDU:
        """The colour term as a FITS table HDU (EXTNAME ``COLOURTERM``)."""
        hdu = fits.BinTableHDU(Table({"power": np.arange(len(self.coefficients), dtype=np.int16),
                                      "coefficient": np.asarray(self.coefficients)}), name=_EXTNAME)
        h = hdu.header
        h["CTREF"] = (self.reference_band, "reference band")
        h["CTTARGET"] = (self.target_band, "target (instrument) band")
        h["CTBLUE"] = (self.colour_bands[0], "colour = m(CTBLUE) - m(CTRED), AB")
        h["CTRED"] = (self.colour_bands[1], "")
        h["CTCMIN"] = (self.colour_range[0], "valid colour range, low")
        h["CTCMAX"] = (self.colour_range[1], "valid colour range, high")
        if np.isfinite(self.rms):  # a published term has no rms, and FITS cards hold no NaN
            h["CTRMS"] = (self.rms, "[mag] rms of residuals")
        h["CTNSTAR"] = (self.n_stars, "stars or SEDs used")
        h["CTNREJ"] = (self.n_rejected, "rejected as outliers")
        h["CTMETHOD"] = (self.method, "fit, synthetic or given")
        for k, v in sorted(self.meta.items()):
            h[f"HIERARCH CTMETA {k}"] = _ascii(", ".join(v) if isinstance(v, (list, tuple)) else str(v))
        return hdu

    @classmethod
    def from_hdu(cls, hdu, path: str = "") -> ColourTerm:
        """Inverse of :meth:`to_hdu`."""
        h = hdu.header
        try:
            data = Table(hdu.data)
            order = np.argsort(np.asarray(data["power"]))
            coef = tuple(float(c) for c in np.asarray(data["coefficient"])[order])
            meta = {k[len("CTMETA "):]: _unascii(h[k]) for k in h if k.startswith("CTMETA ")}
            return cls(coef, str(h["CTREF"]), str(h["CTTARGET"]), (str(h["CTBLUE"]), str(h["CTRED"])),
                       (float(h["CTCMIN"]), float(h["CTCMAX"])), float(h.get("CTRMS", np.nan)), int(h["CTNSTAR"]),
                       int(h.get("CTNREJ", 0)), str(h.get("CTMETHOD", "given")), meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: HDU {hdu.name!r} is not a photocalib colour term ({exc}); "
                             "write one with ColourTerm.write") from exc

    def write(self, path: str | os.PathLike, overwrite: bool = True) -> None:
        """Write to a FITS file atomically (see :func:`write_colour_terms` for several)."""
        write_colour_terms([self], path, overwrite=overwrite)

    @classmethod
    def read(cls, path: str | os.PathLike, target_band: str | None = None) -> ColourTerm:
        """Read a colour term written by :meth:`write` (``target_band`` picks one of several)."""
        terms = read_colour_terms(path)
        if target_band is None:
            if len(terms) != 1:
                raise InputError(f"{path}: {len(terms)} colour terms ({sorted(terms)}); pass target_band=")
            return next(iter(terms.values()))
        if target_band not in terms:
            raise InputError(f"{path}: no colour term for target band {target_band!r}; it has {sorted(terms)}")
        return terms[target_band]


def _ascii(text: str) -> str:
    """FITS cards hold ASCII only: backslash-escape the rest (a published term's source names
    'Gaia→DECam'), reversibly (:func:`_unascii`)."""
    return text.replace("\\", "\\\\").encode("ascii", "backslashreplace").decode("ascii")


def _unascii(value) -> str:
    text = str(value)
    return text.encode("ascii", "backslashreplace").decode("unicode_escape") if "\\" in text else text


def write_colour_terms(terms: Sequence[ColourTerm], path: str | os.PathLike, overwrite: bool = True) -> None:
    """Write several colour terms (one HDU each, distinct target bands) to one FITS file."""
    targets = [t.target_band for t in terms]
    if len(set(targets)) != len(targets):
        raise InputError(f"write_colour_terms: target bands repeat ({targets}); one term per target band")
    hdus = [fits.PrimaryHDU()]
    for k, t in enumerate(terms, start=1):
        hdu = t.to_hdu()
        hdu.header["EXTVER"] = k
        hdus.append(hdu)
    atomic_write_hdulist(fits.HDUList(hdus), path, overwrite=overwrite)


def read_colour_terms(path: str | os.PathLike) -> dict[str, ColourTerm]:
    """All colour terms in a FITS file, by target band."""
    out = {}
    with open_fits(path) as hdul:
        for hdu in hdul:
            if hdu.name == _EXTNAME:
                t = ColourTerm.from_hdu(hdu, str(path))
                out[t.target_band] = t
    if not out:
        raise InputError(f"{path}: no {_EXTNAME} HDU; write colour terms with ColourTerm.write")
    return out


def _cols(table) -> list[str]:
    return list(table.colnames) if hasattr(table, "colnames") else list(table.columns)


def convert_reference(reference, colour_term: ColourTerm, *, flux: str = "flux", colour: str = "colour",
                      outside: str = "drop"):
    """A reference in the library's form (``flux``, ``flux_err`` in nJy, plus a ``colour``
    column) carried from the colour term's reference band into its target band.

    Rows that cannot be converted (no colour, or outside the term's colour range with
    ``outside='drop'``) are removed. Works on an astropy Table or a pandas DataFrame and returns
    the same type; this is what ``fit_joint(..., colour_term=)`` applies before the fit.

    Raises
    ------
    InputError
        The reference has no ``flux`` or ``colour`` column.
    """
    names = _cols(reference)
    for need in (flux, colour):
        if need not in names:
            raise InputError(f"convert_reference: the reference has no column {need!r} (columns: {names}); "
                             f"a colour term needs the reference-band flux and the colour "
                             f"{colour_term.colour_bands[0]} - {colour_term.colour_bands[1]} of each star "
                             "(photocalib.refcat.to_reference(table, band, colour_term) makes both)")
    err = reference[f"{flux}_err"] if f"{flux}_err" in names else None
    cerr = reference[f"{colour}_err"] if f"{colour}_err" in names else None
    f, fe = colour_term.convert_flux(np.asarray(reference[flux]), None if err is None else np.asarray(err),
                                     np.asarray(reference[colour]), None if cerr is None else np.asarray(cerr),
                                     outside=outside)
    keep = np.isfinite(f)
    out = reference[keep].copy()
    if hasattr(out, "colnames"):
        out[flux] = f[keep]
        out[f"{flux}_err"] = fe[keep]
        out.meta["colour_terms"] = [*out.meta.get("colour_terms", []), colour_term.describe()]
    else:
        out[flux] = f[keep]
        out[f"{flux}_err"] = fe[keep]
    return out


def to_reference(catalog: Table, band: str | None = None, colour_term: ColourTerm | None = None,
                 *, convert: bool = True) -> Table:
    """A catalog from :func:`read_reference` in the form the fitters take: ``id``, ``ra``,
    ``dec``, ``flux``, ``flux_err`` (nJy) and, with a colour term, ``colour`` (+ ``_err``).

    Parameters
    ----------
    catalog : astropy Table
        ``<band>_flux`` columns in nJy.
    band : str, optional
        The band to calibrate against (default the colour term's reference band).
    colour_term : ColourTerm, optional
        Adds the colour of its ``colour_bands``; with ``convert`` the flux is carried into its
        target band (stars without a usable colour are removed), without it the flux stays in
        the reference band for ``fit_single(..., colour_term=)`` / ``fit_joint(..., colour_term=)``.
    """
    if band is None:
        if colour_term is None:
            raise InputError("to_reference: pass band= (one of the catalog's <band>_flux columns) or colour_term=")
        band = colour_term.reference_band
    if f"{band}_flux" not in catalog.colnames:
        have = [c[:-5] for c in catalog.colnames if c.endswith("_flux")]
        raise InputError(f"to_reference: no column '{band}_flux'; the catalog has bands {have}")
    out = Table()
    for name in ("id", "ra", "dec"):
        out[name] = catalog[name]
    out["flux"] = np.asarray(catalog[f"{band}_flux"], dtype=np.float64)
    out["flux_err"] = (np.asarray(catalog[f"{band}_flux_err"], dtype=np.float64)
                       if f"{band}_flux_err" in catalog.colnames else np.zeros(len(catalog)))
    out.meta = dict(catalog.meta)
    out.meta["band"] = band
    if colour_term is None:
        return out[np.isfinite(out["flux"]) & (out["flux"] > 0)]
    if band != colour_term.reference_band:
        raise InputError(f"to_reference: band {band!r} differs from the colour term's reference band "
                         f"{colour_term.reference_band!r}")
    out["colour"], out["colour_err"] = colour_term.colour_of(catalog)
    good = np.isfinite(out["flux"]) & (out["flux"] > 0) & np.isfinite(out["colour"])
    out = out[good]
    if convert:
        out = convert_reference(out, colour_term)
        out.meta["band"] = colour_term.target_band
    return out
