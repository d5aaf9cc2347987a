"""Chromatic flats: monochromatic flats flattened to an SED, and the background mapping M.

A flat measured at many wavelengths is integrated over a source's (or the sky's) photon
spectrum to give the flat for that SED; M = A · F_sky / F_fid joins photometric and background images.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.polynomial import chebyshev as C

from ..errors import InputError
from ..fields import BoundedField, ChebyshevField, ConstantField, SplineField
from ..geom import Box

__all__ = [
    "ChromaticFlat",
    "Spectrum",
    "attach_background_mapping",
    "background_mapping",
    "read_spectrum",
]

#: Accepted spellings of the wavelength unit of a tabulated spectrum, and the factor to nm.
_WAVE_UNITS = {"nm": 1.0, "nanometer": 1.0, "angstrom": 0.1, "a": 0.1, "aa": 0.1, "um": 1e3, "micron": 1e3}

#: What the values of a spectrum are. GalSim's shipped SEDs are ``flambda``; a ``galsim.SED``
#: called at a wavelength returns ``fphotons`` (photons / nm / cm² / s).
_FLUX_TYPES = ("flambda", "fphotons", "fnu")


def _wave_factor(wave_unit: str) -> float:
    try:
        return _WAVE_UNITS[str(wave_unit).lower()]
    except KeyError:
        raise InputError(
            f"unknown wavelength unit {wave_unit!r}; use one of 'nm', 'Angstrom', 'um'"
        ) from None


def _as_wavelength_nm(wavelength, wave_unit: str, what: str) -> np.ndarray:
    """1-D float64 wavelengths in nm; an astropy Quantity is converted, ignoring ``wave_unit``."""
    if hasattr(wavelength, "unit") and hasattr(wavelength, "to_value"):
        import astropy.units as u

        try:
            wl = np.asarray(wavelength.to_value(u.nm, equivalencies=u.spectral()), dtype=np.float64)
        except u.UnitConversionError as exc:
            raise InputError(f"{what}: cannot convert {wavelength.unit} to nm ({exc})") from exc
    else:
        wl = np.asarray(wavelength, dtype=np.float64) * _wave_factor(wave_unit)
    wl = np.atleast_1d(wl)
    if wl.ndim != 1 or wl.size < 2:
        raise InputError(f"{what}: wavelengths must be a 1-D array of at least 2 values, got shape {wl.shape}")
    if not np.all(np.isfinite(wl)) or np.any(wl <= 0):
        raise InputError(f"{what}: wavelengths must be finite and positive")
    if np.any(np.diff(wl) <= 0):
        raise InputError(f"{what}: wavelengths must be strictly increasing; sort the table first")
    return wl


@dataclass(frozen=True)
class Spectrum:
    """A tabulated spectrum (an SED or a sky spectrum), linear between its samples.

    Only the *shape* matters to flattening, so the overall unit of ``values`` is irrelevant;
    what matters is what they are per (``flux_type``):

    * ``"flambda"``: energy per unit wavelength (erg/s/cm²/nm, or /Å: GalSim's shipped SED files);
    * ``"fphotons"``: photons per unit wavelength (what a ``galsim.SED`` returns when called);
    * ``"fnu"``: energy per unit frequency (e.g. Jy).

    Photon-counting weights are ``f_λ λ`` ∝ ``fphotons`` ∝ ``f_ν / λ``.

    Parameters
    ----------
    wavelength_nm : array_like or astropy Quantity
        Strictly increasing wavelengths (nm unless ``wave_unit`` says otherwise, or a Quantity).
    values : array_like
        Non-negative spectral density at those wavelengths.
    flux_type : {"flambda", "fphotons", "fnu"}
        What ``values`` are (see above).
    wave_unit : str
        Unit of ``wavelength_nm`` when it is a plain array: ``"nm"`` or ``"Angstrom"``.

    Raises
    ------
    InputError
        Wavelengths not increasing or not positive, values negative or not finite, lengths
        differing, or an unknown ``flux_type`` / ``wave_unit``.

    Examples
    --------
    A ``galsim.SED`` is passed by sampling it (the library does not import GalSim):

    >>> import numpy as np
    >>> wl = np.linspace(500.0, 720.0, 221)
    >>> sed = Spectrum(wl, np.ones_like(wl), flux_type="fphotons")  # e.g. galsim_sed(wl)
    >>> sed.photons(np.array([600.0]))
    array([1.])
    """

    wavelength_nm: np.ndarray
    values: np.ndarray
    flux_type: str = "flambda"
    wave_unit: str = field(default="nm", repr=False)

    def __post_init__(self) -> None:
        wl = _as_wavelength_nm(self.wavelength_nm, self.wave_unit, "Spectrum")
        vals = np.asarray(self.values, dtype=np.float64).ravel()
        if vals.shape != wl.shape:
            raise InputError(
                f"Spectrum: {vals.size} values for {wl.size} wavelengths; they must match"
            )
        if not np.all(np.isfinite(vals)) or np.any(vals < 0):
            raise InputError("Spectrum: values must be finite and non-negative")
        if self.flux_type not in _FLUX_TYPES:
            raise InputError(
                f"Spectrum: unknown flux_type {self.flux_type!r}; use one of {', '.join(_FLUX_TYPES)}"
            )
        wl.setflags(write=False)
        vals = vals.copy()
        vals.setflags(write=False)
        object.__setattr__(self, "wavelength_nm", wl)
        object.__setattr__(self, "values", vals)
        object.__setattr__(self, "wave_unit", "nm")

    @classmethod
    def from_file(cls, path: str | os.PathLike, wave_unit: str = "nm", flux_type: str = "flambda") -> Spectrum:
        """Read a two-column ASCII spectrum (``#`` comments), e.g. one of GalSim's shipped SEDs.

        Parameters
        ----------
        path : path-like
            The file: wavelength in the first column, spectral density in the second.
        wave_unit : str
            ``"nm"`` or ``"Angstrom"`` (GalSim's ``CWW_*.sed`` files are in Å, ``vega.txt`` in nm).
        flux_type : str
            ``"flambda"`` for GalSim's SED files; see :class:`Spectrum`.
        """
        wl, values = read_spectrum(path, wave_unit=wave_unit)
        return cls(wl, values, flux_type=flux_type)

    def photons(self, wavelength_nm: np.ndarray) -> np.ndarray:
        """Photon spectral density (arbitrary scale) at ``wavelength_nm``, zero off the table.

        The *given* quantity is interpolated linearly, then converted, so a ``flambda`` table
        gives ``interp(f_λ) · λ`` exactly as GalSim evaluates its SEDs.
        """
        wl = np.asarray(wavelength_nm, dtype=np.float64)
        v = np.interp(wl, self.wavelength_nm, self.values, left=0.0, right=0.0)
        if self.flux_type == "flambda":
            return v * wl
        if self.flux_type == "fnu":
            return v / wl
        return v


def read_spectrum(path: str | os.PathLike, wave_unit: str = "nm") -> tuple[np.ndarray, np.ndarray]:
    """Read a two-column ASCII table (wavelength, value), ``#`` comments allowed.

    Parameters
    ----------
    path : path-like
        File such as GalSim's ``share/SEDs/*.sed`` or ``share/bandpasses/LSST_r.dat``.
    wave_unit : str
        Unit of the first column (``"nm"`` or ``"Angstrom"``); the result is in nm.

    Returns
    -------
    wavelength_nm, values : numpy.ndarray
        Strictly increasing wavelengths in nm and the second column.

    Raises
    ------
    InputError
        The file is missing, unreadable, has fewer than two columns, unsorted wavelengths, or a
        NaN, infinite or negative value (the row is named).
    """
    factor = _wave_factor(wave_unit)
    try:
        data = np.loadtxt(path, comments="#", ndmin=2, dtype=np.float64)
    except OSError as exc:
        raise InputError(f"{path}: cannot read spectrum ({exc})") from exc
    except ValueError as exc:
        raise InputError(f"{path}: not a two-column numeric table ({exc})") from exc
    if data.shape[1] < 2 or data.shape[0] < 2:
        raise InputError(f"{path}: needs two columns (wavelength, value) and two rows, got {data.shape}")
    wl = _as_wavelength_nm(data[:, 0] * factor, "nm", str(path))
    values = data[:, 1].copy()
    # An SED or throughput is a non-negative finite density: name the first bad row (1-based
    # data row, comments not counted) so the file can be fixed rather than failing later.
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{path}: value {values[row]!r} at data row {row + 1} (wavelength {data[row, 0]!r}) is "
            "not a finite non-negative number; spectra and throughputs must be >= 0 everywhere"
        )
    return wl, values


def _as_spectrum(sed, flux, flux_type: str, wave_unit: str, what: str) -> Spectrum:
    if isinstance(sed, Spectrum):
        if flux is not None:
            raise InputError(f"{what}: pass either a Spectrum or (wavelength, flux), not both")
        return sed
    if flux is None:
        raise InputError(
            f"{what}: give the SED as (sed_wavelength_nm, sed_flambda) or as a Spectrum; "
            "for a galsim.SED pass (sed.wave_list, sed(sed.wave_list), flux_type='fphotons')"
        )
    return Spectrum(sed, flux, flux_type=flux_type, wave_unit=wave_unit)


class ChromaticFlat:
    r"""A flat that depends on wavelength, flattened to any SED.

    The flat at a wavelength between two monochromatic flats is their linear interpolation;
    beyond the scanned range it is the nearest monochromatic flat. Flattening to an SED
    :math:`f_\lambda` follows docs/design.md's photon-counting formula

    .. math::
        F_{\rm SED}(x, y) = \frac{\int \mathrm{flat}(x, y, \lambda)\, T(\lambda)\,
        f_\lambda(\lambda)\, \lambda\, d\lambda}{\int T(\lambda)\, f_\lambda(\lambda)\,
        \lambda\, d\lambda},

    with :math:`T` the system throughput at the reference position (it defines the photometric
    system; the cube carries everything that varies across the detector). Because the flat is
    piecewise linear in :math:`\lambda`, the integral is a weight vector over the cube's
    wavelengths, computed once per SED on a fine grid (the union of a uniform grid of
    ``grid_step_nm``, the cube's, the throughput's and the SED's own wavelengths, with
    trapezoid weights); flattening is then one ``tensordot`` over the cube.

    Parameters
    ----------
    wavelength_nm : array_like or astropy Quantity, shape (n_lambda,)
        Strictly increasing wavelengths of the monochromatic flats.
    cube : array_like, shape (n_lambda, ny, nx)
        The monochromatic flats (relative response, any float dtype; not copied if already a
        float ndarray). They should share one normalisation (e.g. 1 at a reference pixel).
    throughput : array_like, callable, or (wavelength_nm, T) pair
        System throughput: an array on ``wavelength_nm``; a ``(wavelength_nm, T)`` pair on its
        own grid (for a ``galsim.Bandpass`` ``bp``: ``(bp.wave_list, bp(bp.wave_list))``),
        linear between samples and zero beyond; or a callable ``T(wavelength_nm)``, sampled on
        the fine grid over the cube's wavelength range.
    bbox : Box, optional
        Pixel box of the detector (default ``Box(0, 0, nx * binning, ny * binning)``); fields
        are made on this box.
    grid_step_nm : float
        Spacing of the uniform part of the integration grid (default 0.25 nm).
    binning : int
        Detector pixels per cube pixel along each axis (default 1). A full-resolution cube of a
        4k×2k detector at 100 wavelengths is 6 GB, so scans are usually stored binned: cube pixel
        ``[j, i]`` is the mean over detector pixels ``[j b:(j+1) b, i b:(i+1) b]`` (the last row
        and column may be partial). :meth:`flatten` then returns a binned image, while
        :meth:`flatten_field` and :meth:`ratio_field` give fields on the full-resolution box.
    cube_is_response : bool
        If True, the cube is the full system response :math:`R(x, y, \lambda) = T(\lambda)\,
        \mathrm{flat}(x, y, \lambda)` rather than the flat (e.g. a scan through a filter whose
        edge moves across the field, where ``R / T`` is undefined beyond the nominal band
        edges). Flattening is then :math:`\int R\, N\, d\lambda / \int T\, N\, d\lambda`
        with :math:`N = f_\lambda \lambda`, the response taken as zero beyond the scan.

    Raises
    ------
    InputError
        Shapes that disagree, non-finite values, negative throughput, or a throughput that is
        zero everywhere.

    Examples
    --------
    >>> import numpy as np
    >>> wl = np.array([500.0, 600.0, 700.0])
    >>> cube = np.stack([np.full((2, 3), v) for v in (0.9, 1.0, 1.1)])
    >>> flat = ChromaticFlat(wl, cube, np.ones(3))
    >>> sed_wl = np.array([450.0, 750.0])
    >>> float(flat.flatten(sed_wl, np.array([1.0, 1.0]), flux_type="fphotons")[0, 0])
    1.0
    """

    def __init__(
        self,
        wavelength_nm,
        cube,
        throughput,
        bbox: Box | None = None,
        grid_step_nm: float = 0.25,
        binning: int = 1,
        cube_is_response: bool = False,
    ) -> None:
        wl = _as_wavelength_nm(wavelength_nm, "nm", "ChromaticFlat wavelength_nm")
        cube = np.asarray(cube)
        if cube.dtype.kind != "f":
            cube = cube.astype(np.float64)
        if cube.ndim != 3 or cube.shape[0] != wl.size:
            raise InputError(
                f"ChromaticFlat cube must have shape (n_lambda={wl.size}, ny, nx), got {cube.shape}"
            )
        if not np.all(np.isfinite(cube)):
            raise InputError("ChromaticFlat cube has non-finite values; interpolate or mask them first")
        binning = int(binning)
        if binning < 1:
            raise InputError(f"ChromaticFlat binning must be a positive integer, got {binning}")
        ny, nx = cube.shape[1:]
        if bbox is None:
            bbox = Box(0, 0, nx * binning, ny * binning)
        elif (
            not isinstance(bbox, Box)
            or -(-bbox.width // binning) != nx
            or -(-bbox.height // binning) != ny
        ):
            raise InputError(
                f"ChromaticFlat bbox {bbox!r} does not match the cube's shape {cube.shape[1:]} "
                f"binned by {binning}; give the detector's Box and the cube's binning"
            )
        if not (np.isfinite(grid_step_nm) and grid_step_nm > 0):
            raise InputError(f"ChromaticFlat grid_step_nm must be positive, got {grid_step_nm}")
        view = cube.view()
        view.setflags(write=False)
        wl = wl.copy()
        wl.setflags(write=False)
        self._wl = wl
        self._cube = view
        self._bbox = bbox
        self._step = float(grid_step_nm)
        self._binning = binning
        self._is_response = bool(cube_is_response)
        if self._is_response:
            # Where the response is non-zero anywhere: the SED must cover it.
            nz = np.flatnonzero(np.any(cube != 0, axis=(1, 2)))
            if nz.size == 0:
                raise InputError("ChromaticFlat: the response cube is zero at every wavelength")
            self._response_support = (float(wl[max(nz[0] - 1, 0)]), float(wl[min(nz[-1] + 1, wl.size - 1)]))
        self._t_callable: Callable[[np.ndarray], np.ndarray] | None = None
        self._t_wl: np.ndarray | None = None
        self._t_val: np.ndarray | None = None
        if callable(throughput):
            self._t_callable = throughput
            self._range = (float(wl[0]), float(wl[-1]))
        else:
            if isinstance(throughput, tuple) and len(throughput) == 2:
                t_wl = _as_wavelength_nm(throughput[0], "nm", "ChromaticFlat throughput wavelengths")
                t_val = np.asarray(throughput[1], dtype=np.float64).ravel()
            else:
                t_wl = wl
                t_val = np.asarray(throughput, dtype=np.float64).ravel()
            if t_val.shape != t_wl.shape:
                raise InputError(
                    f"ChromaticFlat throughput has {t_val.size} values for {t_wl.size} wavelengths; "
                    "give it on the cube's wavelengths or as a (wavelength_nm, T) pair"
                )
            if not np.all(np.isfinite(t_val)) or np.any(t_val < 0):
                raise InputError("ChromaticFlat throughput must be finite and non-negative")
            nz = np.flatnonzero(t_val > 0)
            if nz.size == 0:
                raise InputError("ChromaticFlat throughput is zero everywhere")
            # Integrate only where T > 0: between the samples bracketing the non-zero ones.
            lo = t_wl[max(nz[0] - 1, 0)]
            hi = t_wl[min(nz[-1] + 1, t_wl.size - 1)]
            self._t_wl, self._t_val = t_wl, t_val
            self._range = (float(lo), float(hi))
        self._field_cache: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    # -- properties ----------------------------------------------------------------------------
    @property
    def wavelength_nm(self) -> np.ndarray:
        """Wavelengths of the monochromatic flats, nm (read-only)."""
        return self._wl

    @property
    def cube(self) -> np.ndarray:
        """The monochromatic flats, shape ``(n_lambda, ny, nx)`` (read-only view)."""
        return self._cube

    @property
    def bbox(self) -> Box:
        """Pixel box of the flats."""
        return self._bbox

    @property
    def binning(self) -> int:
        """Detector pixels per cube pixel along each axis."""
        return self._binning

    @property
    def cube_is_response(self) -> bool:
        """Whether the cube is the full response ``T · flat`` (see the class docstring)."""
        return self._is_response

    @property
    def integration_range_nm(self) -> tuple[float, float]:
        """Wavelength range integrated over: the throughput's support (or the cube's range)."""
        return self._range

    def throughput(self, wavelength_nm) -> np.ndarray:
        """System throughput T at ``wavelength_nm`` (zero outside a tabulated throughput)."""
        wl = np.asarray(wavelength_nm, dtype=np.float64)
        if self._t_callable is not None:
            return np.asarray(self._t_callable(wl), dtype=np.float64) * np.ones_like(wl)
        return np.interp(wl, self._t_wl, self._t_val, left=0.0, right=0.0)

    # -- flattening ----------------------------------------------------------------------------
    def _fine_grid(self, spectrum: Spectrum, lo: float, hi: float, extra=()) -> np.ndarray:
        n = max(int(np.ceil((hi - lo) / self._step)), 1)
        parts = [np.linspace(lo, hi, n + 1), self._wl, spectrum.wavelength_nm, *extra]
        grid = np.unique(np.concatenate(parts))
        return grid[(grid >= lo) & (grid <= hi)]

    @staticmethod
    def _trapezoid(grid: np.ndarray) -> np.ndarray:
        dl = np.diff(grid)
        trap = np.zeros_like(grid)
        trap[:-1] += 0.5 * dl
        trap[1:] += 0.5 * dl
        return trap

    def _hat_weights(self, grid: np.ndarray, gw: np.ndarray) -> np.ndarray:
        """∑_i gw_i h_k(λ_i) for the hat functions h_k of the cube's wavelengths (clamped)."""
        k = np.clip(np.searchsorted(self._wl, grid, side="right") - 1, 0, self._wl.size - 2)
        t = np.clip((grid - self._wl[k]) / (self._wl[k + 1] - self._wl[k]), 0.0, 1.0)
        n = self._wl.size
        return np.bincount(k, gw * (1.0 - t), minlength=n) + np.bincount(k + 1, gw * t, minlength=n)

    @staticmethod
    def _check_covers(spectrum: Spectrum, lo: float, hi: float, what: str) -> None:
        s_lo, s_hi = spectrum.wavelength_nm[0], spectrum.wavelength_nm[-1]
        if s_lo > lo + 1e-9 or s_hi < hi - 1e-9:
            raise InputError(
                f"SED covers {s_lo:.1f}-{s_hi:.1f} nm but the {what} is non-zero over "
                f"{lo:.1f}-{hi:.1f} nm; extend the SED over the whole band"
            )

    def weights(self, sed, sed_flux=None, *, flux_type: str = "flambda", wave_unit: str = "nm") -> np.ndarray:
        """Weights ``w`` over the cube's wavelengths with ``F_SED = tensordot(w, cube, 1)``.

        Parameters
        ----------
        sed : array_like or Spectrum
            SED wavelengths (or a :class:`Spectrum`, with ``sed_flux`` omitted).
        sed_flux : array_like, optional
            SED values at those wavelengths; see :class:`Spectrum` for ``flux_type``.
        flux_type, wave_unit : str
            As for :class:`Spectrum`.

        Returns
        -------
        numpy.ndarray, shape (n_lambda,)
            Non-negative weights; they sum to 1 unless ``cube_is_response``.

        Raises
        ------
        InputError
            The SED does not cover the band (where T > 0, or where a response cube is
            non-zero), or SED × T integrates to zero.
        """
        spectrum = _as_spectrum(sed, sed_flux, flux_type, wave_unit, "ChromaticFlat.flatten")
        lo, hi = self._range
        extra = () if self._t_wl is None else (self._t_wl,)
        grid = self._fine_grid(spectrum, lo, hi, extra)
        tvals = self.throughput(grid)
        inband = tvals > 0
        if inband.any():
            self._check_covers(spectrum, grid[inband][0], grid[inband][-1], "throughput")
        gw = tvals * spectrum.photons(grid) * self._trapezoid(grid)
        total = gw.sum()
        if not total > 0:
            raise InputError("SED × throughput integrates to zero: the SED has no photons in the band")
        if not self._is_response:
            # Σ_k h_k = 1, so these weights sum to exactly 1.
            return self._hat_weights(grid, gw) / total
        r_lo, r_hi = self._response_support
        self._check_covers(spectrum, r_lo, r_hi, "response cube")
        rgrid = self._fine_grid(spectrum, float(self._wl[0]), float(self._wl[-1]))
        rw = spectrum.photons(rgrid) * self._trapezoid(rgrid)
        return self._hat_weights(rgrid, rw) / total

    def flatten(
        self,
        sed_wavelength_nm,
        sed_flambda=None,
        *,
        flux_type: str = "flambda",
        wave_unit: str = "nm",
        dtype=np.float64,
    ) -> np.ndarray:
        """The flat for one SED, by docs/design.md's photon-weighted formula.

        Parameters
        ----------
        sed_wavelength_nm : array_like, astropy Quantity, or Spectrum
            Wavelengths of the SED (any grid; nm unless ``wave_unit``), or a :class:`Spectrum`.
        sed_flambda : array_like, optional
            The SED on those wavelengths (f_λ by default; see ``flux_type``). For a
            ``galsim.SED`` ``s``: ``flatten(s.wave_list, s(s.wave_list), flux_type="fphotons")``.
        flux_type : {"flambda", "fphotons", "fnu"}
            What ``sed_flambda`` holds.
        wave_unit : str
            ``"nm"`` or ``"Angstrom"`` (GalSim's ``CWW_*.sed`` files are in Å).
        dtype : numpy dtype
            dtype of the result.

        Returns
        -------
        numpy.ndarray, shape (ny, nx)
            The flattened flat.
        """
        w = self.weights(sed_wavelength_nm, sed_flambda, flux_type=flux_type, wave_unit=wave_unit)
        n, ny, nx = self._cube.shape
        # One matrix-vector product in the cube's own dtype: a float32 cube is not copied to
        # float64 (its sums over ~100 wavelengths keep ~1e-7 relative precision).
        out = w.astype(self._cube.dtype) @ self._cube.reshape(n, ny * nx)
        return out.reshape(ny, nx).astype(dtype, copy=False)

    # -- fields --------------------------------------------------------------------------------
    def _block_basis(self, bin_size: int, order: int):
        """Block means of the cube and of the Chebyshev basis over the same blocks.

        Fitting block means with block-averaged basis functions (not their values at the block
        centres) makes the fit exact for any polynomial up to ``order``, whatever ``bin_size``.
        """
        b = self._binning
        ny, nx = self._cube.shape[1:]
        box = self._bbox
        # Detector pixels in each cube pixel (the last row / column may be partial).
        py = np.diff(np.minimum(np.arange(ny + 1) * b, box.height)).astype(np.float64)
        px = np.diff(np.minimum(np.arange(nx + 1) * b, box.width)).astype(np.float64)
        ey = np.arange(0, ny, bin_size)
        ex = np.arange(0, nx, bin_size)
        weighted = self._cube * py[:, None] * px[None, :]
        sums = np.add.reduceat(np.add.reduceat(weighted, ey, axis=1, dtype=np.float64), ex, axis=2)
        cy = np.add.reduceat(py, ey)
        cx = np.add.reduceat(px, ex)
        means = sums / (cy[:, None] * cx[None, :])
        xmin, xmax, ymin, ymax = box.extent
        u = (box.x0 + np.arange(box.width) - xmin) * (2.0 / (xmax - xmin)) - 1.0
        v = (box.y0 + np.arange(box.height) - ymin) * (2.0 / (ymax - ymin)) - 1.0
        bu = np.add.reduceat(C.chebvander(u, order), ex * b, axis=0) / cx[:, None]  # (nbx, o+1)
        bv = np.add.reduceat(C.chebvander(v, order), ey * b, axis=0) / cy[:, None]  # (nby, o+1)
        return means, bu, bv

    def _slice_fits(self, order: int, bin_size: int):
        """Chebyshev coefficients of every monochromatic flat, fitted to block means (cached)."""
        order, bin_size = int(order), int(bin_size)
        if order < 0 or bin_size < 1:
            raise InputError(f"ChromaticFlat: need order >= 0 and bin_size >= 1, got {order}, {bin_size}")
        key = (order, bin_size)
        if key not in self._field_cache:
            means, bu, bv = self._block_basis(bin_size, order)
            jj, ii = np.meshgrid(np.arange(order + 1), np.arange(order + 1), indexing="ij")
            keep = ii + jj <= order
            design = (bv[:, None, :, None] * bu[None, :, None, :]).reshape(bv.shape[0] * bu.shape[0], -1)
            design = design[:, keep.ravel()]
            if design.shape[0] < design.shape[1]:
                raise InputError(
                    f"ChromaticFlat: {design.shape[0]} blocks of {bin_size} pixels cannot fit "
                    f"{design.shape[1]} Chebyshev terms of order {order}; lower bin_size or order"
                )
            rhs = means.reshape(means.shape[0], -1).T  # (nblocks, n_lambda)
            sol, *_ = np.linalg.lstsq(design, rhs, rcond=None)  # (nterm, n_lambda)
            self._field_cache[key] = (sol, keep, means, design)
        return self._field_cache[key]

    def flatten_field(
        self,
        sed_wavelength_nm,
        sed_flambda=None,
        *,
        flux_type: str = "flambda",
        wave_unit: str = "nm",
        order: int = 6,
        bin_size: int = 16,
        kind: str = "chebyshev",
        nodes: int | tuple[int, int] = 8,
    ) -> BoundedField:
        """The flat for one SED as a smooth field on :attr:`bbox`.

        Every monochromatic flat is fitted once (block means of ``bin_size`` pixels, a
        triangular Chebyshev polynomial of ``order``); because both flattening and the fit are
        linear, the field for any SED is the weighted sum of those fits, so each further SED
        costs only its weight vector.

        Parameters
        ----------
        sed_wavelength_nm, sed_flambda, flux_type, wave_unit
            The SED, as for :meth:`flatten`.
        order : int
            Total order of the triangular Chebyshev polynomial.
        bin_size : int
            Block size in cube pixels for the fit (noise in the monochromatic flats averages down).
        kind : {"chebyshev", "spline"}
            A triangular :class:`ChebyshevField` (default), or a :class:`SplineField` with
            ``nodes`` nodes per axis least-squares fitted to the block means at the block
            centres (for structure a low-order polynomial cannot follow).
        nodes : int or (int, int)
            Spline nodes per axis (``kind="spline"``).

        Returns
        -------
        ChebyshevField or SplineField
        """
        w = self.weights(sed_wavelength_nm, sed_flambda, flux_type=flux_type, wave_unit=wave_unit)
        if kind == "spline":
            return self._spline(lambda means: np.tensordot(w, means, axes=1), bin_size, nodes)
        if kind != "chebyshev":
            raise InputError(f"ChromaticFlat: kind must be 'chebyshev' or 'spline', got {kind!r}")
        sol, keep, _, _ = self._slice_fits(order, bin_size)
        c = np.zeros((order + 1, order + 1))
        c[keep] = sol @ w
        return ChebyshevField(c, self._bbox)

    def ratio_field(
        self,
        numerator,
        denominator,
        *,
        order: int = 6,
        bin_size: int = 16,
        kind: str = "chebyshev",
        nodes: int | tuple[int, int] = 8,
    ) -> BoundedField:
        """``F_num / F_den`` for two :class:`Spectrum` objects, fitted as one smooth field.

        Fitting the ratio (close to 1 and smooth) is more accurate than dividing two fitted
        flats; this is the chromatic part of the background mapping (``F_sky / F_fid``).

        Parameters
        ----------
        numerator, denominator : Spectrum
            The SEDs (e.g. the sky's and the fiducial).
        order, bin_size, kind, nodes
            As for :meth:`flatten_field`.
        """
        wn = self.weights(numerator)
        wd = self.weights(denominator)
        if kind == "spline":
            return self._spline(
                lambda means: np.tensordot(wn, means, axes=1) / np.tensordot(wd, means, axes=1),
                bin_size, nodes,
            )
        if kind != "chebyshev":
            raise InputError(f"ChromaticFlat: kind must be 'chebyshev' or 'spline', got {kind!r}")
        _, keep, means, design = self._slice_fits(order, bin_size)
        ratio = np.tensordot(wn, means, axes=1) / np.tensordot(wd, means, axes=1)
        sol, *_ = np.linalg.lstsq(design, ratio.ravel(), rcond=None)
        c = np.zeros((order + 1, order + 1))
        c[keep] = sol
        return ChebyshevField(c, self._bbox)

    def _spline(self, combine, bin_size: int, nodes) -> SplineField:
        """A SplineField fitted to ``combine(block means of the cube)`` at the block centres."""
        bin_size = int(bin_size)
        if bin_size < 1:
            raise InputError(f"ChromaticFlat: bin_size must be >= 1, got {bin_size}")
        key = ("spline", bin_size)
        if key not in self._field_cache:
            means, _, _ = self._block_basis(bin_size, 0)
            b = self._binning
            box = self._bbox
            ny, nx = self._cube.shape[1:]
            ey, ex = np.arange(0, ny, bin_size) * b, np.arange(0, nx, bin_size) * b
            cy = np.diff(np.append(ey, box.height))
            cx = np.diff(np.append(ex, box.width))
            yc = box.y0 + ey + 0.5 * (cy - 1)
            xc = box.x0 + ex + 0.5 * (cx - 1)
            self._field_cache[key] = (means, *np.meshgrid(xc, yc))
        means, xx, yy = self._field_cache[key]
        values = combine(means)
        return SplineField.fit(xx.ravel(), yy.ravel(), values.ravel(), nodes=nodes, bbox=self._bbox)

    def __repr__(self) -> str:
        lo, hi = self._range
        return (
            f"ChromaticFlat(n_lambda={self._wl.size}, {self._wl[0]:.1f}-{self._wl[-1]:.1f} nm, "
            f"band {lo:.1f}-{hi:.1f} nm, bbox={self._bbox!r})"
        )


def background_mapping(
    pixel_area: BoundedField | float,
    sky_flat: BoundedField | None = None,
    fiducial_flat: BoundedField | None = None,
    *,
    chromatic_ratio: BoundedField | None = None,
) -> BoundedField:
    """The mapping M = A · F_sky / F_fid from the photometric to the background image.

    The photometric image (fluence, flattened to the fiducial SED) divided by M is the
    background image (surface brightness, flattened to the sky's SED):
    ``sb_sky = fluence_fid / M`` (docs/design.md). Attach it with
    ``exposure.replace(background_mapping=M)``.

    Parameters
    ----------
    pixel_area : BoundedField or float
        Pixel area A in arcsec² (``exposure.pixel_area_field()``), or a constant.
    sky_flat, fiducial_flat : BoundedField, optional
        Flats flattened to the sky's and to the fiducial SED (:meth:`ChromaticFlat.flatten_field`).
    chromatic_ratio : BoundedField, optional
        ``F_sky / F_fid`` fitted directly (:meth:`ChromaticFlat.ratio_field`); use instead of
        the two flats.

    Returns
    -------
    BoundedField
        ``A * F_sky / F_fid`` (a product of the given fields, evaluated lazily).

    Raises
    ------
    InputError
        Neither or both of (``sky_flat`` and ``fiducial_flat``) and ``chromatic_ratio`` given,
        or fields on different boxes.
    """
    have_pair = sky_flat is not None or fiducial_flat is not None
    if have_pair == (chromatic_ratio is not None):
        raise InputError(
            "background_mapping: give either sky_flat= and fiducial_flat= or chromatic_ratio="
        )
    if have_pair:
        if sky_flat is None or fiducial_flat is None:
            raise InputError("background_mapping: give both sky_flat= and fiducial_flat=")
        ratio: BoundedField = sky_flat / fiducial_flat
    else:
        ratio = chromatic_ratio  # type: ignore[assignment]
    if not isinstance(pixel_area, BoundedField):
        pixel_area = ConstantField(float(pixel_area), ratio.bbox)
    return pixel_area * ratio


def attach_background_mapping(
    exposure,
    flat: ChromaticFlat,
    sky: Spectrum,
    fiducial: Spectrum,
    *,
    order: int = 6,
    bin_size: int = 16,
    kind: str = "chebyshev",
    nodes: int | tuple[int, int] = 8,
):
    """Return ``exposure`` with ``background_mapping = A · F_sky / F_fid`` attached.

    ``A`` is the exposure's pixel-area field (from its WCS) and ``F_sky / F_fid`` is fitted by
    :meth:`ChromaticFlat.ratio_field`; :func:`photocalib.background.estimate` then models the
    sky on ``image / M``.

    Parameters
    ----------
    exposure : photocalib.Exposure
        The photometric exposure (flattened to ``fiducial``); needs a WCS.
    flat : ChromaticFlat
        The detector's chromatic flat, on the exposure's box.
    sky, fiducial : Spectrum
        The sky's SED for this epoch and the fiducial SED.
    order, bin_size, kind, nodes
        As for :meth:`ChromaticFlat.ratio_field`.

    Returns
    -------
    photocalib.Exposure
        A new exposure (``exposure.replace(background_mapping=M)``).

    Raises
    ------
    InputError
        The flat's box does not match the exposure's.
    """
    if flat.bbox.shape != tuple(exposure.image.shape):
        raise InputError(
            f"attach_background_mapping: the chromatic flat's box {flat.bbox} does not match the "
            f"exposure's shape {tuple(exposure.image.shape)}; use the flat of this detector"
        )
    ratio = flat.ratio_field(sky, fiducial, order=order, bin_size=bin_size, kind=kind, nodes=nodes)
    return exposure.replace(background_mapping=background_mapping(exposure.pixel_area_field(), chromatic_ratio=ratio))
