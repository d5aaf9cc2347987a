"""Reading real reference catalogs into one form: ``id``, ``ra``, ``dec``, ``<band>_flux`` (nJy).

Gaia (DR2, DR3 and XP synthetic photometry), Pan-STARRS1 DR2, ATLAS-RefCat2, SkyMapper,
legacypipe's Gaia chunk files and any table with named magnitude or flux columns; from FITS,
Parquet (files or datasets) or HATS/LSDB-partitioned catalogs, reading only the sky region asked.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.table import Table

from ..errors import InputError
from ._motion import julian_year, propagate

__all__ = [
    "read_reference",
    "SYSTEMS",
    "GAIA_ZERO_POINTS",
    "mag_to_njy",
    "njy_to_mag",
]

#: 3631 Jy in nJy: the AB zero point.
AB_ZERO_NJY = 3631e9

#: Gaia zero points (mag) for the published photometry, Vega and AB: (G, BP, RP).
#: DR3/EDR3: Riello et al. 2021, A&A 649, A3, Table 3 (Gaia EDR3 documentation §5.4).
#: DR2: Evans et al. 2018, A&A 616, A4, Table 3 (the zero points the DR2 magnitudes were made with).
GAIA_ZERO_POINTS = {
    "gaia-dr3": {"vega": {"G": 25.6874, "BP": 25.3385, "RP": 24.7479},
                 "ab": {"G": 25.8010, "BP": 25.3540, "RP": 25.1040}},
    "gaia-dr2": {"vega": {"G": 25.6884, "BP": 25.3514, "RP": 24.7619},
                 "ab": {"G": 25.7934, "BP": 25.3806, "RP": 25.1161}},
}

#: Gaia XP synthetic photometry fluxes are in W m^-2 Hz^-1; 1 W m^-2 Hz^-1 = 1e26 Jy = 1e35 nJy.
_XP_FLUX_TO_NJY = 1e35


def mag_to_njy(mag, mag_err=None, *, offset=0.0):
    """AB magnitude (plus ``offset``, e.g. Vega → AB) to nJy; with ``mag_err`` also the flux error.

    Examples
    --------
    >>> round(float(mag_to_njy(25.0)), 9)
    363.1
    """
    m = np.asarray(mag, dtype=np.float64) + offset
    flux = AB_ZERO_NJY * 10.0 ** (-0.4 * m)
    if mag_err is None:
        return flux
    return flux, flux * np.asarray(mag_err, dtype=np.float64) * (0.4 * np.log(10.0))


def njy_to_mag(flux):
    """nJy to AB magnitude.

    Examples
    --------
    >>> round(float(njy_to_mag(363.1)), 9)
    25.0
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return -2.5 * np.log10(np.asarray(flux, dtype=np.float64) / AB_ZERO_NJY)


@dataclass(frozen=True)
class System:
    """How one catalog family spells its columns.

    ``mags``: band → (magnitude column, error column or None); ``fluxes`` likewise for flux
    columns with ``flux_scale`` to nJy; ``vega_to_ab``: band → offset added to a catalog
    magnitude to make it AB; ``bandpasses``: band → speclite filter name (for colour terms).
    """

    name: str
    id: tuple[str, ...]
    ra: tuple[str, ...]
    dec: tuple[str, ...]
    mags: dict = field(default_factory=dict)
    vega_to_ab: dict = field(default_factory=dict)
    pm: tuple[str, str] | None = None
    ref_epoch: float | str | None = None    # a number, or the name of an epoch column
    bandpasses: dict = field(default_factory=dict)
    description: str = ""


def _gaia(name: str) -> System:
    zp = GAIA_ZERO_POINTS[name]
    release = name.split("-")[1]
    return System(
        name=name,
        id=("source_id",),
        ra=("ra",), dec=("dec",),
        mags={"G": ("phot_g_mean_mag", "phot_g_mean_flux_over_error"),
              "BP": ("phot_bp_mean_mag", "phot_bp_mean_flux_over_error"),
              "RP": ("phot_rp_mean_mag", "phot_rp_mean_flux_over_error")},
        vega_to_ab={b: zp["ab"][b] - zp["vega"][b] for b in ("G", "BP", "RP")},
        pm=("pmra", "pmdec"),
        ref_epoch="ref_epoch",
        bandpasses={b: f"gaia{release}-{b}" for b in ("G", "BP", "RP")},
        description=f"Gaia {release.upper()} gaia_source (Vega magnitudes; also legacypipe chunk files)",
    )


_PS1_BANDS = ("g", "r", "i", "z", "y")

#: The catalog families read_reference knows, by the name to pass as ``system=``.
SYSTEMS: dict[str, System] = {
    "gaia-dr3": _gaia("gaia-dr3"),
    "gaia-dr2": _gaia("gaia-dr2"),
    "ps1-dr2": System(
        name="ps1-dr2", id=("objID", "objid"), ra=("raMean", "ramean", "ra"), dec=("decMean", "decmean", "dec"),
        mags={b: (f"{b}MeanPSFMag", f"{b}MeanPSFMagErr") for b in _PS1_BANDS},
        bandpasses={b: f"panstarrs-{b}" for b in _PS1_BANDS},
        description="Pan-STARRS1 DR2 MeanObject (AB PSF magnitudes, MAST column names)",
    ),
    "atlas-refcat2": System(
        name="atlas-refcat2", id=("objid",), ra=("RA", "ra"), dec=("Dec", "dec"),
        mags={b: (b, f"d{b}") for b in ("g", "r", "i", "z", "c", "o")},
        pm=("pmra", "pmdec"), ref_epoch=2015.5,
        bandpasses={b: f"panstarrs-{b}" for b in ("g", "r", "i", "z")},
        description="ATLAS-RefCat2 (Tonry et al. 2018: AB magnitudes on the PS1 system, positions at 2015.5)",
    ),
    "ps1-legacypipe": System(
        name="ps1-legacypipe", id=("obj_id", "objid"), ra=("ra",), dec=("dec",),
        mags={b: (f"median_{k}", f"median_err_{k}") for k, b in enumerate(_PS1_BANDS)},
        bandpasses={b: f"panstarrs-{b}" for b in _PS1_BANDS},
        description="legacypipe's healpixed PS1 files (median/median_err arrays in g r i z y, AB)",
    ),
    "skymapper": System(
        name="skymapper", id=("object_id",), ra=("raj2000", "ra"), dec=("dej2000", "dec"),
        mags={b: (f"{b}_psf", f"e_{b}_psf") for b in ("u", "v", "g", "r", "i", "z")},
        description="SkyMapper Southern Survey master table (AB PSF magnitudes)",
    ),
}

_XP_FLUX = re.compile(r"^(?P<band>[a-z0-9]+_[a-z0-9_]+?)_flux$", re.IGNORECASE)
_XP_SYSTEMS = ("jkc_std", "jkc", "sdss_std", "sdss", "ps1", "des", "hsc", "lsst", "ukidss", "sky_mapper",
               "iphas", "stromgren_std", "stromgren", "hst_wfc3", "hst_acs", "decam", "johnson")


def _lower_map(columns) -> dict[str, str]:
    return {c.lower(): c for c in columns}


def _find(cols: dict[str, str], names) -> str | None:
    for n in names:
        if n.lower() in cols:
            return cols[n.lower()]
    return None


def _xp_bands(columns) -> dict[str, tuple[str, str | None]]:
    """Gaia XP synthetic photometry flux columns: band (e.g. ``g_des``) → (flux, error)."""
    cols = _lower_map(columns)
    out = {}
    for c in columns:
        m = _XP_FLUX.match(c)
        if not m:
            continue
        band = m.group("band")
        if not any(band.lower().endswith("_" + s) for s in _XP_SYSTEMS):
            continue
        out[band] = (c, _find(cols, (f"{band}_flux_error", f"{band}_flux_err")))
    return out


def _identify(columns, path) -> str:
    cols = _lower_map(columns)
    if _xp_bands(columns):
        return "gaia-xp"
    if "phot_g_mean_mag" in cols or "phot_g_mean_flux" in cols:
        return "gaia"          # the release is decided from ref_epoch
    if "gmeanpsfmag" in cols:
        return "ps1-dr2"
    if ("median" in cols and "median_err" in cols) or ("median_0" in cols and "median_err_0" in cols):
        return "ps1-legacypipe"
    if "g_psf" in cols and ("raj2000" in cols or "object_id" in cols):
        return "skymapper"
    if {"g", "dg", "r", "dr"} <= set(cols) and ("pmra" in cols or "ra" in cols):
        return "atlas-refcat2"
    raise InputError(
        f"{path}: no recognisable magnitude or flux columns (columns: {list(columns)[:30]}); "
        f"pass system= (one of {sorted(SYSTEMS) + ['gaia-xp']}) or name them with "
        "bands={'r': 'column', ...} and mag_system='AB' or 'Vega' (with vega_to_ab=) or flux_unit='nJy'"
    )


# ----------------------------------------------------------------------------------------------
# Loading (only the region asked for where the format allows)


def _cone_mask(ra, dec, region) -> np.ndarray:
    ra0, dec0, radius = region
    r, d = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    r0, d0 = np.radians(ra0), np.radians(dec0)
    cosang = np.sin(d) * np.sin(d0) + np.cos(d) * np.cos(d0) * np.cos(r - r0)
    return cosang >= np.cos(np.radians(radius))


def _ra_window(region) -> tuple[float, float] | None:
    """RA interval (deg, may wrap: lo > hi) holding the cone, or None near a pole."""
    ra0, dec0, radius = region
    if abs(dec0) + radius >= 89.0:
        return None
    half = np.degrees(np.arcsin(min(1.0, np.sin(np.radians(radius)) / np.cos(np.radians(dec0))))) + 1e-6
    if half >= 180.0:
        return None
    return (ra0 - half) % 360.0, (ra0 + half) % 360.0


def _is_hats(path: Path) -> bool:
    return path.is_dir() and any((path / n).exists() for n in
                                 ("hats.properties", "collection.properties", "properties", "catalog_info.json"))


def _open_hats(path: Path, search=None):
    """An lsdb catalog (lazy: nothing but its metadata is read until ``compute``)."""
    try:
        import lsdb
    except ImportError as exc:  # pragma: no cover - lsdb is a dependency
        raise InputError(f"{path}: a HATS catalog needs the 'lsdb' package (pip install lsdb)") from exc
    return lsdb.open_catalog(str(path), search_filter=search, error_empty_filter=False)


def _schema_names(path: Path) -> list[str]:
    if _is_hats(path):
        return list(_open_hats(path).columns)
    if path.is_dir() or path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.dataset as ds

        return list(ds.dataset(path, format="parquet").schema.names)
    if path.suffix.lower() in (".ecsv", ".csv", ".txt", ".dat", ".vot", ".xml", ".h5", ".hdf5"):
        return list(Table.read(path).colnames)
    from astropy.io import fits

    with fits.open(path, memmap=True) as hdul:
        for hdu in hdul:
            if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
                return list(hdu.columns.names)
    raise InputError(f"{path}: no table HDU; a reference catalog must be a FITS table, Parquet or HATS")


def _load(path: Path, ra_col: str, dec_col: str, region) -> pd.DataFrame:
    """The rows of ``path`` (all, or those in the cone ``region`` = (ra, dec, radius_deg))."""
    if _is_hats(path):
        import lsdb

        search = None if region is None else lsdb.ConeSearch(region[0], region[1], region[2] * 3600.0)
        df = _open_hats(path, search).compute()
        return pd.DataFrame(df).reset_index(drop=True)
    if path.is_dir() or path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.dataset as ds

        dataset = ds.dataset(path, format="parquet")
        flt = None
        if region is not None:
            dec0, radius = region[1], region[2]
            flt = (ds.field(dec_col) >= dec0 - radius) & (ds.field(dec_col) <= dec0 + radius)
            window = _ra_window(region)
            if window is not None:
                lo, hi = window
                in_ra = ((ds.field(ra_col) >= lo) & (ds.field(ra_col) <= hi)) if lo <= hi else \
                    ((ds.field(ra_col) >= lo) | (ds.field(ra_col) <= hi))
                flt = flt & in_ra
        df = dataset.to_table(filter=flt).to_pandas()
    elif path.suffix.lower() in (".ecsv", ".csv", ".txt", ".dat", ".vot", ".xml", ".h5", ".hdf5"):
        df = Table.read(path).to_pandas()
    else:
        from astropy.io import fits

        with fits.open(path, memmap=True) as hdul:
            hdu = next(h for h in hdul if isinstance(h, (fits.BinTableHDU, fits.TableHDU)))
            data = hdu.data
            if region is not None:
                # Only the two coordinate columns are read in full; other columns row by row.
                data = data[_cone_mask(data[ra_col], data[dec_col], region)]
            table = Table(data)
        for name in table.colnames:
            if table[name].ndim > 1:
                for k in range(table[name].shape[1]):
                    table[f"{name}_{k}"] = table[name][:, k]
                del table[name]
        df = table.to_pandas()
    if region is not None and len(df):
        df = df[_cone_mask(df[ra_col].to_numpy(), df[dec_col].to_numpy(), region)].reset_index(drop=True)
    return df


# ----------------------------------------------------------------------------------------------


def _numeric(df: pd.DataFrame, name: str, path) -> np.ndarray:
    try:
        return pd.to_numeric(df[name], errors="raise").to_numpy(np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: column {name!r} is not numeric ({exc}); it must hold numbers") from exc


def _usable_mag(m: np.ndarray) -> np.ndarray:
    # Catalogs mark missing magnitudes with NaN, 0, -999 or 99.
    return np.isfinite(m) & (m > 0.0) & (m < 50.0)


def read_reference(
    path: str | os.PathLike,
    *,
    system: str | None = None,
    epoch=None,
    bands=None,
    region: tuple[float, float, float] | None = None,
    mag_system: str = "AB",
    vega_to_ab: dict | None = None,
    flux_unit: str | u.UnitBase | None = None,
    ra: str | None = None,
    dec: str | None = None,
    id: str | None = None,  # noqa: A002 - the column's name
) -> Table:
    """A reference catalog as ``id``, ``ra``, ``dec`` (deg, at ``epoch``), ``<band>_flux`` and
    ``<band>_flux_err`` (nJy, AB).

    Known families are recognised from their columns (or named with ``system``):

    ``gaia-dr3``, ``gaia-dr2``
        ``gaia_source`` tables and legacypipe's Gaia ``chunk-*.fits`` files (the release is told
        from ``ref_epoch``: 2015.5 is DR2, 2016.0 is (E)DR3). Bands ``G``, ``BP``, ``RP``; Vega
        magnitudes are made AB with the zero points of :data:`GAIA_ZERO_POINTS`; errors from
        ``phot_*_mean_flux_over_error``. Proper motions from ``ref_epoch``.
    ``gaia-xp``
        Gaia DR3 XP synthetic photometry (``<band>_<system>_flux`` in W m⁻² Hz⁻¹, e.g.
        ``g_des_flux``, ``r_ps1_flux``); bands named ``g_des``, ``r_ps1``...; Gaia's own G, BP,
        RP and positions too when the table carries the ``gaia_source`` columns.
    ``ps1-dr2``
        ``<b>MeanPSFMag``/``Err`` (AB), bands ``g r i z y``; positions at their mean epoch.
    ``atlas-refcat2``
        ``g r i z c o`` with ``dg``...: AB on the PS1 system; positions at 2015.5 with ``pmra``,
        ``pmdec``.
    ``skymapper``
        ``<b>_psf``/``e_<b>_psf`` (AB), bands ``u v g r i z``.

    Any other table: name the columns with ``bands={'r': 'rmag', ...}`` (error column
    ``<col>_err``, ``e_<col>`` or ``<col>err`` when present, or give ``{'r': ('rmag', 'rerr')}``);
    they are magnitudes in ``mag_system`` ('AB', or 'Vega' with ``vega_to_ab={'r': offset}``)
    unless ``flux_unit`` is given (an astropy unit: 'nJy', 'Jy', 'erg/s/cm2/Hz'...).

    Parameters
    ----------
    path : str, path-like, or a list of them
        FITS table, Parquet file or dataset directory, or a HATS catalog directory (via lsdb);
        a list (e.g. legacypipe's Gaia ``chunk-*.fits``) is read into one table.
    system : str, optional
        One of :data:`SYSTEMS` or ``gaia-xp``; default: recognised from the columns.
    epoch : float, str or astropy Time, optional
        Julian epoch for the positions (e.g. the exposure's ``Time(mjd, format='mjd')``); the
        catalog's proper motions carry them from its reference epoch. Default: as catalogued.
    bands : sequence of str or dict, optional
        For known families, the bands to keep (default all present); for other tables, the
        mapping band → column described above.
    region : (ra, dec, radius) in degrees, optional
        Read only this cone: Parquet row groups are filtered by pyarrow, FITS tables are cut on
        their coordinate columns before the other columns are read, HATS catalogs open only the
        HEALPix partitions that overlap it.
    ra, dec, id : str, optional
        Column names, for tables that spell them otherwise.

    Returns
    -------
    astropy.table.Table
        ``id`` (int64), ``ra``, ``dec`` (deg), ``<band>_flux``, ``<band>_flux_err`` (nJy; NaN
        where the catalog has no measurement). ``meta``: ``system``, ``epoch`` (Julian year of
        the positions, when known), ``bands``, ``bandpasses`` (band → speclite filter name, when
        known) and ``path``.

    Raises
    ------
    InputError
        Unreadable file, unknown system, or no recognisable magnitude/flux column (the message
        names the file and what to pass).

    Examples
    --------
    >>> import os, tempfile
    >>> from astropy.table import Table
    >>> t = Table({"ra": [10.0], "dec": [-5.0], "rmag": [25.0], "rmag_err": [0.01]})
    >>> path = os.path.join(tempfile.mkdtemp(), "ref.fits")
    >>> t.write(path)
    >>> ref = read_reference(path, bands={"r": "rmag"})
    >>> round(float(ref["r_flux"][0]), 6), ref.colnames
    (363.1, ['id', 'ra', 'dec', 'r_flux', 'r_flux_err'])
    """
    if isinstance(path, (list, tuple)):
        # Catalogs split in files (legacypipe's Gaia chunks, PS1 healpix files): one table.
        from astropy.table import vstack

        if not path:
            raise InputError("read_reference: an empty list of files; pass at least one catalog")
        parts = [read_reference(p, system=system, epoch=epoch, bands=bands, region=region, mag_system=mag_system,
                                vega_to_ab=vega_to_ab, flux_unit=flux_unit, ra=ra, dec=dec, id=id) for p in path]
        systems = {t.meta["system"] for t in parts}
        if len(systems) > 1:
            raise InputError(f"read_reference: the files are of different systems {sorted(systems)}: {list(path)}")
        out = vstack(parts, metadata_conflicts="silent")
        out.meta = dict(parts[0].meta)
        out.meta["path"] = [str(p) for p in path]
        return out
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: reference catalog not found")
    if isinstance(mag_system, str) and mag_system.lower() not in ("ab", "vega"):
        raise InputError(f"{path}: mag_system={mag_system!r}; use 'AB' or 'Vega'")
    try:
        names = _schema_names(path)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - astropy/pyarrow raise many types for bad files
        raise InputError(f"{path}: not a readable table ({type(exc).__name__}: {exc})") from exc
    cols = _lower_map(names)
    user_bands = isinstance(bands, dict)
    if system is None and not user_bands:
        system = _identify(names, path)
    if system is not None and system not in SYSTEMS and system not in ("gaia", "gaia-xp"):
        raise InputError(f"{path}: unknown system {system!r}; use one of {sorted(SYSTEMS) + ['gaia-xp']}, "
                         "or bands={...} for any other table")

    spec = SYSTEMS.get(system) if system not in (None, "gaia", "gaia-xp") else None
    if system in ("gaia", "gaia-xp") and ("phot_g_mean_mag" in cols or "phot_g_mean_flux" in cols):
        spec = SYSTEMS["gaia-dr3"]  # the release is refined from ref_epoch below
    ra_col = ra or (_find(cols, spec.ra) if spec else _find(cols, ("ra", "raj2000", "ra_icrs", "ramean", "alpha")))
    dec_col = dec or (_find(cols, spec.dec) if spec else _find(cols, ("dec", "dej2000", "de_icrs", "decmean", "delta")))
    if ra_col is None or dec_col is None or ra_col not in names or dec_col not in names:
        raise InputError(f"{path}: no right ascension/declination columns found (columns: {names[:30]}); "
                         "pass ra='name', dec='name'")
    try:
        df = _load(path, ra_col, dec_col, region)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: not a readable table ({type(exc).__name__}: {exc})") from exc

    n = len(df)
    cols = _lower_map(df.columns)   # array columns of FITS tables are split into <name>_<k>
    ra_v = _numeric(df, ra_col, path)
    dec_v = _numeric(df, dec_col, path)
    id_col = id or _find(cols, (spec.id if spec else ()) + ("id", "source_id", "objid", "object_id", "star", "ref_id"))
    if id_col is not None and id_col in df.columns:
        try:
            ids = df[id_col].to_numpy(np.int64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: id column {id_col!r} is not integer ({exc}); pass id='column'") from exc
    else:
        ids = np.arange(n, dtype=np.int64)

    fluxes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    bandpasses: dict[str, str] = {}
    cat_epoch = None
    sys_name = system

    if spec is not None and spec.name.startswith("gaia"):
        # legacypipe chunk files and gaia_source carry ref_epoch: 2015.5 is DR2, 2016.0 is (E)DR3.
        if "ref_epoch" in cols and n:
            e = _numeric(df, cols["ref_epoch"], path)
            e = e[np.isfinite(e)]
            if system in (None, "gaia", "gaia-xp") and e.size:
                spec = SYSTEMS["gaia-dr2"] if abs(np.median(e) - 2015.5) < 0.01 else SYSTEMS["gaia-dr3"]
        if system in (None, "gaia"):
            sys_name = spec.name

    if spec is not None:
        fluxes, bandpasses = _family_fluxes(df, cols, spec, bands, user_bands, path)
        if isinstance(spec.ref_epoch, str):
            ec = _find(cols, (spec.ref_epoch,))
            if ec is not None and n:
                cat_epoch = _numeric(df, ec, path)
        elif spec.ref_epoch is not None:
            cat_epoch = np.full(n, float(spec.ref_epoch))

    if system == "gaia-xp":
        fluxes.update(_xp_fluxes(df, None if bands is None or user_bands else set(bands), path))

    if user_bands:
        sys_name = system or "user"
        fluxes.update(_user_fluxes(df, bands, path, mag_system, vega_to_ab, flux_unit))

    if not fluxes:
        raise InputError(f"{path}: no recognisable magnitude or flux column for system {sys_name!r} "
                         f"(columns: {list(df.columns)[:30]}); pass bands={{'r': 'column', ...}} with "
                         "mag_system='AB'/'Vega' or flux_unit=")

    ra_v, dec_v, out_epoch = _at_epoch(df, cols, spec, ra_v, dec_v, cat_epoch, epoch, path)

    out = Table()
    out["id"] = ids
    out["ra"] = ra_v * u.deg
    out["dec"] = dec_v * u.deg
    for b, (f, e) in fluxes.items():
        out[f"{b}_flux"] = f * u.nJy
        out[f"{b}_flux_err"] = e * u.nJy
    out.meta.update({"system": sys_name, "bands": list(fluxes), "bandpasses": bandpasses, "path": str(path)})
    if out_epoch is not None:
        out.meta["epoch"] = float(out_epoch)
    return out


def _xp_fluxes(df, wanted, path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Gaia XP synthetic fluxes (W m⁻² Hz⁻¹ → nJy) of the ``wanted`` bands (None: all)."""
    fluxes = {}
    n = len(df)
    for b, (fcol, ecol) in _xp_bands(df.columns).items():
        if wanted is not None and b not in wanted:
            continue
        flux = _numeric(df, fcol, path) * _XP_FLUX_TO_NJY
        err = _numeric(df, ecol, path) * _XP_FLUX_TO_NJY if ecol else np.full(n, np.nan)
        fluxes[b] = (flux, err)
    if wanted is not None and set(wanted) - set(fluxes):
        raise InputError(f"{path}: XP bands {sorted(set(wanted) - set(fluxes))} not found; "
                         f"present: {sorted(_xp_bands(df.columns))}")
    return fluxes


def _user_fluxes(df, bands: dict, path, mag_system: str, vega_to_ab, flux_unit) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fluxes (nJy) of the columns a user named with ``bands={band: column or (column, err)}``."""
    fluxes = {}
    n = len(df)
    if mag_system.lower() == "vega" and flux_unit is None:
        missing = set(bands) - set(vega_to_ab or {})
        if missing:
            raise InputError(f"{path}: Vega magnitudes need their AB offsets: pass "
                             f"vega_to_ab={{{', '.join(repr(b) + ': m_AB - m_Vega' for b in sorted(missing))}}}")
    for b, colspec in bands.items():
        mcol, ecol = (colspec if isinstance(colspec, (tuple, list)) else (colspec, None))
        if mcol not in df.columns:
            raise InputError(f"{path}: column {mcol!r} (band {b!r}) not found; columns: {list(df.columns)[:30]}")
        if ecol is None:
            ecol = next((c for c in (f"{mcol}_err", f"e_{mcol}", f"{mcol}err", f"{mcol}_error", f"{mcol}_sigma")
                         if c in df.columns), None)
        values = _numeric(df, mcol, path)
        errs = _numeric(df, ecol, path) if ecol else np.full(n, np.nan)
        if flux_unit is not None:
            try:
                scale = u.Unit(flux_unit).to(u.nJy, equivalencies=u.spectral_density(1 * u.um))
            except (ValueError, TypeError) as exc:
                raise InputError(f"{path}: flux_unit={flux_unit!r} is not a flux density unit "
                                 f"(use 'nJy', 'Jy', 'erg/s/cm2/Hz' or 'W/m2/Hz')") from exc
            fluxes[b] = (values * scale, errs * scale)
        else:
            good = _usable_mag(values)
            offset = (vega_to_ab or {}).get(b, 0.0) if mag_system.lower() == "vega" else 0.0
            f, e = mag_to_njy(np.where(good, values, np.nan), errs, offset=offset)
            fluxes[b] = (f, e)
    return fluxes


def _at_epoch(df, cols, spec, ra_v, dec_v, cat_epoch, epoch, path):
    """Positions carried by proper motion to ``epoch`` when the catalog has them; returns
    ``(ra, dec, epoch of the positions or None)``."""
    out_epoch = None
    if cat_epoch is not None and len(df):
        finite_epoch = np.where(np.isfinite(cat_epoch), cat_epoch, np.nanmedian(cat_epoch) if np.isfinite(cat_epoch).any() else 0)
        if epoch is not None and spec is not None and spec.pm is not None and _find(cols, spec.pm[:1]):
            target = julian_year(epoch)
            pmra = _numeric(df, _find(cols, (spec.pm[0],)), path)
            pmdec = _numeric(df, _find(cols, (spec.pm[1],)), path)
            ra_v, dec_v = propagate(ra_v, dec_v, pmra, pmdec, finite_epoch, target)
            out_epoch = target
        else:
            out_epoch = float(np.median(finite_epoch))
    elif epoch is not None:
        out_epoch = None  # no proper motions: positions stay as catalogued
    return ra_v, dec_v, out_epoch


def _family_fluxes(df, cols, spec, bands, user_bands: bool, path):
    """Fluxes (nJy) and speclite bandpass names of a known family's bands (``bands``: the ones
    to keep; None, or a user's column mapping, for all present)."""
    fluxes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    bandpasses: dict[str, str] = {}
    n = len(df)
    wanted = list(spec.mags) if bands is None or user_bands else list(bands)
    for b in wanted:
        if b not in spec.mags:
            raise InputError(f"{path}: band {b!r} is not in {spec.name} (bands: {list(spec.mags)})")
        mcol, ecol = spec.mags[b]
        mcol = _find(cols, (mcol,))
        gaia_flux = _find(cols, (f"phot_{b.lower()}_mean_flux",)) if spec.name.startswith("gaia") else None
        if mcol is None and gaia_flux is None:
            if bands is not None:
                raise InputError(f"{path}: {spec.name} band {b!r} needs column {spec.mags[b][0]!r}, absent")
            continue
        if mcol is not None:
            mag = _numeric(df, mcol, path)
        else:
            # Gaia's mean fluxes (e-/s) and its Vega zero points give its magnitudes.
            with np.errstate(divide="ignore", invalid="ignore"):
                mag = GAIA_ZERO_POINTS[spec.name]["vega"][b] - 2.5 * np.log10(_numeric(df, gaia_flux, path))
        good = _usable_mag(mag)
        mag = np.where(good, mag, np.nan)
        offset = spec.vega_to_ab.get(b, 0.0)
        flux = mag_to_njy(mag, offset=offset)
        ecol = _find(cols, (ecol,)) if ecol else None
        if ecol is None:
            err = np.full(n, np.nan)
        elif ecol.lower().endswith("flux_over_error"):
            foe = _numeric(df, ecol, path)
            with np.errstate(divide="ignore", invalid="ignore"):
                err = np.where(foe > 0, flux / foe, np.nan)
        else:
            emag = _numeric(df, ecol, path)
            err = flux * np.where(emag >= 0, emag, np.nan) * (0.4 * np.log(10.0))
        fluxes[b] = (flux, err)
        if b in spec.bandpasses:
            bandpasses[b] = spec.bandpasses[b]
    return fluxes, bandpasses
