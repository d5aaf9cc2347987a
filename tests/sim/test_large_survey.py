"""The large-survey generator against independent truth: astropy's WCS for the projection,
photocalib's SkyWcs for the pixel area, the truth files for the calibration, and the joint fit
for the claim that the truth belongs to the fit's model family."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.wcs import WCS

import photocalib as pc
from photocalib.errors import InputError
from photocalib.fit._joint_model import triangular_terms as fit_triangular_terms
from photocalib.sim.large_survey import (
    LargeSurvey,
    LargeSurveyConfig,
    make_visits,
    triangular_terms,
    wcs_header,
    write_large_survey,
)

#: A small camera (6 detectors of 512×1024, 0.5"/px, 3 % distortion at the corner): fast surveys.
SMALL = {"detector_shape": (1024, 512), "grid": (2, 3), "pixel_scale": 0.5, "distortion": 0.03}


@pytest.fixture(scope="module")
def noiseless(tmp_path_factory):
    return write_large_survey(tmp_path_factory.mktemp("ls") / "s", n_visits=40, obs_per_visit=300, seed=2,
                              outlier_fraction=0.05, noise=False, obs_per_partition=3000, **SMALL)


def _true_flux(survey: LargeSurvey, obs: pd.DataFrame) -> np.ndarray:
    stars = survey.read_stars().set_index("star")
    return stars.loc[obs["star"], "flux"].to_numpy()


def test_projection_matches_astropy_tan_sip(noiseless):
    obs = noiseless.read_observations()
    vis = make_visits(noiseless.config)
    checked = 0
    for (v, d), g in obs.groupby(["visit", "detector"]):
        if checked >= 12:
            break
        checked += 1
        header = wcs_header(noiseless.config, d, vis["ra"][v], vis["dec"][v], vis["rotation_deg"][v])
        x, y = g["x"].to_numpy(np.float64), g["y"].to_numpy(np.float64)
        ra, dec = WCS(header).all_pix2world(x, y, 0)
        dra = ((ra - g["ra"].to_numpy() + 180.0) % 360.0 - 180.0) * np.cos(np.radians(dec)) * 3600.0
        ddec = (dec - g["dec"].to_numpy()) * 3600.0
        # x, y are float32 (1e-4 px at 1000 px): 5e-5 arcsec
        assert np.max(np.hypot(dra, ddec)) < 2e-4
        # the light WCS given to the in-memory fit is the same projection, both ways
        light = noiseless.wcs_by_detector()[(int(v), int(d))]
        lra, ldec = light.pixel_to_sky(x, y)
        assert np.max(np.abs(lra - ra)) * 3600 < 1e-6 and np.max(np.abs(ldec - dec)) * 3600 < 1e-6
        bx, by = light.sky_to_pixel(ra, dec)
        assert np.max(np.abs(bx - x)) < 1e-6 and np.max(np.abs(by - y)) < 1e-6
    assert checked == 12


def test_pixel_area_matches_skywcs(noiseless):
    obs = noiseless.read_observations()
    vis = make_visits(noiseless.config)
    areas = []
    for (v, d), g in list(obs.groupby(["visit", "detector"]))[:8]:
        sw = pc.SkyWcs.from_header(wcs_header(noiseless.config, d, vis["ra"][v], vis["dec"][v],
                                              vis["rotation_deg"][v]))
        a = sw.pixel_area(g["x"].to_numpy(np.float64), g["y"].to_numpy(np.float64))
        np.testing.assert_allclose(g["pixel_area"].to_numpy(np.float64), a, rtol=3e-7)  # float32 column
        areas.append(a)
    a = np.concatenate(areas)
    # the distortion makes the area vary by several per cent (the test is not trivially flat)
    assert a.max() / a.min() > 1.03


def test_noiseless_calibration_is_the_truth_and_outliers_are_listed(noiseless):
    obs = noiseless.read_observations()
    x, y = obs["x"].to_numpy(np.float64), obs["y"].to_numpy(np.float64)
    v, d = obs["visit"].to_numpy(), obs["detector"].to_numpy()
    # c = A · S_d · G_v from the truth files, A from an independent WCS evaluation above
    grey = noiseless.truth_visits().set_index("visit").loc[v, "grey"].to_numpy()
    sf_tab = pd.read_parquet(noiseless.truth / "star_flat.parquet").set_index("detector")
    coef = sf_tab[[c for c in sf_tab.columns if c.startswith("c")]].to_numpy()
    sf = np.array([noiseless.star_flat_field(int(dd)).evaluate(xx, yy) for dd, xx, yy in zip(d, x, y, strict=True)])
    np.testing.assert_allclose(coef, noiseless.star_flat_coefficients())
    c_true = obs["pixel_area"].to_numpy(np.float64) * sf * grey
    ratio = _true_flux(noiseless, obs) / obs["instflux"].to_numpy(np.float64) / c_true
    key = obs["visit"].astype(np.int64) * 10**15 + obs["detector"].astype(np.int64) * 10**12 + obs["star"] % 10**12
    out = noiseless.read_outliers()
    out_key = out["visit"].astype(np.int64) * 10**15 + out["detector"].astype(np.int64) * 10**12 + out["star"] % 10**12
    is_out = np.isin(key, out_key)
    assert 0.03 < is_out.mean() < 0.07
    np.testing.assert_allclose(ratio[~is_out], 1.0, atol=3e-7)
    # an outlier's flux is off by exactly its listed delta_mag
    dm = pd.Series(out["delta_mag"].to_numpy(), index=out_key).loc[key[is_out]].to_numpy()
    np.testing.assert_allclose(2.5 * np.log10(ratio[is_out]), dm, atol=1e-5)
    # the accessor gives the same calibration
    np.testing.assert_allclose(noiseless.calibration(v, d, x, y), c_true, rtol=3e-7)


def test_truth_belongs_to_the_fit_model_family(noiseless):
    """A reference-free fit of the noiseless data (outliers dropped) recovers the calibration up
    to its gauge (one overall scale): the truth is in the model family the docstring names."""
    obs = noiseless.read_observations()
    out = noiseless.read_outliers()
    bad = obs.merge(out[["visit", "detector", "star"]], how="left", indicator=True)["_merge"].eq("both").to_numpy()
    obs = obs[~bad]
    sol = pc.fit.fit_joint(obs, noiseless.wcs_by_detector(), model="reference-free",
                           star_flat_order=noiseless.config.star_flat_order, bboxes=noiseless.bboxes, n_sigma=None)
    ratios = []
    for (v, d), g in obs.groupby(["visit", "detector"]):
        x, y = g["x"].to_numpy(np.float64), g["y"].to_numpy(np.float64)
        fitted = sol.photo_calib(v, d).instflux_to_nanojansky(np.ones_like(x), x, y)
        ratios.append(fitted / noiseless.calibration(np.full(x.size, v), np.full(x.size, d), x, y))
    r = np.concatenate(ratios)
    assert np.max(np.abs(r / np.median(r) - 1.0)) < 1e-4
    # the fit's coefficient order is the truth's
    for o in range(4):
        for a, b in zip(triangular_terms(o), fit_triangular_terms(o), strict=True):
            np.testing.assert_array_equal(a, b)


def test_whole_stars_per_partition_and_cells(noiseless):
    files = noiseless.partitions()
    assert len(files) == noiseless.n_partitions >= 3
    seen: dict[int, str] = {}
    total = 0
    for f in files:
        t = pq.read_table(f, columns=["star"]).column("star").to_numpy()
        assert np.all(np.diff(t) >= 0)  # sorted by star
        for s in np.unique(t):
            assert s not in seen, f"star {s} in {seen.get(s)} and {f.name}"
            seen[int(s)] = f.name
        # the star id carries its cell, the file is that cell's
        assert np.all((t >> 32) == int(f.stem.split("-")[1]))
        total += t.size
    assert total == noiseless.n_observations


def test_schema_reference_and_visits(noiseless):
    schema = pq.read_schema(noiseless.partitions()[0])
    types = {n: str(schema.field(n).type) for n in schema.names}
    assert types == {"visit": "int32", "detector": "int16", "star": "int64", "x": "float", "y": "float",
                     "instflux": "float", "instflux_err": "float", "pixel_area": "float", "ra": "double",
                     "dec": "double"}
    visits = pd.read_parquet(noiseless.visits)
    assert list(visits.columns) == ["visit", "ra", "dec"] and len(visits) == 40
    ref = pd.read_parquet(noiseless.reference)
    stars = noiseless.read_stars().set_index("star")
    assert len(ref) == noiseless.n_reference > 0
    true = stars.loc[ref["star"], "flux"].to_numpy()
    pull = (ref["flux"].to_numpy() - true) / ref["flux_err"].to_numpy()
    assert abs(np.std(pull) - 1.0) < 0.35 and np.all(stars.loc[ref["star"], "mag"] < 21.0)
    reopened = LargeSurvey.open(noiseless.path)
    assert reopened == noiseless


def test_noise_and_magnitudes_follow_the_model(tmp_path):
    s = write_large_survey(tmp_path / "s", n_visits=60, obs_per_visit=400, seed=5, outlier_fraction=0.0, **SMALL)
    obs = s.read_observations()
    c = s.calibration(obs["visit"].to_numpy(), obs["detector"].to_numpy(), obs["x"].to_numpy(float),
                      obs["y"].to_numpy(float))
    true_inst = _true_flux(s, obs) / c
    pull = (obs["instflux"].to_numpy(float) - true_inst) / obs["instflux_err"].to_numpy(float)
    assert abs(np.mean(pull)) < 0.03 and abs(np.std(pull) - 1.0) < 0.03
    # above the 3 mmag floor, the variance falls with flux between the photon (F⁻¹) and the sky
    # (F⁻²) limits
    rel = obs["instflux_err"].to_numpy(float) / true_inst
    assert rel.min() > 0.003 and rel.max() > 0.05
    slope = np.polyfit(np.log(_true_flux(s, obs)), np.log(rel**2 - 0.003**2), 1)[0]
    assert -2.0 < slope < -1.0
    # dN/dm ∝ 10^(0.3 m): the log-counts slope
    mag = s.read_stars()["mag"].to_numpy()
    hist, edges = np.histogram(mag, bins=10, range=s.config.mag_range)
    slope = np.polyfit(0.5 * (edges[1:] + edges[:-1]), np.log10(hist), 1)[0]
    assert abs(slope - 0.3) < 0.05
    # each point of sky seen about depth (8) times: the count per visit is near the target
    assert 0.75 * 400 < len(obs) / 60 < 1.05 * 400


def test_deterministic_per_seed_and_across_workers(tmp_path):
    kw = dict(n_visits=30, obs_per_visit=200, obs_per_partition=1500, **SMALL)
    a = write_large_survey(tmp_path / "a", seed=7, **kw)
    b = write_large_survey(tmp_path / "b", seed=7, workers=2, **kw)
    c = write_large_survey(tmp_path / "c", seed=8, **kw)
    assert a.n_partitions > 2
    fa, fb = a.partitions(), b.partitions()
    assert [f.name for f in fa] == [f.name for f in fb]
    for x, y in zip(fa, fb, strict=True):
        assert pq.read_table(x).equals(pq.read_table(y))
    assert pq.read_table(a.reference).equals(pq.read_table(b.reference))
    assert not a.read_observations().equals(c.read_observations())


def test_memory_bounded_by_the_cell_not_the_survey(tmp_path):
    """Peak NumPy allocation while writing grows with the cell, not with the number of cells."""
    kw = dict(obs_per_visit=300, obs_per_partition=3000, seed=1, **SMALL)
    peaks, sizes = [], []
    for n in (40, 320):
        tracemalloc.start()
        s = write_large_survey(tmp_path / f"s{n}", n_visits=n, **kw)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        sizes.append(s.n_observations)
    assert sizes[1] > 6 * sizes[0]
    assert peaks[1] < 2.0 * peaks[0], peaks


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(InputError, match="outlier_fraction"):
        LargeSurveyConfig(n_visits=10, outlier_fraction=1.5)
    with pytest.raises(InputError, match="n_visits"):
        LargeSurveyConfig(n_visits=0)
    write_large_survey(tmp_path / "s", n_visits=5, obs_per_visit=50, **SMALL)
    with pytest.raises(InputError, match="overwrite=True"):
        write_large_survey(tmp_path / "s", n_visits=5, obs_per_visit=50, **SMALL)
    with pytest.raises(InputError, match="survey.json"):
        LargeSurvey.open(tmp_path / "nothing")
