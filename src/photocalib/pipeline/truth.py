"""The simulator's truth, read for the report: true star fluxes and colours, grey terms.

Only files (``truth/stars.parquet``, ``truth/visits.parquet``) are read, never the simulator's
code, so a run on real data simply has no truth and the report compares with the reference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from .catalogs import read_table

__all__ = ["Truth", "read_truth"]


@dataclass(frozen=True)
class Truth:
    """True star fluxes (nJy) in the run's band, a colour, and the grey term per visit (mag)."""

    stars: pd.DataFrame  # star, ra, dec, flux, colour
    colour_name: str
    visits: pd.DataFrame | None  # visit, grey_mag (total per-visit attenuation, mag)


def _colour(df: pd.DataFrame, band: str) -> tuple[np.ndarray, str]:
    # A colour that straddles the band: g-i for r, else the neighbours present.
    for blue, red in (("g", "i"), ("g", "r"), ("r", "i"), ("u", "g"), ("i", "z")):
        if f"{blue}_flux" in df.columns and f"{red}_flux" in df.columns:
            with np.errstate(divide="ignore", invalid="ignore"):
                c = -2.5 * np.log10(df[f"{blue}_flux"].to_numpy(float) / df[f"{red}_flux"].to_numpy(float))
            return c, f"{blue} − {red} (mag)"
    return np.full(len(df), np.nan), "colour (mag)"


def read_truth(folder: str | os.PathLike | None, band: str) -> Truth | None:
    """Read ``folder/stars.parquet`` (and ``visits.parquet``) if present; None without a folder.

    Raises
    ------
    InputError
        If the star table lacks ``ra``, ``dec`` or a ``<band>_flux`` column.
    """
    if folder is None:
        return None
    folder = Path(folder)
    stars_path = folder / "stars.parquet"
    if not stars_path.is_file():
        return None
    df = read_table(stars_path)
    flux_col = f"{band}_flux" if f"{band}_flux" in df.columns else "flux"
    for need in ("ra", "dec", flux_col):
        if need not in df.columns:
            raise InputError(f"{stars_path}: no {need!r} column (columns: {list(df.columns)})")
    colour, name = _colour(df, band)
    stars = pd.DataFrame({
        "star": df["star"].to_numpy(np.int64) if "star" in df.columns else np.arange(len(df)),
        "ra": df["ra"].to_numpy(float), "dec": df["dec"].to_numpy(float),
        "flux": df[flux_col].to_numpy(float), "colour": colour})
    visits = None
    vpath = folder / "visits.parquet"
    if vpath.is_file():
        v = read_table(vpath)
        if "visit" in v.columns and "transmission_center" in v.columns:
            # What a per-visit calibration level absorbs: extinction, grey cloud and exposure
            # time (aperture losses, which depend on seeing, are not in the truth).
            level = v["transmission_center"].to_numpy(float)
            if "exptime" in v.columns:
                level = level * v["exptime"].to_numpy(float)
            visits = pd.DataFrame({"visit": v["visit"].to_numpy(np.int64),
                                   "grey_mag": -2.5 * np.log10(level)})
        elif "visit" in v.columns and "grey_mag" in v.columns:
            visits = pd.DataFrame({"visit": v["visit"].to_numpy(np.int64),
                                   "grey_mag": v["grey_mag"].to_numpy(float)})
    return Truth(stars, name, visits)
