"""Sky matching and association against brute-force answers computed in the test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from photocalib.errors import InputError
from photocalib.pipeline.catalogs import associate, match_nearest, read_reference, write_parquet


def _sep_arcsec(ra1, dec1, ra2, dec2):
    from astropy.coordinates import SkyCoord

    return SkyCoord(ra1, dec1, unit="deg").separation(SkyCoord(ra2, dec2, unit="deg")).arcsec


def test_match_nearest_against_brute_force(rng):
    # Near RA = 0 to exercise the wrap.
    ref_ra = rng.uniform(-0.05, 0.05, 300) % 360
    ref_dec = rng.uniform(-0.05, 0.05, 300)
    ra = (ref_ra[:100] + rng.normal(0, 0.3 / 3600, 100)) % 360
    dec = ref_dec[:100] + rng.normal(0, 0.3 / 3600, 100)
    ra = np.concatenate([ra, [10.0]])
    dec = np.concatenate([dec, [10.0]])
    idx, sep = match_nearest(ra, dec, ref_ra, ref_dec, 2.0)
    for k in range(ra.size):
        d = _sep_arcsec(ra[k], dec[k], ref_ra, ref_dec)
        best = int(np.argmin(d))
        if d[best] <= 2.0:
            assert idx[k] == best
            assert sep[k] == pytest.approx(d[best], abs=1e-6)
        else:
            assert idx[k] == -1 and np.isinf(sep[k])
    assert idx[-1] == -1


def test_associate_groups_repeat_detections(rng):
    n_star, n_visit = 200, 5
    star_ra = rng.uniform(150, 150.2, n_star)
    star_dec = rng.uniform(2, 2.2, n_star)
    true = np.tile(np.arange(n_star), n_visit)
    ra = star_ra[true] + rng.normal(0, 0.05 / 3600, true.size)
    dec = star_dec[true] + rng.normal(0, 0.05 / 3600, true.size)
    perm = rng.permutation(true.size)
    labels = associate(ra[perm], dec[perm], 0.5)
    # Same partition as the truth (labels may differ), up to stars closer than the link length.
    min_sep = np.array([np.sort(_sep_arcsec(star_ra[i], star_dec[i], star_ra, star_dec))[1]
                        for i in range(n_star)])
    isolated = min_sep > 1.0
    t = true[perm]
    for s in np.flatnonzero(isolated):
        got = np.unique(labels[t == s])
        assert got.size == 1
        assert np.all(t[labels == got[0]] == s)
    assert labels[0] == 0 and labels.max() < n_star


def test_read_reference_columns(tmp_path):
    df = pd.DataFrame({"id": [5, 6], "ra": [1.0, 2.0], "dec": [0.0, 0.1], "r_flux": [10.0, 20.0],
                       "r_flux_err": [1.0, 2.0]})
    write_parquet(df, tmp_path / "ref.parquet")
    ref = read_reference(tmp_path / "ref.parquet", band="r")
    assert list(ref["ref_id"]) == [5, 6]
    assert list(ref["flux"]) == [10.0, 20.0] and list(ref["flux_err"]) == [1.0, 2.0]
    write_parquet(df.drop(columns=["r_flux", "r_flux_err"]), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="no flux column"):
        read_reference(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="no such file"):
        read_reference(tmp_path / "none.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(InputError, match="not a readable table"):
        read_reference(tmp_path / "junk.parquet")
