"""The streamed joint fit's first passes, run on each partition where it is held.

:func:`load` reads one partition (a Parquet file, or a pandas frame from a Dask DataFrame),
validates its rows as the in-memory fit does and keeps them sorted by star in compact arrays;
:func:`scan` summarises it (visits, detectors, pixel extents, a cubic map from pixels to each
visit's tangent plane per (visit, detector), the stars it holds); :func:`count_kept` and
:func:`components` serve the exclusions and the connectedness check. See ``_joint_stream``.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import InputError
from ._joint_input import MAG_ERR, OBS_COLUMNS, duplicate_checks, key

#: Columns a streamed fit reads (the sky position replaces the WCS).
STREAM_COLUMNS = (*OBS_COLUMNS, "ra", "dec")
#: Optional columns read when present.
STREAM_OPTIONAL = ("epoch", "colour", "color", "pixel_area")
#: Pixel coordinates are divided by this before the per-(visit, detector) polynomial fits.
PIXEL_SCALE = 2048.0
#: Order of the polynomial map from pixels to the visit's tangent plane per (visit, detector):
#: cubic, as the distortion of wide-field cameras (on the hsc-like simulator the map is good to
#: 2e-6 arcsec at the detector corners; a quadratic is off by an arcsecond there).
GEO_ORDER = 3
#: Its number of terms ``x^i y^j``, ``i + j <= GEO_ORDER``.
N_GEO = (GEO_ORDER + 1) * (GEO_ORDER + 2) // 2
#: Sums per (visit, detector): the upper triangle of the normal matrix, then ξ, η and the pixel
#: area (or 0) against each term.
N_GEO_SUMS = N_GEO * (N_GEO + 1) // 2 + 3 * N_GEO


def geo_terms(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The map's terms ``(..., N_GEO)`` at pixel positions (scaled by ``PIXEL_SCALE``)."""
    xs = np.asarray(x, dtype=np.float64) / PIXEL_SCALE
    ys = np.asarray(y, dtype=np.float64) / PIXEL_SCALE
    return np.stack([xs**i * ys**j for i in range(GEO_ORDER + 1) for j in range(GEO_ORDER + 1 - i)], axis=-1)


def read_frame(name: str, source, spec: dict):
    """The fit's columns of one partition as a pandas DataFrame, checked."""
    import pyarrow.dataset as ds

    if isinstance(source, tuple) and source[0] == "parquet":  # a file of a Parquet dataset
        _, root, path = source
        try:
            dset = ds.dataset([path], format="parquet", partitioning="hive", partition_base_dir=root)
            names = set(dset.schema.names)
            wanted = [c for c in (*STREAM_COLUMNS, *STREAM_OPTIONAL) if c in names]
            frame = dset.to_table(columns=wanted).to_pandas()
        except (OSError, ValueError) as exc:
            raise InputError(f"observations file {path!r}: cannot read as Parquet ({exc})") from exc
    elif isinstance(source, tuple) and source[0] == "dask":  # a Dask DataFrame's partition, in process
        frame = source[1].compute(scheduler="sync")
    else:
        frame = source
    missing = [c for c in STREAM_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(
            f"observations {name} has no column {missing[0]!r}; a streamed fit (visits=...) needs "
            f"{', '.join(STREAM_COLUMNS)}: ra, dec are each observation's sky position in degrees "
            "(e.g. SkyWcs.pixel_to_sky(x, y)); add the column or fit in memory with wcs_by_detector")
    if spec["need_area"] and "pixel_area" not in frame.columns:
        raise InputError(
            f"observations {name} has no column 'pixel_area'; a streamed {spec['model']!r} fit of "
            "surface-brightness fluxes needs each observation's pixel area (arcsec², e.g. "
            "SkyWcs.pixel_area(x, y)); add it, or fit fluence fluxes (kind='fluence')")
    return frame


def load(item: tuple, spec: dict) -> dict:
    """One partition's valid observations sorted by star, in compact arrays (see the module doc).

    ``item`` is ``(name, source)``; ``spec`` holds the visit table (``visit_ids`` sorted, ``ra``,
    ``dec``, ``epoch`` or None), ``use_colour``, ``error_floor``, ``need_area``, ``model``.
    """
    from ..astrometry import sky_to_tangent

    name, source = item
    frame = read_frame(name, source, spec)
    n_in = len(frame)
    cols = {}
    for c in STREAM_COLUMNS:
        a = frame[c].to_numpy()
        if c not in ("visit", "detector", "star") and not np.issubdtype(a.dtype, np.number):
            raise InputError(f"observations {name} column {c!r} must be numeric, got {a.dtype}")
        cols[c] = a if c in ("visit", "detector", "star") else a.astype(np.float64)
    colour_name = next((c for c in ("colour", "color") if c in frame.columns), None)
    colour = frame[colour_name].to_numpy(dtype=np.float64) if colour_name else None
    area = frame["pixel_area"].to_numpy(dtype=np.float64) if "pixel_area" in frame.columns else None
    if spec["use_colour"] and colour is None:
        raise InputError(f"chromatic_order needs a 'colour' column in the observations ({name} has none)")
    good = np.ones(n_in, dtype=bool)
    checks = [
        ("non-finite x or y", ~(np.isfinite(cols["x"]) & np.isfinite(cols["y"]))),
        ("non-finite instflux", ~np.isfinite(cols["instflux"])),
        ("non-positive instflux", np.isfinite(cols["instflux"]) & (cols["instflux"] <= 0)),
        ("non-finite or non-positive instflux_err",
         ~(np.isfinite(cols["instflux_err"]) & (cols["instflux_err"] > 0))),
        ("non-finite ra or dec", ~(np.isfinite(cols["ra"]) & np.isfinite(cols["dec"]))),
    ]
    if spec["use_colour"]:
        checks.append(("non-finite colour", ~np.isfinite(colour)))
    if area is not None:
        checks.append(("non-finite or non-positive pixel_area", ~(np.isfinite(area) & (area > 0))))
    checks.extend(duplicate_checks(cols))
    excluded = []
    for reason, bad in checks:
        nb = int(np.count_nonzero(bad & good))
        if nb:
            excluded.append((reason, nb))
        good &= ~bad
    vids = spec["visit_ids"]
    visit_raw = np.asarray(cols["visit"])[good]
    vi = np.clip(np.searchsorted(vids, visit_raw), 0, len(vids) - 1)
    unknown = vids[vi] != visit_raw
    if unknown.any():
        miss = np.unique(visit_raw[unknown])
        raise InputError(f"observations {name}: visit(s) {[key(v) for v in miss[:10]]} are not in the visits table; "
                         "add their pointings (columns visit, ra, dec) to visits= or drop those observations")
    star = np.asarray(cols["star"])[good]
    order = np.argsort(star, kind="stable")
    star = star[order].astype(np.int64)
    sel = np.nonzero(good)[0][order]
    vi = vi[order].astype(np.int32)
    if "epoch" in frame.columns:
        epoch = frame["epoch"].to_numpy()[sel]
    elif spec["epoch"] is not None:
        epoch = spec["epoch"][vi]
    else:
        epoch = np.zeros(len(sel), dtype=np.int64)
    xi, eta = sky_to_tangent(cols["ra"][sel], cols["dec"][sel], spec["ra"][vi], spec["dec"][vi])
    if not (np.all(np.isfinite(xi)) and np.all(np.isfinite(eta))):
        raise InputError(f"observations {name}: some ra, dec are 90° or more from their visit's pointing "
                         "(visits table ra, dec); check both are in degrees")
    flux, ferr = cols["instflux"][sel], cols["instflux_err"][sel]
    return {
        "name": name, "n_in": n_in, "excluded": excluded,
        "star": star, "visit": vi, "detector": np.asarray(cols["detector"])[sel], "epoch": np.asarray(epoch),
        "x": cols["x"][sel], "y": cols["y"][sel], "xi": xi, "eta": eta,
        "mag": -2.5 * np.log10(flux), "sigma2": (MAG_ERR * ferr / flux) ** 2 + spec["error_floor"] ** 2,
        "colour": None if colour is None else colour[sel], "area": None if area is None else area[sel],
    }


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, inv = np.unique(keys, return_inverse=True)
    return ids, inv


def scan(raw: dict) -> dict:
    """What the client needs from a partition before the fit (see the module docstring)."""
    n = len(raw["star"])
    star_ids, s_inv, s_cnt = np.unique(raw["star"], return_inverse=True, return_counts=True)
    v_ids, v_inv = _groups(raw["visit"])
    n_v = len(v_ids)
    # epoch must be a property of the visit
    ve = np.zeros(n_v, dtype=np.asarray(raw["epoch"]).dtype)
    ve[v_inv] = raw["epoch"]
    bad_epoch = np.unique(raw["visit"][ve[v_inv] != raw["epoch"]])
    rad = np.zeros(n_v)
    np.maximum.at(rad, v_inv, np.maximum(np.abs(raw["xi"]), np.abs(raw["eta"])))
    d_ids, d_inv = _groups(raw["detector"])
    ext = np.full((len(d_ids), 4), np.nan)
    for j, (a, f) in enumerate(((raw["x"], np.fmin), (raw["x"], np.fmax), (raw["y"], np.fmin), (raw["y"], np.fmax))):
        col = np.full(len(d_ids), np.inf if f is np.fmin else -np.inf)
        f.at(col, d_inv, a)
        ext[:, j] = col
    pair = raw["visit"].astype(np.int64) * (len(d_ids) + 1) + d_inv
    p_ids, p_inv = _groups(pair)
    t = geo_terms(raw["x"], raw["y"])
    iu, ju = np.triu_indices(N_GEO)
    sums = np.zeros((len(p_ids), N_GEO_SUMS))
    for c, (i, j) in enumerate(zip(iu, ju, strict=True)):
        sums[:, c] = np.bincount(p_inv, weights=t[:, i] * t[:, j], minlength=len(p_ids))
    base = len(iu)
    area = raw["area"] if raw["area"] is not None else np.zeros(n)
    for q, val in enumerate((raw["xi"], raw["eta"], area)):
        for i in range(N_GEO):
            sums[:, base + q * N_GEO + i] = np.bincount(p_inv, weights=t[:, i] * val, minlength=len(p_ids))
    return {
        "name": raw["name"], "n_in": raw["n_in"], "excluded": raw["excluded"], "n_valid": n,
        "star_ids": star_ids, "n_single": int(np.count_nonzero(s_cnt == 1)),
        "visits": v_ids, "visit_count": np.bincount(v_inv, minlength=n_v), "visit_epoch": ve,
        "visit_bad_epoch": bad_epoch, "visit_radius": rad,
        "detectors": d_ids, "extent": ext,
        "pair_visit": (p_ids // (len(d_ids) + 1)).astype(np.int64), "pair_detector": d_ids[p_ids % (len(d_ids) + 1)],
        "pair_sums": sums, "has_colour": raw["colour"] is not None,
    }


def _group_index(raw: dict, ctx: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global visit, (epoch, detector) and detector-group indices of a partition's rows."""
    det = np.searchsorted(ctx["detector_ids"], raw["detector"])
    ep = np.searchsorted(ctx["epoch_ids"], raw["epoch"])
    epdet = ep.astype(np.int64) * len(ctx["detector_ids"]) + det
    group = epdet if ctx["detector_group"] == "epoch_detector" else det
    return raw["visit"], epdet, group


def kept_rows(raw: dict, ctx: dict) -> np.ndarray:
    """Rows kept given the excluded visits and detector groups: stars seen once (or once with a
    reference flux where the reference is a measurement) are dropped until none is left."""
    vis, _epdet, group = _group_index(raw, ctx)
    keep = ~(ctx["visit_out"][vis] | ctx["group_out"][group])
    _, s_inv = np.unique(raw["star"], return_inverse=True)
    n_s = int(s_inv.max()) + 1 if len(s_inv) else 0
    ref_star = ref_lookup(raw, ctx)[0] > 0 if ctx["reference_in_chi2"] else np.zeros(n_s, dtype=bool)
    ns = np.bincount(s_inv[keep], minlength=n_s)
    ok = (ns >= 2) | ((ns >= 1) & ref_star)
    return keep & ok[s_inv]


def ref_lookup(raw: dict, ctx: dict) -> tuple[np.ndarray, np.ndarray]:
    """Reference weight and magnitude of each of the partition's stars (0 where none)."""
    ids = np.unique(raw["star"])
    ref_w = np.zeros(len(ids))
    ref_m = np.zeros(len(ids))
    ref = ctx.get("reference")
    if ref is not None and len(ref[0]) and len(ids):
        rs, rf, re = ref
        pos = np.clip(np.searchsorted(rs, ids), 0, len(rs) - 1)
        hit = rs[pos] == ids
        ref_m[hit] = -2.5 * np.log10(rf[pos[hit]])
        ref_w[hit] = 1.0 / (MAG_ERR * re[pos[hit]] / rf[pos[hit]]) ** 2
    return ref_w, ref_m


def count_kept(raw: dict, ctx: dict) -> dict:
    """Kept observations per visit and per detector group (one round of the exclusions)."""
    keep = kept_rows(raw, ctx)
    vis, epdet, group = _group_index(raw, ctx)
    n_ed = len(ctx["epoch_ids"]) * len(ctx["detector_ids"])
    return {"visit": np.bincount(vis[keep], minlength=len(ctx["visit_out"])),
            "group": np.bincount(group[keep], minlength=len(ctx["group_out"])),
            "epdet": np.bincount(epdet[keep], minlength=n_ed)}


def components(raw: dict, ctx: dict) -> list[np.ndarray]:
    """Visits linked through this partition's kept stars, one array per connected set."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    keep = kept_rows(raw, ctx)
    if not keep.any():
        return []
    _, s = np.unique(raw["star"][keep], return_inverse=True)
    v_ids, v = np.unique(raw["visit"][keep], return_inverse=True)
    n_s = int(s.max()) + 1
    graph = coo_matrix((np.ones(len(s)), (s, n_s + v)), shape=(n_s + len(v_ids),) * 2)
    _, lab = connected_components(graph, directed=False)
    vl = lab[n_s:]
    return [v_ids[vl == c] for c in np.unique(vl)]


def reference_hits(raw: dict, ctx: dict) -> int:
    """How many of the partition's kept stars have a reference flux."""
    keep = kept_rows(raw, ctx)
    ids = np.unique(raw["star"])
    kept_ids = np.unique(raw["star"][keep])
    return int(np.count_nonzero((ref_lookup(raw, ctx)[0] > 0) & np.isin(ids, kept_ids)))


def source_items(observations) -> list[tuple[str, object]]:
    """``(name, source)`` per partition of a Parquet dataset directory or file, in a fixed order."""
    path = os.fspath(observations)
    if os.path.isfile(path):
        return [(repr(path), ("parquet", os.path.dirname(path) or ".", path))]
    if not os.path.isdir(path):
        raise InputError(f"observations {path!r}: no such Parquet file or dataset directory")
    files = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        files.extend(os.path.join(dirpath, f) for f in sorted(filenames)
                     if not f.startswith((".", "_")) and f.endswith((".parquet", ".parq", ".pq")))
    if not files:
        raise InputError(f"observations {path!r} holds no Parquet files (*.parquet); write the observations there "
                         "as a Parquet dataset partitioned by star")
    return [(repr(f), ("parquet", path, f)) for f in sorted(files)]
