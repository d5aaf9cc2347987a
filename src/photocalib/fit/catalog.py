"""Source catalogs of one detector: calibrated fluxes, magnitudes and provenance, as Parquet.

The chain that makes them from an exposure is :func:`photocalib.fit.process_detector`.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.table import Table

from .._io import atomic_write
from ..errors import ImageKindError, InputError
from ..image.kind import ImageKind

__all__ = ["source_catalog", "write_catalog", "read_catalog"]


def source_catalog(phot: Table, photo_calib, wcs=None, *, kind: ImageKind | str | None = None) -> Table:
    """Calibrate a photometry table into a source catalog.

    Parameters
    ----------
    phot : astropy Table
        From :func:`photocalib.measure.aperture_photometry` (``x``, ``y``, ``instflux``,
        ``instflux_err``, ``flags``), possibly with more columns (kept).
    photo_calib : PhotoCalib
        Of the same kind as the image the photometry was measured on.
    wcs : SkyWcs, optional
        Adds ``ra``, ``dec`` (degrees) and ``pixel_area`` (arcsec²).
    kind : ImageKind or str, optional
        The kind measured on; default ``phot.meta['kind']``.

    Returns
    -------
    astropy Table
        With ``instflux_nJy`` (+``_err``), ``instflux_mag`` (+``_err``, AB), ``pixel_area``,
        ``kind`` (a column, so it survives any table operation) and ``meta['kind']``.

    Raises
    ------
    ImageKindError
        The calibration's kind differs from the kind the photometry was measured on.
    """
    kind = ImageKind.parse(kind if kind is not None else phot.meta.get("kind", "FLUENCE"))
    if photo_calib.kind is not kind:
        raise ImageKindError(
            f"source_catalog: photometry was measured on a {kind.value} image but the calibration "
            f"takes {photo_calib.kind.value}; convert it with photo_calib.to_kind(ImageKind.{kind.name}, wcs)"
        )
    out = photo_calib.calibrate_catalog(phot, flux_columns="instflux", include_calibration_error=False)
    x = np.asarray(phot["x"], dtype=np.float64)
    y = np.asarray(phot["y"], dtype=np.float64)
    if wcs is not None:
        ra, dec = wcs.pixel_to_sky(x, y)
        out["ra"] = np.asarray(ra, dtype=np.float64)
        out["dec"] = np.asarray(dec, dtype=np.float64)
        out["pixel_area"] = np.asarray(wcs.pixel_area(x, y), dtype=np.float64)
    out["kind"] = np.full(len(out), kind.value)
    out.meta["kind"] = kind.value
    return out


def write_catalog(table: Table, path: str | os.PathLike, overwrite: bool = True) -> None:
    """Write a catalog as Parquet atomically; units and scalar metadata go in the schema.

    Multi-dimensional columns are not supported by this flat format (raise InputError).
    """
    arrays = {}
    units = {}
    for name in table.colnames:
        col = table[name]
        values = np.asarray(col)
        if values.ndim != 1:
            raise InputError(f"write_catalog: column {name!r} is {values.ndim}-D; Parquet catalogs are flat")
        arrays[name] = values
        if getattr(col, "unit", None) is not None:
            units[name] = str(col.unit)
    meta = {k: v for k, v in table.meta.items() if isinstance(v, str | int | float | bool)}
    schema_meta = {
        b"photocalib": json.dumps({"units": units, "meta": meta}).encode(),
    }
    pa_table = pa.table(arrays).replace_schema_metadata(schema_meta)
    with atomic_write(path, overwrite) as tmp:
        pq.write_table(pa_table, tmp)


def read_catalog(path: str | os.PathLike) -> Table:
    """Read a catalog written by :func:`write_catalog` (units and metadata restored).

    Raises
    ------
    InputError
        The path is missing, a directory, not a Parquet file, or damaged (a column name that is
        not UTF-8, photocalib metadata that is not valid JSON).
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        what = "is a directory, not a catalog file" if os.path.isdir(p) else "no such file"
        raise InputError(f"{p}: {what}; give the path of one .parquet catalog")
    try:
        pa_table = pq.read_table(p)
        # A damaged byte in the footer can leave a column name that is not UTF-8; pyarrow only
        # decodes names lazily, so touch them here, inside the read boundary.
        names = list(pa_table.column_names)
    except (OSError, pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not a readable Parquet catalog ({exc}); rewrite it with write_catalog") from exc
    info = {}
    if pa_table.schema.metadata and b"photocalib" in pa_table.schema.metadata:
        raw = pa_table.schema.metadata[b"photocalib"]
        try:
            info = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(
                f"{p}: its 'photocalib' Parquet metadata is not valid JSON ({exc}); "
                "the file is damaged, rewrite it with write_catalog"
            ) from exc
        if not (isinstance(info, dict) and isinstance(info.get("units", {}), dict)
                and isinstance(info.get("meta", {}), dict)):
            raise InputError(
                f"{p}: its 'photocalib' Parquet metadata is not a mapping with 'units' and 'meta' "
                "mappings; the file is damaged, rewrite it with write_catalog"
            )
    try:
        out = Table({name: pa_table[name].to_numpy() for name in names})
    except (pa.ArrowInvalid, ValueError, TypeError) as exc:
        raise InputError(f"{p}: a column cannot be read ({exc}); rewrite it with write_catalog") from exc
    for name, unit in info.get("units", {}).items():
        if name in out.colnames:
            out[name].unit = unit
    out.meta.update(info.get("meta", {}))
    return out
