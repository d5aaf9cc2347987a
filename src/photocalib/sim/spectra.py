"""Throughputs and spectra of the simulator: LSST bandpasses and SEDs shipped with GalSim.

Turns SEDs into AB fluxes (nJy) through a bandpass, into photo-electron rates for the simulated
telescope, and into the position-dependent chromatic response factor ``rho`` of the camera.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import galsim
import numpy as np

from ..calib import AB_ZERO_POINT_NJY_MAG
from ..errors import InputError

__all__ = [
    "BANDS",
    "WAVELENGTH_NM",
    "StellarTemplate",
    "bandpass",
    "throughput",
    "stellar_templates",
    "sed_photons",
    "sky_sed_photons",
    "lamp_sed_photons",
    "fiducial_sed_photons",
    "ab_flux_njy",
    "electrons_per_second_per_njy",
    "share_dir",
]

#: Bands for which the LSST total throughputs ship with GalSim.
BANDS = ("u", "g", "r", "i", "z", "y")

#: Common wavelength grid (nm) on which every response integral of the simulator is done.
WAVELENGTH_NM = np.arange(300.0, 1200.5, 1.0)

# Planck's constant in erg s (photon counting turns f_nu into photons: N = f_nu / (h lambda)).
_H_ERG_S = 6.62607015e-27
_C_NM_S = 2.99792458e17
_NJY_CGS = 1e-32  # 1 nJy in erg/s/cm^2/Hz


def share_dir() -> Path:
    """GalSim's ``share`` folder, where its SEDs and bandpasses live (nothing is downloaded)."""
    return Path(galsim.meta_data.share_dir)


@functools.cache
def bandpass(band: str) -> galsim.Bandpass:
    """The LSST total-throughput bandpass for ``band`` (``u g r i z y``) with an AB zero point.

    Raises
    ------
    InputError
        If ``band`` is not one of :data:`BANDS`.
    """
    if band not in BANDS:
        raise InputError(f"band {band!r}: unknown; use one of {', '.join(BANDS)}")
    path = share_dir() / "bandpasses" / f"LSST_{band}.dat"
    return galsim.Bandpass(str(path), wave_type="nm").withZeropoint("AB")


@functools.cache
def throughput(band: str) -> np.ndarray:
    """The nominal total throughput T0(lambda) of ``band`` sampled on :data:`WAVELENGTH_NM`."""
    bp = bandpass(band)
    w = WAVELENGTH_NM
    inside = (w >= bp.blue_limit) & (w <= bp.red_limit)
    out = np.zeros_like(w)
    out[inside] = bp(w[inside])
    out.flags.writeable = False
    return out


def _planck_flambda(wave_nm: np.ndarray, temperature_k: float) -> np.ndarray:
    # Shape only (arbitrary normalisation): B_lambda ~ lambda^-5 / (exp(hc / lambda k T) - 1).
    x = 1.4387769e7 / (wave_nm * temperature_k)  # hc/k in nm K
    return (wave_nm / 500.0) ** -5 / np.expm1(x)


@dataclass(frozen=True)
class StellarTemplate:
    """One stellar SED template.

    Attributes
    ----------
    name : str
        ``"vega"`` (GalSim's shipped CALSPEC Vega) or ``"bb<T>"``, a blackbody of temperature T.
    temperature_k : float
        Effective temperature (9600 K for Vega).
    weight : float
        Relative frequency of the template among simulated stars.
    """

    name: str
    temperature_k: float
    weight: float

    def sed(self) -> galsim.SED:
        """The template as a :class:`galsim.SED` (f_lambda, arbitrary normalisation)."""
        if self.name == "vega":
            return galsim.SED(str(share_dir() / "SEDs" / "vega.txt"), wave_type="nm", flux_type="flambda")
        wave = np.arange(90.0, 3000.0, 1.0)
        table = galsim.LookupTable(wave, _planck_flambda(wave, self.temperature_k), interpolant="linear")
        return galsim.SED(table, wave_type="nm", flux_type="flambda")


@functools.cache
def stellar_templates() -> tuple[StellarTemplate, ...]:
    """The SED templates of simulated stars: Vega plus blackbodies from M to F type.

    GalSim ships one stellar spectrum (Vega, ``share/SEDs/vega.txt``); the cooler stars that
    dominate faint counts are blackbodies, which give the right range of colours
    (g - i from about -0.5 to 2.5) for calibration work.
    """
    temps = (3400.0, 3800.0, 4300.0, 4800.0, 5300.0, 5800.0, 6400.0, 7200.0)
    weights = (0.18, 0.16, 0.14, 0.14, 0.13, 0.11, 0.07, 0.04)
    return (*(StellarTemplate(f"bb{int(t)}", t, w) for t, w in zip(temps, weights, strict=True)),
            StellarTemplate("vega", 9600.0, 0.03))


def _to_photons(flambda: np.ndarray) -> np.ndarray:
    # Photon density per nm is f_lambda * lambda / (h c): the weights of a photon-counting detector.
    return flambda * WAVELENGTH_NM


@functools.cache
def sed_photons(name: str) -> np.ndarray:
    """Photon spectrum (arbitrary normalisation) of a template, a ``"sky"``, ``"lamp"`` or
    ``"fiducial"`` SED, on :data:`WAVELENGTH_NM`."""
    special = {"sky": sky_sed_photons, "lamp": lamp_sed_photons, "fiducial": fiducial_sed_photons}
    if name in special:
        return special[name]()
    for t in stellar_templates():
        if t.name == name:
            # Calling a galsim.SED returns photons/nm/cm^2/s already.
            out = np.asarray(t.sed()(WAVELENGTH_NM), dtype=np.float64)
            out.flags.writeable = False
            return out
    raise InputError(f"SED {name!r}: unknown; use a stellar template name, 'sky', 'lamp' or 'fiducial'")


@functools.cache
def sky_sed_photons() -> np.ndarray:
    """Night-sky photon spectrum: a red continuum plus the strong airglow lines (O I, Na D, OH).

    GalSim ships no sky spectrum, so this one is built from its well-known features:
    a continuum rising to the red, O I 557.7/630.0/636.4 nm, Na D 589.3 nm, and the OH forest
    beyond 700 nm as a steeply rising pseudo-continuum.
    """
    w = WAVELENGTH_NM
    flam = (w / 500.0) ** 1.0 + 3.0 * np.clip((w - 700.0) / 300.0, 0.0, None) ** 2
    for centre, strength in ((557.7, 4.0), (589.3, 1.5), (630.0, 2.0), (636.4, 0.7)):
        flam = flam + strength * np.exp(-0.5 * ((w - centre) / 1.0) ** 2)
    out = _to_photons(flam)
    out.flags.writeable = False
    return out


@functools.cache
def lamp_sed_photons() -> np.ndarray:
    """Dome-lamp photon spectrum: a 3000 K quartz-halogen blackbody."""
    out = _to_photons(_planck_flambda(WAVELENGTH_NM, 3000.0))
    out.flags.writeable = False
    return out


@functools.cache
def fiducial_sed_photons() -> np.ndarray:
    """Fiducial SED of the truth star flat: flat in f_nu (AB colour 0 in every band)."""
    w = WAVELENGTH_NM
    out = 1.0 / w  # f_nu constant => photons per nm ~ 1/lambda
    out.flags.writeable = False
    return out


@functools.cache
def ab_flux_njy(template: str, band: str) -> float:
    """AB flux (nJy) through ``band`` of a template normalised to AB magnitude 0 in r.

    The flux is GalSim's ``SED.calculateMagnitude`` through the LSST bandpass, i.e. the
    photon-weighted mean f_nu, so colours are template flux ratios.
    """
    sed = next(t for t in stellar_templates() if t.name == template).sed()
    m_b = sed.calculateMagnitude(bandpass(band))
    m_r = sed.calculateMagnitude(bandpass("r"))
    return float(10.0 ** (-0.4 * (m_b - m_r - AB_ZERO_POINT_NJY_MAG)))


@functools.cache
def electrons_per_second_per_njy(band: str, collecting_area_cm2: float) -> float:
    """Photo-electrons per second from a 1 nJy AB-flat source through the nominal system.

    Computed with GalSim: ``SED(1 nJy, fnu).calculateFlux(bandpass)`` (photons/cm^2/s, the
    bandpass being the total throughput, QE included) times the collecting area.
    """
    # A densely sampled table: GalSim interpolates f_nu after converting to photons, so two end
    # points would not represent a constant f_nu.
    wave = np.arange(100.0, 3000.0, 1.0)
    sed = galsim.SED(galsim.LookupTable(wave, np.full(wave.size, _NJY_CGS), interpolant="linear"),
                     wave_type="nm", flux_type="fnu")
    return float(sed.calculateFlux(bandpass(band)) * collecting_area_cm2)
