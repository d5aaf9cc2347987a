"""Reading the joint fit's inputs: columns of a Table or DataFrame, validity, duplicates, reference."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..errors import InputError

#: Columns every observation table has.
OBS_COLUMNS = ("visit", "detector", "star", "x", "y", "instflux", "instflux_err")
#: 2.5 / ln 10: magnitude error per relative flux error.
MAG_ERR = 2.5 / math.log(10.0)


def column(table, name: str, what: str) -> np.ndarray:
    try:
        if hasattr(table, "to_numpy") and hasattr(table, "columns"):  # pandas
            if name not in table.columns:
                raise KeyError(name)
            return table[name].to_numpy()
        if name not in table.colnames:
            raise KeyError(name)
        col = table[name]
        if getattr(col, "mask", None) is not None and np.any(col.mask):
            if np.issubdtype(col.dtype, np.floating):
                return np.ma.filled(col, np.nan)
            raise InputError(f"{what} column {name!r} has masked (missing) values; fill or drop them")
        return np.asarray(col)
    except KeyError as exc:
        raise InputError(f"{what} has no column {name!r}; it needs {', '.join(OBS_COLUMNS) if what == 'observations' else 'star, flux, flux_err'}") from exc


def has_column(table, name: str) -> bool:
    if hasattr(table, "columns") and hasattr(table, "to_numpy"):
        return name in table.columns
    return name in getattr(table, "colnames", ())


def key(v) -> Any:
    """A NumPy scalar as the Python value (dictionary keys, messages)."""
    return v.item() if hasattr(v, "item") else v


def duplicate_groups(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose key tuple occurs more than once, sorted by key, and their group starts.

    Returns ``(order, starts)``: ``order`` lists the rows of every repeated key (sorted by key,
    each group contiguous) and ``starts`` the index in ``order`` where each group begins.
    """
    keys = tuple(np.asarray(k) for k in keys)
    order = np.lexsort(keys[::-1])
    same = np.ones(len(order) - 1, dtype=bool) if len(order) > 1 else np.zeros(0, dtype=bool)
    for k in keys:
        ks = k[order]
        same &= ks[1:] == ks[:-1]
    # a row is in a repeated group if it equals its predecessor or its successor
    in_dup = np.zeros(len(order), dtype=bool)
    in_dup[1:] |= same
    in_dup[:-1] |= same
    first = in_dup.copy()
    first[1:] &= ~same
    rows = order[in_dup]
    starts = np.nonzero(first[in_dup])[0]
    return rows, starts


def duplicate_checks(cols: dict) -> list[tuple[str, np.ndarray]]:
    """Rows to drop because their (visit, detector, star) key is repeated, with the reasons.

    A star is measured once per (visit, detector). An identical repeated row (a catalog
    ingested twice) would count twice in the χ² and shrink the errors: one copy is kept.
    Copies that differ (two detections associated with one star) leave no telling which is
    the star: all of them are dropped. Both are listed in the solution's ``excluded``.
    """
    n = len(cols["visit"])
    dup_rows, dup_starts = duplicate_groups(cols["visit"], cols["detector"], cols["star"])
    if not dup_rows.size:
        return []
    grp = np.repeat(np.arange(len(dup_starts)), np.diff(np.append(dup_starts, dup_rows.size)))
    head = dup_rows[dup_starts][grp]
    same = np.ones(dup_rows.size, dtype=bool)
    for c in ("x", "y", "instflux", "instflux_err"):
        same &= cols[c][dup_rows] == cols[c][head]
    conflicting = np.zeros(len(dup_starts), dtype=bool)
    conflicting[grp[~same]] = True
    out = []
    copies = np.zeros(n, dtype=bool)
    copies[dup_rows[~conflicting[grp]]] = True
    copies[dup_rows[dup_starts][~conflicting]] = False  # the first copy is kept
    differing = np.zeros(n, dtype=bool)
    differing[dup_rows[conflicting[grp]]] = True

    def named(groups):
        return ", ".join(f"(visit {key(cols['visit'][i])}, detector {key(cols['detector'][i])}, "
                         f"star {key(cols['star'][i])})" for i in dup_rows[dup_starts[groups[:3]]])

    if copies.any():
        out.append((f"identical duplicate (visit, detector, star) rows, one copy kept, e.g. "
                    f"{named(np.nonzero(~conflicting)[0])}", copies))
    if differing.any():
        out.append((f"duplicate (visit, detector, star) rows that differ, all dropped, e.g. "
                    f"{named(np.nonzero(conflicting)[0])}", differing))
    return out


#: Optional observation columns read from a Parquet dataset when present.
OPTIONAL_COLUMNS = ("epoch", "colour", "color", "pixel_area")


def materialise(observations):
    """A Parquet dataset path or a Dask DataFrame as a pandas DataFrame of the fit's columns.

    Only the columns the fit reads are loaded (a catalog's other columns stay on disk). The
    whole table is then held in this process: the partitions are concatenated, not streamed.
    """
    if isinstance(observations, (str, os.PathLike)):
        import pyarrow.dataset as ds

        try:
            dataset = ds.dataset(os.fspath(observations), format="parquet", partitioning="hive")
        except (OSError, ValueError) as exc:
            raise InputError(f"observations {os.fspath(observations)!r}: cannot open as a Parquet dataset ({exc})") from exc
        names = set(dataset.schema.names)
        missing = [c for c in OBS_COLUMNS if c not in names]
        if missing:
            raise InputError(f"observations {os.fspath(observations)!r} has no column {missing[0]!r}; "
                             f"it needs {', '.join(OBS_COLUMNS)}")
        wanted = list(OBS_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in names]
        return dataset.to_table(columns=wanted).to_pandas()
    if hasattr(observations, "npartitions") and hasattr(observations, "compute"):  # a Dask DataFrame
        cols = [c for c in (*OBS_COLUMNS, *OPTIONAL_COLUMNS) if c in observations.columns]
        return observations[cols].compute()
    return observations


def read_observations(observations, use_colour: bool, error_floor: float) -> dict:
    """Columns, per-row validity and duplicate checks of the observation table.

    Returns a dict with the kept ``row`` indices, their ``cols`` (float64 x, y, instflux,
    instflux_err; raw visit, detector, star), ``epoch``, ``colour`` (or None), ``pixel_area``
    (or None), magnitudes ``mag``, variances ``sigma2`` and the ``excluded`` reasons.
    """
    observations = materialise(observations)
    if observations is None or not (hasattr(observations, "colnames") or hasattr(observations, "columns")):
        raise InputError("observations must be an astropy Table, a pandas or Dask DataFrame, or a Parquet "
                         "dataset path")
    cols = {c: column(observations, c, "observations") for c in OBS_COLUMNS}
    n_in = len(cols["visit"])
    if n_in == 0:
        raise InputError("observations is empty")
    for c in ("x", "y", "instflux", "instflux_err"):
        if not np.issubdtype(np.asarray(cols[c]).dtype, np.number):
            raise InputError(f"observations column {c!r} must be numeric")
        cols[c] = np.asarray(cols[c], dtype=np.float64)
    epoch = column(observations, "epoch", "observations") if has_column(observations, "epoch") \
        else np.zeros(n_in, dtype=np.int64)
    colour_name = next((c for c in ("colour", "color") if has_column(observations, c)), None)
    colour = np.asarray(column(observations, colour_name, "observations"), dtype=np.float64) if colour_name else None
    area = np.asarray(column(observations, "pixel_area", "observations"), dtype=np.float64) \
        if has_column(observations, "pixel_area") else None
    if use_colour and colour is None:
        raise InputError("chromatic_order needs a 'colour' column in the observations")
    excluded: list[tuple[str, str, str]] = []
    # per-row validity: dropped and counted, never propagated as NaN
    good = np.ones(n_in, dtype=bool)
    checks = [
        ("non-finite x or y", ~(np.isfinite(cols["x"]) & np.isfinite(cols["y"]))),
        ("non-finite instflux", ~np.isfinite(cols["instflux"])),
        ("non-positive instflux", np.isfinite(cols["instflux"]) & (cols["instflux"] <= 0)),
        ("non-finite or non-positive instflux_err", ~(np.isfinite(cols["instflux_err"]) & (cols["instflux_err"] > 0))),
    ]
    if use_colour:
        checks.append(("non-finite colour", ~np.isfinite(colour)))
    if area is not None:
        checks.append(("non-finite or non-positive pixel_area", ~(np.isfinite(area) & (area > 0))))
    checks.extend(duplicate_checks(cols))
    for reason, bad in checks:
        nb = int(np.count_nonzero(bad & good))
        if nb:
            excluded.append(("observations", str(nb), reason))
        good &= ~bad
    if not good.any():
        raise InputError("no usable observations: every row has a non-finite or non-positive x, y, instflux or instflux_err")
    row = np.nonzero(good)[0]
    sig = MAG_ERR * cols["instflux_err"][row] / cols["instflux"][row]
    return {"row": row, "cols": cols, "epoch": np.asarray(epoch)[row],
            "colour": None if colour is None else colour[row], "pixel_area": None if area is None else area[row],
            "mag": -2.5 * np.log10(cols["instflux"][row]), "sigma2": sig**2 + error_floor**2, "excluded": excluded}


def read_reference(reference, excluded: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(star, flux, flux_err)`` of the usable reference rows (one per star).

    Identical repeated rows are harmless (one is kept); copies that disagree on flux or flux_err
    leave the star's reference undefined and are refused, naming them.
    """
    rs = column(reference, "star", "reference")
    rf = np.asarray(column(reference, "flux", "reference"), dtype=np.float64)
    re = np.asarray(column(reference, "flux_err", "reference"), dtype=np.float64)
    dup_rows, dup_starts = duplicate_groups(rs)
    if dup_rows.size:
        grp = np.repeat(np.arange(len(dup_starts)), np.diff(np.append(dup_starts, dup_rows.size)))
        head = dup_rows[dup_starts][grp]
        differs = ~((rf[dup_rows] == rf[head]) & (re[dup_rows] == re[head]))
        bad = np.unique(grp[differs])
        if bad.size:
            named = ", ".join(str(key(rs[dup_rows[dup_starts[g]]])) for g in bad[:10])
            raise InputError(
                f"reference has {bad.size} duplicate stars whose rows disagree on flux or "
                f"flux_err (star {named}); keep one reference row per star")
        keep_ref = np.ones(len(rs), dtype=bool)
        keep_ref[dup_rows] = False
        keep_ref[dup_rows[dup_starts]] = True
        rs, rf, re = np.asarray(rs)[keep_ref], rf[keep_ref], re[keep_ref]
    okr = np.isfinite(rf) & (rf > 0) & np.isfinite(re) & (re > 0)
    if np.count_nonzero(~okr):
        excluded.append(("reference", str(int(np.count_nonzero(~okr))), "non-finite or non-positive flux or flux_err"))
    return np.asarray(rs)[okr], rf[okr], re[okr]
