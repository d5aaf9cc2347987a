"""The on-disk simulation: layout, headers through astropy and SkyWcs, truth tables, CLI."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from click.testing import CliRunner

import photocalib as pc
from photocalib.sim import SimulationResult, make_stars, spectra
from photocalib.sim.stars import make_refcat
from photocalib.sim.testing import small_survey


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return small_survey(tmp_path_factory.mktemp("sim"), tree_rings=True)


def test_layout_and_keywords(sim):
    out = sim.out_dir
    assert sorted(p.name for p in (out / "raw").iterdir()) == [f"visit-{v:06d}.fits" for v in sim.visits]
    assert (out / "refcat.parquet").exists()
    for name in ("stars.parquet", "visits.parquet", "observations.parquet", "config.json"):
        assert (out / "truth" / name).exists()
    cfg = json.loads((out / "truth" / "config.json").read_text())
    assert cfg["camera"]["config"]["name"] == "hsc-like"
    with fits.open(sim.raw_paths[sim.visits[1]]) as hdul:
        assert len(hdul) == 1 + sim.camera.n_detectors
        for det in sim.detectors:
            h = hdul[f"DET{det:03d}"].header
            assert h["VISIT"] == sim.visits[1] and h["DETECTOR"] == det and h["FILTER"] == "r"
            for key in ("EXPTIME", "MJD-OBS", "AIRMASS", "GAIN", "RDNOISE", "BIAS", "SATURATE"):
                assert key in h
            assert hdul[f"DET{det:03d}"].data.dtype.kind == "f" and hdul[f"DET{det:03d}"].data.dtype.itemsize == 4


def test_headers_round_trip_through_astropy_and_skywcs(sim):
    visit = sim.visits[2]
    v = sim.survey.visit(visit)
    x, y = np.meshgrid(np.linspace(0, 255, 11), np.linspace(0, 255, 11))
    for det in sim.detectors:
        _, h = sim.read_raw(visit, det)
        ra_m, dec_m = sim.camera.pixel_to_sky(det, x, y, v.ra, v.dec, v.rotation_deg)
        ra_a, dec_a = WCS(h).all_pix2world(x, y, 0)
        sw = pc.SkyWcs.from_header(h)
        ra_s, dec_s = sw.pixel_to_sky(x, y)
        for ra, dec in ((ra_a, dec_a), (ra_s, dec_s)):
            sep = np.hypot((ra - ra_m) * np.cos(np.radians(dec_m)), dec - dec_m) * 3.6e6
            assert sep.max() < 1.0  # mas
        np.testing.assert_allclose(sw.pixel_area(x, y), sim.camera.pixel_area(det, x, y, tree_rings=False),
                                   rtol=1e-7)
        xb, yb = sw.sky_to_pixel(ra_m, dec_m)
        assert np.hypot(xb - x, yb - y).max() < 1e-4


@pytest.fixture(scope="module")
def sparse_sim(tmp_path_factory):
    return small_survey(tmp_path_factory.mktemp("sparse"), star_density=4e4, n_visits=1, truth_maps_on=False)


def test_expected_instflux_on_flat_fielded_fluence_image(sparse_sim):
    """The truth columns predict what a flat-fielded fluence image holds, star by star."""
    sim = sparse_sim
    import galsim

    obs = sim.observations.to_pandas()
    visit = sim.visits[0]
    v = sim.survey.visit(visit)
    fwhm_px = v.seeing_fwhm / sim.camera.config.pixel_scale_arcsec
    half = int(np.ceil(4 * fwhm_px))
    psf = galsim.Moffat(beta=sim.survey.config.moffat_beta, fwhm=v.seeing_fwhm)
    pulls = []
    for det in sim.detectors:
        raw, h = sim.read_raw(visit, det)
        flat, fh = sim.read_dome_flat(det)
        d = sim.camera.detector(det)
        norm_flat = flat / fh["LAMPLVL"]
        sb = (raw.astype(np.float64) - d.bias) * d.gain / norm_flat
        x, y = np.meshgrid(np.arange(256.0), np.arange(256.0))
        area_wcs = pc.SkyWcs.from_header(h).pixel_area(x, y)
        # The sky on the flat-fielded image is t S (I_sky / I_dome) exactly (achromatic camera).
        sky_sb = sim.survey.sky_rate(visit) * v.exptime * sim.camera.illumination_ratio(det, x, y)
        fluence = (sb - sky_sb) * area_wcs
        var_fluence = ((raw - d.bias) * d.gain + d.read_noise**2) * (area_wcs / norm_flat) ** 2
        gs_wcs = galsim.GSFitsWCS(header=h)
        here = obs[(obs.visit == visit) & (obs.detector == det)]
        for _, s in here.iterrows():
            ix, iy = int(round(s.x)), int(round(s.y))
            if s.saturated or not (half <= ix < 256 - half and half <= iy < 256 - half):
                continue
            dist = np.maximum(np.abs(here.x - s.x), np.abs(here.y - s.y))
            near = here[(here.star != s.star) & (dist < half + 3 * fwhm_px)]
            far = here[(here.star != s.star) & (dist < half + 8 * fwhm_px)]
            if len(near) or (far.flux_njy > 0.05 * s.flux_njy).any():
                continue
            # Fraction of the PSF in the box, drawn the way GalSim renders it (local WCS).
            pos = galsim.PositionD(s.x + 1, s.y + 1)
            stamp = galsim.ImageD(galsim.BoundsI(ix + 1 - half, ix + 1 + half, iy + 1 - half, iy + 1 + half),
                                  wcs=gs_wcs.local(image_pos=pos))
            psf.drawImage(image=stamp, center=pos, method="auto")
            expected = s.instflux_fluence_expected * stamp.array.sum()
            box = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
            pulls.append((fluence[box].sum() - expected) / np.sqrt(var_fluence[box].sum()))
    pulls = np.array(pulls)
    assert pulls.size >= 5
    assert np.abs(pulls).max() < 4.5
    assert abs(pulls.mean()) < 4 / np.sqrt(pulls.size)


def test_truth_relations(sim):
    obs = sim.observations.to_pandas()
    assert obs.groupby("visit").size().min() > 20
    np.testing.assert_allclose(obs.tree_ring, obs.pixel_area / obs.pixel_area_wcs)
    assert obs.tree_ring.std() > 1e-4  # tree rings are on in this run
    np.testing.assert_allclose(obs.star_flat, obs.illum_sky / obs.illum_dome, rtol=1e-12)
    vt = pq.read_table(sim.truth_dir / "visits.parquet").to_pandas()
    assert sorted(vt.visit) == sim.visits
    np.testing.assert_allclose(vt.transmission_center, 10 ** (-0.4 * (vt.extinction_mag + vt.grey_mag)))
    stars = pq.read_table(sim.truth_dir / "stars.parquet").to_pandas()
    merged = obs.merge(stars[["star", "r_flux"]], on="star")
    np.testing.assert_array_equal(merged.flux_njy, merged.r_flux)
    with fits.open(sim.truth_map_paths[0]) as hdul:
        x, y = np.meshgrid(np.arange(256.0), np.arange(256.0))
        np.testing.assert_allclose(hdul["AREA"].data, sim.camera.pixel_area(0, x, y), rtol=1e-6)
        np.testing.assert_allclose(hdul["STARFLAT"].data, sim.camera.star_flat(0, x, y), rtol=1e-6)
    np.testing.assert_allclose(sim.truth_map(1, "QE"), sim.camera.qe(1), rtol=1e-6)
    with pytest.raises(pc.InputError, match="truth map"):
        sim.truth_map(1, "NOPE")


def test_load_round_trip(sim):
    again = SimulationResult.load(sim.out_dir)
    assert again.camera.to_dict() == sim.camera.to_dict()
    assert [v.to_row() for v in again.survey.visits] == [v.to_row() for v in sim.survey.visits]
    assert again.observations.equals(sim.observations)
    assert again.raw_paths == sim.raw_paths and again.dome_flat_paths == sim.dome_flat_paths
    with pytest.raises(pc.InputError, match="config.json"):
        SimulationResult.load(sim.out_dir / "raw")


def test_star_counts_and_refcat():
    stars = make_stars(150.0, 2.0, 0.2, density=2e5, mag_range=(16.0, 24.0), slope=0.3, seed=2)
    area = 2 * np.pi * (1 - np.cos(np.radians(0.2))) * (180 / np.pi) ** 2
    assert len(stars) == pytest.approx(2e5 * area, rel=0.03)
    counts, edges = np.histogram(stars.mag("r"), bins=np.arange(16.0, 24.01, 1.0))
    slope = np.polyfit(0.5 * (edges[1:] + edges[:-1]), np.log10(counts), 1)[0]
    assert slope == pytest.approx(0.3, abs=0.03)
    ref = make_refcat(stars, "r", mag_max=21.0, seed=2).to_pandas()
    true = dict(zip(stars.star, stars.flux["r"], strict=True))
    pull = (ref.flux - ref.star.map(true)) / ref.flux_err
    assert pull.std() == pytest.approx(1.0, abs=0.1)
    assert (ref.star.map(true) > 10 ** (-0.4 * (21.0 - 31.4))).all()
    for b in spectra.BANDS:
        assert f"{b}_flux" in ref and f"{b}_fluxErr" in ref


def test_cli_simulate(tmp_path):
    from photocalib.cli import main

    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(main, ["simulate", "--preset", "decam-like", "--visits", "1", "--detector-size", "64x48",
                               "--detectors", "2", "--out", str(out), "--seed", "3"])
    assert res.exit_code == 0, res.output
    with fits.open(out / "raw" / "visit-001000.fits") as hdul:
        assert hdul["DET001"].data.shape == (48, 64)
    bad = runner.invoke(main, ["simulate", "--detector-size", "big", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--detector-size" in bad.output


def _tiny(out, **kw):
    from photocalib.sim import simulate

    return simulate(out, n_visits=2, detector_shape=(48, 64), n_detectors=2, star_density=2e6,
                    star_mag_range=(18.0, 22.0), truth_maps_on=False, **kw)


def test_same_seed_same_pixels_whatever_the_scheduler(tmp_path):
    a = _tiny(tmp_path / "a", scheduler="synchronous")
    b = _tiny(tmp_path / "b", scheduler="threads", num_workers=2)
    for visit in a.visits:
        for det in a.detectors:
            np.testing.assert_array_equal(a.read_raw(visit, det)[0], b.read_raw(visit, det)[0])
    assert a.observations.equals(b.observations)
    c = _tiny(tmp_path / "c", scheduler="synchronous", seed=2)
    assert not np.array_equal(a.read_raw(a.visits[0], 0)[0], c.read_raw(c.visits[0], 0)[0])


def test_bad_options_name_the_input(tmp_path):
    from photocalib.sim import simulate

    with pytest.raises(pc.InputError, match="survey option"):
        simulate(tmp_path, survey_options={"cloudiness": 1})
    with pytest.raises(pc.InputError, match="band"):
        simulate(tmp_path, band="q")
    assert pc.sim.simulate is simulate  # the layer loads lazily from the top-level package


@pytest.mark.slow
def test_distributed_client_gives_the_same_result(tmp_path):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        a = _tiny(tmp_path / "a", client=client)
    b = _tiny(tmp_path / "b", scheduler="synchronous")
    for visit in a.visits:
        for det in a.detectors:
            np.testing.assert_array_equal(a.read_raw(visit, det)[0], b.read_raw(visit, det)[0])
