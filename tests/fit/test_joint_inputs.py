"""The joint fit's other inputs: a Parquet dataset, a Dask DataFrame, a pixel_area column."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from photocalib.errors import InputError
from photocalib.fit.joint import fit_joint
from photocalib.sim.camera import Camera
from photocalib.sim.catalog import observations_from_truth
from photocalib.sim.survey import make_survey


@pytest.fixture(scope="module")
def tiny():
    camera = Camera.preset("hsc-like", n_detectors=4)
    survey = make_survey(camera, n_visits=4, seed=4)
    obs, wcs, truth = observations_from_truth(camera, survey, density=6e3, seed=6)
    flux = np.asarray(truth.stars["flux"])
    ref = Table({"star": truth.stars["star"], "flux": flux, "flux_err": 0.01 * flux})
    kw = dict(reference=ref, bboxes=truth.bboxes, star_flat_order=1, n_sigma=None)
    return obs, wcs, kw, fit_joint(obs, wcs, **kw)


def _same(a, b):
    fa = dict(zip(np.asarray(a.star_flux["star"]).tolist(), np.asarray(a.star_flux["flux"]), strict=True))
    fb = dict(zip(np.asarray(b.star_flux["star"]).tolist(), np.asarray(b.star_flux["flux"]), strict=True))
    assert fa.keys() == fb.keys()
    np.testing.assert_allclose([fb[s] for s in fa], list(fa.values()), rtol=1e-9)
    np.testing.assert_allclose(b.parameters, a.parameters, rtol=1e-9, atol=1e-12)


def test_parquet_dataset_partitioned_by_visit(tiny, tmp_path):
    import pyarrow as pa
    import pyarrow.dataset as ds

    obs, wcs, kw, sol = tiny
    t = obs.to_pandas()
    t["unused"] = "a catalog's other column"
    ds.write_dataset(pa.Table.from_pandas(t, preserve_index=False), tmp_path / "obs", format="parquet",
                     partitioning=ds.partitioning(pa.schema([("visit", pa.int64())]), flavor="hive"))
    assert len(list((tmp_path / "obs").iterdir())) == 4  # one directory per visit
    _same(sol, fit_joint(tmp_path / "obs", wcs, **kw))
    with pytest.raises(InputError, match="instflux_err"):
        t.drop(columns="instflux_err").to_parquet(tmp_path / "bad.parquet")
        fit_joint(tmp_path / "bad.parquet", wcs, **kw)


def test_dask_dataframe(tiny):
    import dask.dataframe as dd

    obs, wcs, kw, sol = tiny
    _same(sol, fit_joint(dd.from_pandas(obs.to_pandas(), npartitions=3), wcs, **kw))


def test_pixel_area_column_replaces_the_wcs_area(tiny):
    obs, wcs, kw, sol = tiny
    o = obs.copy()
    area = np.empty(len(o))
    for k in {(int(v), int(d)) for v, d in zip(o["visit"], o["detector"], strict=True)}:
        m = (np.asarray(o["visit"]) == k[0]) & (np.asarray(o["detector"]) == k[1])
        area[m] = wcs[k].pixel_area(np.asarray(o["x"])[m], np.asarray(o["y"])[m])
    o["pixel_area"] = area
    _same(sol, fit_joint(o, wcs, **kw))
    # twice the area in the table: every observation's fluence-to-fluence factor halves
    o["pixel_area"] = 2 * area
    doubled = fit_joint(o, wcs, **kw)
    for v in sol.visits:
        assert doubled.grey(v) == pytest.approx(0.5 * sol.grey(v), rel=1e-7)
    o["pixel_area"][3] = -1.0
    assert any("pixel_area" in str(r["reason"]) for r in fit_joint(o, wcs, **kw).excluded)
