"""Simulated stars: positions, power-law number counts, SED templates and fluxes in every band;
and a reference catalog of the bright ones with realistic errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .._io import atomic_write
from ..calib import AB_ZERO_POINT_NJY_MAG
from ..errors import InputError
from . import spectra
from .camera import tangent_to_sky

__all__ = ["StarCatalog", "make_stars", "make_refcat", "write_parquet"]


@dataclass(frozen=True)
class StarCatalog:
    """True stars (arrays of one length, read-only).

    Attributes
    ----------
    star : ndarray of int64
        Star id.
    ra, dec : ndarray
        Degrees.
    template : ndarray of str
        SED template name (see :func:`spectra.stellar_templates`).
    flux : dict of ndarray
        True AB flux (nJy) per band through the nominal LSST bandpass.
    """

    star: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    template: np.ndarray
    flux: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        for arr in (self.star, self.ra, self.dec, self.template, *self.flux.values()):
            arr.flags.writeable = False

    def __len__(self) -> int:
        return len(self.star)

    def mag(self, band: str) -> np.ndarray:
        """AB magnitude in ``band``."""
        return -2.5 * np.log10(self.flux[band]) + AB_ZERO_POINT_NJY_MAG

    def to_arrow(self) -> pa.Table:
        cols = {"star": self.star, "ra": self.ra, "dec": self.dec, "template": self.template.astype(str)}
        for b in spectra.BANDS:
            cols[f"{b}_flux"] = self.flux[b]
        for b in spectra.BANDS:
            cols[f"{b}_mag"] = self.mag(b)
        return pa.table(cols)

    @classmethod
    def from_arrow(cls, table: pa.Table) -> StarCatalog:
        d = table.to_pydict()
        return cls(star=np.asarray(d["star"], dtype=np.int64), ra=np.asarray(d["ra"]), dec=np.asarray(d["dec"]),
                   template=np.asarray(d["template"]),
                   flux={b: np.asarray(d[f"{b}_flux"]) for b in spectra.BANDS})


def make_stars(ra: float, dec: float, radius_deg: float, density: float = 1.0e5,
               mag_range: tuple[float, float] = (16.0, 24.0), slope: float = 0.3,
               band: str = "r", seed: int = 1) -> StarCatalog:
    """Draw stars uniformly on a disc with power-law counts dN/dm ~ 10^(slope m).

    Parameters
    ----------
    ra, dec, radius_deg : float
        Disc on the sky (degrees).
    density : float
        Stars per square degree within ``mag_range`` (1e5 is a low-latitude field; high
        latitudes have ~1e4).
    mag_range : (bright, faint)
        AB magnitudes in ``band``.
    slope : float
        Logarithmic slope of the differential counts (~0.3 for stars fainter than ~18).
    band : str
        The band the magnitudes are drawn in; other bands follow from the SED templates.
    seed : int

    Returns
    -------
    StarCatalog
    """
    if density <= 0 or radius_deg <= 0 or mag_range[1] <= mag_range[0]:
        raise InputError(f"stars: need density > 0, radius > 0 and mag_range bright < faint; got "
                         f"density={density}, radius={radius_deg}, mag_range={mag_range}")
    rng = np.random.default_rng([seed, 5])
    area = 2 * math.pi * (1 - math.cos(math.radians(radius_deg))) * (180 / math.pi) ** 2
    n = int(rng.poisson(density * area))
    # Uniform on the spherical cap: cos(theta) uniform.
    cos_t = rng.uniform(math.cos(math.radians(radius_deg)), 1.0, size=n)
    theta = np.arccos(cos_t)
    phi = rng.uniform(0, 2 * math.pi, size=n)
    rho = np.tan(theta) * 206264.80624709636  # gnomonic radius, arcsec
    sra, sdec = tangent_to_sky(rho * np.cos(phi), rho * np.sin(phi), ra, dec)
    # Inverse CDF of dN/dm ~ 10^(slope m) on [m0, m1].
    m0, m1 = mag_range
    k = slope * math.log(10)
    u = rng.uniform(size=n)
    mag = np.log(np.exp(k * m0) + u * (np.exp(k * m1) - np.exp(k * m0))) / k
    templates = spectra.stellar_templates()
    w = np.array([t.weight for t in templates])
    idx = rng.choice(len(templates), size=n, p=w / w.sum())
    names = np.array([t.name for t in templates])
    f_band = 10 ** (-0.4 * (mag - AB_ZERO_POINT_NJY_MAG))
    flux = {}
    for b in spectra.BANDS:
        ratio = np.array([spectra.ab_flux_njy(t.name, b) / spectra.ab_flux_njy(t.name, band) for t in templates])
        flux[b] = f_band * ratio[idx]
    order = np.argsort(sdec, kind="stable")
    return StarCatalog(star=np.arange(n, dtype=np.int64), ra=sra[order], dec=sdec[order], template=names[idx][order],
                       flux={b: f[order] for b, f in flux.items()})


def refcat_mag_error(mag: np.ndarray, floor: float = 0.003, m_ref: float = 20.0, err_ref: float = 0.02) -> np.ndarray:
    """Magnitude error of a Pan-STARRS-like reference catalog: a floor plus photon noise that is
    ``err_ref`` at ``m_ref`` and scales as 10^(0.4 (m - m_ref))."""
    return np.hypot(floor, err_ref * 10 ** (0.4 * (np.asarray(mag) - m_ref)))


def make_refcat(stars: StarCatalog, band: str, mag_max: float = 21.0, seed: int = 1) -> pa.Table:
    """A reference catalog: the stars brighter than ``mag_max`` in ``band`` with noisy fluxes.

    Columns: ``star`` / ``id`` (true star id), ``ra``, ``dec`` (degrees, 5 mas scatter),
    ``<b>_flux`` and ``<b>_fluxErr`` (nJy) for every band, and ``flux`` / ``flux_err`` for
    ``band`` (the form :func:`photocalib.fit.fit_joint` takes).
    """
    rng = np.random.default_rng([seed, 9])
    sel = stars.mag(band) < mag_max
    cols: dict[str, np.ndarray] = {"star": stars.star[sel], "id": stars.star[sel]}
    dec = stars.dec[sel]
    cols["ra"] = stars.ra[sel] + rng.normal(0, 5e-3 / 3600, sel.sum()) / np.cos(np.radians(dec))
    cols["dec"] = dec + rng.normal(0, 5e-3 / 3600, sel.sum())
    for b in spectra.BANDS:
        true = stars.flux[b][sel]
        err = true * refcat_mag_error(-2.5 * np.log10(true) + AB_ZERO_POINT_NJY_MAG) * math.log(10) / 2.5
        cols[f"{b}_flux"] = true + err * rng.standard_normal(true.size)
        cols[f"{b}_fluxErr"] = err
    cols["flux"] = cols[f"{band}_flux"]
    cols["flux_err"] = cols[f"{band}_fluxErr"]
    return pa.table(cols)


def write_parquet(table: pa.Table, path) -> None:
    """Write a pyarrow table to Parquet atomically."""
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp)
