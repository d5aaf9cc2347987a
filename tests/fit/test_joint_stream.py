"""The streamed joint fit (issue 14, item 4) against the in-memory fit and against simulator truth.

The streamed fit never holds the observation table: each partition's task eliminates its own
stars and returns its share of the reduced normal equations. Its input is built here from the
simulator's observations: each observation's sky position and pixel area from its WCS (what a
catalog carries), the visit table from the in-memory problem's visit centres, so both fits see
the same data; the in-memory fit is an independent implementation (joint Gauss–Newton in star
magnitudes and parameters, Numba star elimination) of the same model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from photocalib.errors import InputError
from photocalib.fit import partition_by_star
from photocalib.fit.joint import JointCalibrator, fit_joint
from photocalib.sim.camera import Camera
from photocalib.sim.catalog import observations_from_truth
from photocalib.sim.survey import make_survey

MMAG = 1e-3


def with_sky_columns(obs, wcs) -> pd.DataFrame:
    """The observation table with ``ra, dec, pixel_area`` from each (visit, detector)'s WCS."""
    df = obs.to_pandas()
    ra, dec, area = (np.empty(len(df)) for _ in range(3))
    for (v, d), w in wcs.items():
        m = (df["visit"].to_numpy() == v) & (df["detector"].to_numpy() == d)
        if m.any():
            x, y = df["x"].to_numpy()[m], df["y"].to_numpy()[m]
            ra[m], dec[m] = w.pixel_to_sky(x, y)
            area[m] = w.pixel_area(x, y)
    df["ra"], df["dec"], df["pixel_area"] = ra, dec, area
    return df


def write_by_star(df: pd.DataFrame, folder, n: int = 3):
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        df[df["star"] % n == k].to_parquet(folder / f"part-{k}.parquet")
    return folder


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    camera = Camera.preset("hsc-like", n_detectors=6, seed=3)
    surv = make_survey(camera, n_visits=6, seed=5)
    obs, wcs, truth = observations_from_truth(camera, surv, density=6e3, seed=8, outlier_fraction=0.02)
    flux = np.asarray(truth.stars["flux"])
    rng = np.random.default_rng(2)
    ref = Table({"star": truth.stars["star"], "flux": flux * (1 + 0.01 * rng.standard_normal(flux.size)),
                 "flux_err": 0.01 * flux})
    prob = JointCalibrator("separated")._prepare(obs, wcs, ref, truth.bboxes)
    visits = pd.DataFrame({"visit": prob.visit_ids, "ra": prob.visit_center[:, 0], "dec": prob.visit_center[:, 1]})
    df = with_sky_columns(obs, wcs)
    folder = write_by_star(df, tmp_path_factory.mktemp("stream") / "observations")
    return obs, wcs, truth, ref, df, visits, folder


def _config(model):
    return dict(star_flat_order=2, visit_order=3) if model == "monolithic" else dict(star_flat_order=2)


def _star_mags(sol):
    return dict(zip(np.asarray(sol.star_flux["star"]).tolist(), np.asarray(sol.star_flux["mag"]), strict=True))


def assert_same_solution(streamed, mem, wcs, truth):
    """Same kept observations, star magnitudes and calibrations (≤ 1e-6 mag), errors, diagnostics."""
    assert streamed.converged and mem.converged
    np.testing.assert_array_equal(streamed.star_flux["star"], mem.star_flux["star"])
    np.testing.assert_array_equal(streamed.star_flux["n_used"], mem.star_flux["n_used"])
    np.testing.assert_array_equal(streamed.star_flux["n_obs"], mem.star_flux["n_obs"])
    np.testing.assert_allclose(streamed.star_flux["mag"], mem.star_flux["mag"], rtol=0, atol=1e-6)
    u, v = np.meshgrid(np.linspace(0, 1, 5), np.linspace(0, 1, 5))
    worst = 0.0
    for vis, det in sorted(mem._wcs):
        box = truth.bboxes[det]
        x = box.x0 + u.ravel() * (box.width - 1)
        y = box.y0 + v.ravel() * (box.height - 1)
        cm = mem.photo_calib(vis, det).field.evaluate(x, y)
        exact = {"wcs": wcs[(vis, det)]} if hasattr(streamed, "_with_wcs") else {}  # a read-back has them
        cs = streamed.photo_calib(vis, det, **exact).field.evaluate(x, y)
        worst = max(worst, float(np.max(np.abs(2.5 * np.log10(cs / cm)))))
    assert worst <= 1e-6
    np.testing.assert_allclose(streamed.star_flux["mag_err"], mem.star_flux["mag_err"], rtol=1e-5)
    np.testing.assert_allclose(streamed.parameter_errors, mem.parameter_errors, rtol=1e-5, atol=1e-12)
    assert streamed.dof == mem.dof
    assert streamed.chi2 == pytest.approx(mem.chi2, rel=1e-6)
    np.testing.assert_allclose(streamed.chi2_visit["chi2"], mem.chi2_visit["chi2"], rtol=1e-6)
    np.testing.assert_array_equal(streamed.chi2_detector["n_used"], mem.chi2_detector["n_used"])
    for c in ("visit", "detector", "n_used", "area_fraction"):
        np.testing.assert_array_equal(streamed.coverage[c], mem.coverage[c])
    assert sorted(map(tuple, streamed.excluded)) == sorted(map(tuple, mem.excluded))
    assert streamed.zero_point_offset == pytest.approx(mem.zero_point_offset, abs=1e-7)


@pytest.mark.parametrize("solver", ["dense", "sparse"])
@pytest.mark.parametrize("model", ["separated", "reference-free", "monolithic"])
def test_streamed_parquet_equals_in_memory(survey, model, solver):
    obs, wcs, truth, ref, _, visits, folder = survey
    r = None if model == "reference-free" else ref
    mem = fit_joint(obs, wcs, model=model, reference=r, bboxes=truth.bboxes, solver=solver, **_config(model))
    assert np.count_nonzero(np.asarray(mem.residuals["used"]) == 0) > 0  # there were outliers to set aside
    streamed = fit_joint(str(folder), None, model=model, reference=r, bboxes=truth.bboxes, visits=visits,
                         solver=solver, **_config(model))
    assert type(streamed).__name__ == "StreamedJointSolution"
    assert_same_solution(streamed, mem, wcs, truth)


def test_written_with_the_wcs_it_reads_back_as_the_in_memory_solution(survey, tmp_path):
    from photocalib.fit.joint import JointSolution

    obs, wcs, truth, ref, _, visits, folder = survey
    mem = fit_joint(obs, wcs, reference=ref, bboxes=truth.bboxes, star_flat_order=2, grey_gradient=True)
    streamed = fit_joint(folder, None, reference=ref, bboxes=truth.bboxes, visits=visits, star_flat_order=2,
                         grey_gradient=True)
    with pytest.raises(InputError, match="pass wcs_by_detector"):
        streamed.write(tmp_path / "s.fits")
    with pytest.raises(InputError, match="no WCS for"):
        streamed.write(tmp_path / "s.fits", wcs_by_detector=dict(list(wcs.items())[1:]))
    streamed.write(tmp_path / "s.fits", wcs_by_detector=wcs)
    back = JointSolution.read(tmp_path / "s.fits")
    assert len(back.residuals) == 0
    assert_same_solution(back, mem, wcs, truth)


def test_reference_free_standards_fix_the_level_as_in_memory(survey):
    obs, wcs, truth, ref, _, visits, folder = survey
    mem = fit_joint(obs, wcs, model="reference-free", reference=ref[::5], bboxes=truth.bboxes, star_flat_order=2)
    streamed = fit_joint(folder, None, model="reference-free", reference=ref[::5], bboxes=truth.bboxes,
                         visits=visits, star_flat_order=2)
    assert abs(mem.zero_point_offset) > 1e-3
    assert_same_solution(streamed, mem, wcs, truth)


def test_dask_dataframe_partitioned_by_star(survey, tmp_path):
    import dask.dataframe as dd

    obs, wcs, truth, ref, df, visits, folder = survey
    by_file = fit_joint(folder, None, reference=ref, bboxes=truth.bboxes, visits=visits, star_flat_order=2,
                        residuals=tmp_path / "res")
    ddf = partition_by_star(dd.from_pandas(df.assign(note="a catalog's other column"), npartitions=4))
    streamed = fit_joint(ddf, None, reference=ref, bboxes=truth.bboxes, visits=Table.from_pandas(visits),
                         star_flat_order=2)
    np.testing.assert_allclose(streamed.star_flux["mag"], by_file.star_flux["mag"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(streamed.parameters, by_file.parameters, rtol=0, atol=1e-10)
    # the residuals written beside the fit are the in-memory fit's
    mem = fit_joint(obs, wcs, reference=ref, bboxes=truth.bboxes, star_flat_order=2)
    res = pd.read_parquet(tmp_path / "res").sort_values(["star", "visit", "detector"])
    m = mem.residuals.to_pandas().sort_values(["star", "visit", "detector"])
    np.testing.assert_array_equal(res["used"].to_numpy(), m["used"].to_numpy())
    np.testing.assert_allclose(res["residual"].to_numpy(), m["residual"].to_numpy(), rtol=0, atol=2e-6)


def test_on_a_dask_cluster_from_parquet_and_from_a_dask_dataframe(survey):
    """Partitions built and kept on the workers (from the files, or from the DataFrame's own
    graph), the shares summed there: the in-process answer."""
    import dask.dataframe as dd
    from dask.distributed import Client, LocalCluster

    _, _, truth, ref, df, visits, folder = survey
    kw = dict(reference=ref, bboxes=truth.bboxes, visits=visits, star_flat_order=2)
    here = fit_joint(folder, None, **kw)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        from_files = fit_joint(folder, None, client=client, **kw)
        from_frame = fit_joint(partition_by_star(dd.from_pandas(df, npartitions=4)), None, client=client, **kw)
        # nothing left behind on the workers (releases reach the scheduler asynchronously)
        import time

        deadline = time.monotonic() + 10
        while any(client.has_what().values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(client.has_what().values()), client.has_what()
    for sol in (from_files, from_frame):
        np.testing.assert_allclose(sol.star_flux["mag"], here.star_flux["mag"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(sol.parameters, here.parameters, rtol=0, atol=1e-10)


def test_calibration_against_simulator_truth_without_any_wcs(survey):
    """The streamed solution's own geometry (cubic maps fitted to ra, dec and pixel_area) gives
    calibrations as close to the truth as the in-memory fit with the exact WCSs."""
    obs, wcs, truth, ref, _, visits, folder = survey
    sol = fit_joint(folder, None, reference=ref, bboxes=truth.bboxes, visits=visits, star_flat_order=2)
    mem = fit_joint(obs, wcs, reference=ref, bboxes=truth.bboxes, star_flat_order=2)
    c_true = np.asarray(truth.observations["calibration"])
    vis, det = np.asarray(obs["visit"]), np.asarray(obs["detector"])
    x, y = np.asarray(obs["x"], dtype=np.float64), np.asarray(obs["y"], dtype=np.float64)
    err_s, err_m = np.full(len(obs), np.nan), np.full(len(obs), np.nan)
    for v, d in sorted(mem._wcs):
        m = (vis == v) & (det == d)
        err_s[m] = 2.5 * np.log10(sol.photo_calib(v, d).instflux_to_nanojansky(1.0, x[m], y[m]) / c_true[m])
        err_m[m] = 2.5 * np.log10(mem.photo_calib(v, d).instflux_to_nanojansky(1.0, x[m], y[m]) / c_true[m])
    ok = np.isfinite(err_m)
    rms = float(np.sqrt(np.mean((err_s[ok] - err_s[ok].mean()) ** 2)))
    rms_mem = float(np.sqrt(np.mean((err_m[ok] - err_m[ok].mean()) ** 2)))
    assert rms <= 1 * MMAG  # the in-memory truth tests' limit (there on a survey twice as deep)
    # the fitted geometry (no WCS) changes the calibration by far less than its error
    assert np.max(np.abs(err_s[ok] - err_m[ok])) <= 0.05 * MMAG
    assert rms <= rms_mem + 0.01 * MMAG


# -- bad input -------------------------------------------------------------------------------------
def test_a_star_split_over_partitions_is_refused_naming_both(survey, tmp_path):
    _, _, truth, ref, df, visits, _ = survey
    folder = tmp_path / "by_visit"
    folder.mkdir()
    for v in np.unique(df["visit"]):
        df[df["visit"] == v].to_parquet(folder / f"visit-{v}.parquet")
    with pytest.raises(InputError, match=r"star \d+ has rows in two partitions.*visit-\d+\.parquet.*visit-\d+\.parquet"
                                         r".*partition_by_star"):
        fit_joint(folder, None, reference=ref, visits=visits)


def test_missing_columns_and_visits_are_named(survey, tmp_path):
    _, _, truth, ref, df, visits, _ = survey
    write_by_star(df.drop(columns="ra"), tmp_path / "nora", n=2)
    with pytest.raises(InputError, match=r"part-0\.parquet.*no column 'ra'.*SkyWcs.pixel_to_sky"):
        fit_joint(tmp_path / "nora", None, reference=ref, visits=visits)
    write_by_star(df.drop(columns="pixel_area"), tmp_path / "noarea", n=2)
    with pytest.raises(InputError, match=r"no column 'pixel_area'.*kind='fluence'"):
        fit_joint(tmp_path / "noarea", None, reference=ref, visits=visits)
    # monolithic absorbs the Jacobian: it needs no pixel area
    fit_joint(tmp_path / "noarea", None, model="monolithic", reference=ref, visits=visits, visit_order=2,
              compute_errors=False)
    with pytest.raises(InputError, match=r"visit\(s\) \[\d+\] are not in the visits table"):
        fit_joint(tmp_path / "noarea", None, model="monolithic", reference=ref, visits=visits[1:])
    with pytest.raises(InputError, match="visits table has no column 'dec'"):
        fit_joint(tmp_path / "noarea", None, model="monolithic", reference=ref, visits=visits.drop(columns="dec"))
    with pytest.raises(InputError, match="no such Parquet file or dataset"):
        fit_joint(tmp_path / "nothing", None, reference=ref, visits=visits)
    with pytest.raises(InputError, match="needs wcs_by_detector"):
        fit_joint(tmp_path / "noarea", None, reference=ref)
    with pytest.raises(InputError, match="robust_scale=None"):
        fit_joint(tmp_path / "noarea", None, model="monolithic", reference=ref, visits=visits, robust_scale=None)


# -- a worker dies during the fit --------------------------------------------------------------
def _die_in_next_pass():
    """In a worker process: its next normal-equation task ends the process (as a kill would)."""
    import os

    from photocalib.fit import _joint_stream_part

    def die(*args, **kwargs):
        os._exit(9)

    _joint_stream_part.normal_pass = die


@pytest.mark.slow
def test_a_worker_killed_during_the_fit_changes_nothing(survey, monkeypatch):
    """Two worker processes; one dies (``os._exit``) as it starts its first task of the fourth
    Gauss–Newton pass (armed from the client after the third: on a problem this small the passes
    take milliseconds, so a kill timed from outside would often land after the fit).
    The partitions it held are rebuilt from their files by Dask and the passes rerun: the answer
    is the undisturbed run's, bit for bit."""
    import os

    from dask.distributed import Client, LocalCluster

    from photocalib.fit import _joint_stream

    _, _, truth, ref, _, visits, folder = survey
    kw = dict(reference=ref, bboxes=truth.bboxes, visits=visits, star_flat_order=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        quiet = fit_joint(folder, None, client=client, **kw)
        by_pid = {pid: addr for addr, pid in client.run(os.getpid).items()}
        pids = sorted(by_pid)
        killed, held = [], []

        def hook(n_pass):
            if n_pass == 3 and not killed:
                where = client.who_has()
                dead = by_pid[pids[0]]
                # partitions with no copy elsewhere: only Dask's lineage can bring them back
                held.extend(k for k, ws in where.items() if str(k).startswith("compact-") and tuple(ws) == (dead,))
                killed.append(pids[0])
                client.run(_die_in_next_pass, workers=[by_pid[pids[0]]])

        monkeypatch.setattr(_joint_stream, "PASS_HOOK", hook)
        def loads(dask_scheduler):
            return sum(1 for t in dask_scheduler.transition_log if str(t[0]).startswith("load-") and t[2] == "memory")

        before = client.run_on_scheduler(loads)
        disturbed = fit_joint(folder, None, client=client, **kw)
        assert killed and pids[0] not in client.run(os.getpid).values()
        # every compact partition only the dead worker held was rebuilt from its file
        assert client.run_on_scheduler(loads) - before >= len(held)
    np.testing.assert_array_equal(disturbed.parameters, quiet.parameters)
    np.testing.assert_array_equal(disturbed.star_flux["mag"], quiet.star_flux["mag"])
    np.testing.assert_array_equal(disturbed.star_flux["n_used"], quiet.star_flux["n_used"])
    assert disturbed.n_iter == quiet.n_iter
    in_process = fit_joint(folder, None, **kw)
    np.testing.assert_allclose(quiet.star_flux["mag"], in_process.star_flux["mag"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("model", ["reference-free", "separated"])
def test_large_survey_generator_data_as_in_memory(tmp_path, model):
    """Data of the survey-scale generator (its own cells, files and outliers, stars seen once or
    twice at the edges): the streamed fit keeps the same observations, including for stars left
    with no used observation, and gives the in-memory star magnitudes and calibrations."""
    from photocalib.sim.large_survey import write_large_survey

    s = write_large_survey(tmp_path / "survey", n_visits=40, obs_per_visit=600, seed=3)
    obs = s.read_observations(["visit", "detector", "star", "x", "y", "instflux", "instflux_err", "pixel_area"])
    ref = pd.read_parquet(s.reference)
    kw = dict(model=model, reference=ref, bboxes=s.bboxes, star_flat_order=2)
    mem = fit_joint(obs, s.wcs_by_detector(), **kw)
    streamed = fit_joint(str(s.observations), None, visits=str(s.visits), **kw)
    assert np.count_nonzero(~np.asarray(mem.residuals["used"])) > 0
    used = pd.Series(np.asarray(mem.residuals["used"])).groupby(np.asarray(mem.residuals["star"]))
    assert ((used.size() == 2) & (used.sum() == 1)).any()  # two observations, one set aside: which one?
    np.testing.assert_array_equal(streamed.star_flux["star"], mem.star_flux["star"])
    np.testing.assert_array_equal(streamed.star_flux["n_used"], mem.star_flux["n_used"])
    np.testing.assert_allclose(streamed.star_flux["mag"], mem.star_flux["mag"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(streamed.parameters, mem.parameters, rtol=0, atol=1e-7)
    assert streamed.n_rejection_rounds == mem.n_rejection_rounds
