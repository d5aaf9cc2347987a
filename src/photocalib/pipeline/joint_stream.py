"""The pipeline's joint fit for large runs: the matched observations streamed from the run folder.

Above ``[calibration] stream_min_observations`` the joint step writes the matched observations
as a Parquet dataset partitioned by star (``calib/joint/observations/part-NNNN.parquet``, each
file written atomically, whole stars per file) with each observation's sky position from its
exposure's WCS, builds the visit table (each visit's pointing: the normalised mean of its
detectors' centres, as the in-memory fit computes it), and calls the streamed fit
(``fit_joint(folder, None, visits=...)``): the fit then holds about 50 bytes per observation
instead of about 1 KiB, and gives the in-memory answer.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..astrometry import unit_vectors, vectors_to_sky
from .catalogs import write_parquet

__all__ = ["OBS_PER_FILE", "write_star_partitions"]

#: Observations per file of the streamed dataset (one Dask task each).
OBS_PER_FILE = 1_000_000


def write_star_partitions(obs: pd.DataFrame, wcs: dict, bboxes: dict, folder: Path) -> pd.DataFrame:
    """Write ``obs`` (with ``ra, dec`` added from ``wcs``) by star into ``folder``; the visit table.

    Parameters
    ----------
    obs : pandas.DataFrame
        ``visit, detector, star, x, y, instflux, instflux_err``.
    wcs : dict
        ``{(visit, detector): SkyWcs}`` for every pair in ``obs``.
    bboxes : dict
        ``{detector: Box}``: a visit's pointing is the mean of its detectors' box centres.
    folder : Path
        Emptied of earlier part files, then written.

    Returns
    -------
    pandas.DataFrame
        The visit table: ``visit, ra, dec`` (degrees).
    """
    obs = obs.reset_index(drop=True)
    visit, det = obs["visit"].to_numpy(), obs["detector"].to_numpy()
    x, y = obs["x"].to_numpy(np.float64), obs["y"].to_numpy(np.float64)
    ra, dec = np.empty(len(obs)), np.empty(len(obs))
    order = np.lexsort((det, visit))
    keys = np.stack([visit[order], det[order]], axis=1)
    starts = np.nonzero(np.r_[True, np.any(keys[1:] != keys[:-1], axis=1)])[0]
    centre: dict = {}
    for a, b in zip(starts, np.r_[starts[1:], len(order)], strict=True):
        idx = order[a:b]
        k = (visit[idx[0]].item(), det[idx[0]].item())
        ra[idx], dec[idx] = wcs[k].pixel_to_sky(x[idx], y[idx])
        cx, cy = bboxes[k[1]].center
        centre[k[0]] = centre.get(k[0], 0.0) + unit_vectors(*wcs[k].pixel_to_sky(cx, cy))
    out = obs.assign(ra=ra, dec=dec)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.parquet"):
        old.unlink()
    n_files = max(1, math.ceil(len(out) / OBS_PER_FILE))
    group = out["star"].to_numpy() % n_files
    for i in range(n_files):
        write_parquet(out[group == i], folder / f"part-{i:04d}.parquet")
    vs = sorted(centre)
    vra, vdec = vectors_to_sky(np.stack([centre[v] / np.linalg.norm(centre[v]) for v in vs]))
    return pd.DataFrame({"visit": vs, "ra": np.asarray(vra) % 360.0, "dec": np.asarray(vdec)})
