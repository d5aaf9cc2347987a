"""Catalog plumbing for the pipeline: reading reference catalogs, matching on the sky,
associating detections across visits into stars, and Parquet I/O with atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import atomic_write
from ..astrometry import unit_vectors
from ..errors import InputError

__all__ = [
    "read_table",
    "write_parquet",
    "read_reference",
    "reference_for",
    "tangent_xy",
    "match_nearest",
    "associate",
]


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a DataFrame to Parquet atomically (no index; deterministic bytes for equal data)."""
    with atomic_write(path) as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a Parquet file or a FITS/ECSV table into a DataFrame; failures become InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        from astropy.table import Table

        table = Table.read(path)
        return table.to_pandas()
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow/astropy raise many types for bad files
        raise InputError(f"{path}: not a readable table ({type(exc).__name__}: {exc})") from exc


_FLUX_NAMES = ("flux", "flux_njy", "flux_nJy", "refflux")


def read_reference(path: str | os.PathLike, band: str | None = None) -> pd.DataFrame:
    """A reference catalog as columns ``ref_id``, ``ra``, ``dec`` (deg), ``flux``, ``flux_err`` (nJy).

    The flux column is ``flux`` or ``<band>_flux`` (also ``..._nJy`` spellings); ``flux_err``
    defaults to zero when absent. An id column (``id``, ``star``, ``ref_id``) is kept, else the
    row number is used. A ``colour`` column is kept when present.

    Raises
    ------
    InputError
        Missing coordinate or flux columns, or non-finite coordinates.
    """
    df = read_table(path)
    cols = {c.lower(): c for c in df.columns}
    for need in ("ra", "dec"):
        if need not in cols:
            raise InputError(f"{path}: reference catalog has no {need!r} column (columns: {list(df.columns)})")
    candidates = list(_FLUX_NAMES)
    if band:
        candidates = [f"{band}_flux", f"flux_{band}", f"{band}_flux_njy", f"{band}_flux_nJy"] + candidates
    flux_col = next((cols[c.lower()] for c in candidates if c.lower() in cols), None)
    if flux_col is None:
        fluxy = [c for c in df.columns if "flux" in c.lower() and "err" not in c.lower()]
        if len(fluxy) == 1:
            flux_col = fluxy[0]
    if flux_col is None:
        raise InputError(f"{path}: reference catalog has no flux column (looked for {candidates}); "
                         "name the nJy flux column 'flux'")
    err_names = (f"{flux_col.lower()}_err", f"{flux_col.lower()}err", "flux_err", "fluxerr")
    err_col = next((cols[c] for c in err_names if c in cols), None)
    id_col = next((cols[c] for c in ("ref_id", "id", "star", "star_id") if c in cols), None)

    def column(name: str | None, dtype, default=None) -> np.ndarray:
        if name is None:
            return default
        try:
            return df[name].to_numpy(dtype)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: reference catalog column {name!r} is not numeric "
                             f"({exc}); it must hold numbers") from exc

    out = pd.DataFrame({
        "ref_id": column(id_col, np.int64, np.arange(len(df), dtype=np.int64)),
        "ra": column(cols["ra"], np.float64),
        "dec": column(cols["dec"], np.float64),
        "flux": column(flux_col, np.float64),
        "flux_err": column(err_col, np.float64, np.zeros(len(df))),
    })
    for name in ("colour", "color"):
        if name in cols:
            out["colour"] = column(cols[name], np.float64)
            break
    if not (np.isfinite(out["ra"]).all() and np.isfinite(out["dec"]).all()):
        raise InputError(f"{path}: reference catalog has non-finite ra/dec values")
    usable = np.isfinite(out["flux"]) & (out["flux"] > 0)
    if len(out) and not usable.any():
        # Otherwise every match is dropped later and the fit reports no matched stars at all.
        raise InputError(f"{path}: reference catalog column {flux_col!r} has no finite positive "
                         "flux (all NaN, infinite, zero or negative); give fluxes in nJy")
    dup = out["ref_id"].duplicated(keep=False)
    if dup.any():
        ids = sorted(set(out.loc[dup, "ref_id"].tolist()))
        shown = ", ".join(str(i) for i in ids[:10]) + (" ..." if len(ids) > 10 else "")
        raise InputError(f"{path}: reference catalog has duplicate ids in column {id_col!r}: "
                         f"{shown}; each reference star needs its own id")
    return out


def reference_for(path: str | os.PathLike, band: str | None, *, bandpass: str | None = None,
                  mjd: float | None = None) -> tuple[pd.DataFrame, str]:
    """The reference fluxes in ``band`` for one exposure, and a line saying how they were made.

    A catalog already in photocalib's form (``flux`` or ``<band>_flux`` in nJy) is read by
    :func:`read_reference`. Otherwise it is a survey catalog (Gaia, Pan-STARRS1, ATLAS-RefCat2,
    SkyMapper) read by :func:`photocalib.refcat.read_reference` at the exposure's epoch: its
    ``<band>_flux`` when it has that band, else its band carried into the instrument's band by
    :func:`photocalib.refcat.colour_term_for`: the published empirical term where there is one
    (Gaia or PS1 → DECam), else, for Gaia, a synthetic term in BP − RP through the instrument's
    bandpass (``bandpass``, a speclite filter name). When a colour term was used, the table
    has ``colour`` (the colour it was evaluated at) and ``flux_reference_band`` (the flux before
    it, nJy) columns, and ``attrs['colour_term']`` holds the :class:`~photocalib.refcat.ColourTerm`.

    Raises
    ------
    InputError
        Neither form, or a survey catalog without the band and no way to make it (the message
        names the file and what to pass).
    """
    try:
        return read_reference(path, band=band), "reference fluxes in nJy as given"
    except InputError as plain:
        first = plain
    from ..refcat import colour_term_for
    from ..refcat import read_reference as read_survey

    epoch = None
    if mjd is not None and np.isfinite(mjd):
        epoch = 2000.0 + (float(mjd) - 51544.5) / 365.25
    try:
        table = read_survey(path, epoch=epoch)
    except InputError as exc:
        raise InputError(f"{first}; nor is it a survey catalog photocalib.refcat reads ({exc})") from exc
    system = str(table.meta.get("system", "?"))
    colour_name = None
    note = f"{system} catalog at epoch {epoch if epoch is None else round(epoch, 3)}"
    if band and f"{band}_flux" not in table.colnames:
        try:
            if not bandpass:
                raise InputError("no instrument bandpass")
            # The published empirical term where there is one (Gaia/PS1 → DECam), else synthetic.
            ct = colour_term_for(table.meta, bandpass, band)
        except InputError:
            raise InputError(
                f"{path}: a {system} catalog with bands {', '.join(table.meta.get('bands', []))} "
                f"but not {band!r}, and no colour term to make it; give a reference in {band} "
                "(a table with a '<band>_flux' column in nJy, or magnitudes read with "
                "photocalib.refcat.read_reference and a ColourTerm applied)") from None
        table = ct.apply(table)
        note += f"; {ct.describe()}"
        # The colour the term was evaluated at, for the report's residual-against-colour panel.
        colour_used, _ = ct.colour_of(table)
        table["colour"] = colour_used
        colour_name = f"{ct.colour_bands[0]} − {ct.colour_bands[1]} ({system}, AB)"
    name = f"{band}_flux" if band and f"{band}_flux" in table.colnames else None
    if name is None:
        raise InputError(f"{path}: the {system} catalog has no band to calibrate against; "
                         f"bands {', '.join(table.meta.get('bands', []))}")
    flux = np.asarray(table[name], dtype=np.float64)
    err = np.asarray(table[f"{name}_err"], dtype=np.float64) if f"{name}_err" in table.colnames \
        else np.zeros_like(flux)
    keep = np.isfinite(flux) & (flux > 0)
    out = pd.DataFrame({"ref_id": np.asarray(table["id"], np.int64)[keep],
                        "ra": np.asarray(table["ra"], np.float64)[keep],
                        "dec": np.asarray(table["dec"], np.float64)[keep],
                        "flux": flux[keep], "flux_err": np.nan_to_num(err[keep])})
    if colour_name is not None:
        out["colour"] = np.asarray(table["colour"], np.float64)[keep]
        # The reference band's flux before the colour term: the report plots the measured
        # offset from it against colour, over the term, to show whether the term fits.
        out["flux_reference_band"] = np.asarray(table[f"{ct.reference_band}_flux"], np.float64)[keep]
        out.attrs["colour_name"] = colour_name
        out.attrs["colour_term"] = ct
    return out, note


def tangent_xy(ra, dec, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic (xi, eta) in arcsec about (ra0, dec0) (degrees in)."""
    from ..astrometry import sky_to_tangent

    return sky_to_tangent(np.asarray(ra, float), np.asarray(dec, float), ra0, dec0)


def _chord(radius_arcsec: float) -> float:
    return 2.0 * np.sin(np.radians(radius_arcsec / 3600.0) / 2.0)


def match_nearest(ra, dec, ref_ra, ref_dec, radius_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest reference object within ``radius_arcsec`` of each position.

    Returns
    -------
    index : ndarray of int
        Row of the reference for each position, -1 where none is within the radius.
    separation : ndarray
        Separation in arcsec (inf where unmatched).
    """
    from scipy.spatial import cKDTree

    ra = np.atleast_1d(np.asarray(ra, float))
    if ra.size == 0 or np.size(ref_ra) == 0:
        return np.full(ra.size, -1, np.int64), np.full(ra.size, np.inf)
    tree = cKDTree(unit_vectors(ref_ra, ref_dec))
    dist, idx = tree.query(unit_vectors(ra, dec), k=1, distance_upper_bound=_chord(radius_arcsec))
    ok = np.isfinite(dist)
    sep = np.full(ra.size, np.inf)
    sep[ok] = np.degrees(2.0 * np.arcsin(dist[ok] / 2.0)) * 3600.0
    return np.where(ok, idx, -1).astype(np.int64), sep


def associate(ra, dec, radius_arcsec: float) -> np.ndarray:
    """Group detections into stars: connected components of the "closer than radius" graph.

    Parameters
    ----------
    ra, dec : array_like
        Detections of every visit (degrees).
    radius_arcsec : float
        Linking length; well below the typical star separation and above the astrometric
        scatter.

    Returns
    -------
    ndarray of int64
        A star label per detection, 0..n_stars-1, numbered by first appearance.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    ra = np.asarray(ra, float)
    n = ra.size
    if n == 0:
        return np.empty(0, np.int64)
    tree = cKDTree(unit_vectors(ra, dec))
    pairs = tree.query_pairs(_chord(radius_arcsec), output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # Renumber by first appearance so labels do not depend on scipy's internal order.
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[labels].astype(np.int64)
