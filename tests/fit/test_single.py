"""Single-detector calibration: matching on the sky, the three models, clipping, catalogs."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

import photocalib as pc
from photocalib.astrometry.synthetic import hsc_like_sip_header
from photocalib.fit import (
    fit_single,
    match_reference,
    match_sky,
    read_catalog,
    source_catalog,
    write_catalog,
)

N = 2048


@pytest.fixture(scope="module")
def wcs():
    # An edge detector of an HSC-like field: the area falls by ~9 % across it.
    return pc.SkyWcs.from_header(hsc_like_sip_header(nx=N, ny=N, axis_pixel=(-14000.0, -9000.0), k1=4e-10))


def test_match_sky_across_ra_zero_and_near_pole(rng):
    ref_ra = np.array([359.9999, 0.0001, 120.0, 10.0])
    ref_dec = np.array([0.0, 0.0, 89.9999, -30.0])
    d = 0.2 / 3600
    ra = np.array([0.0001 + d, 359.9999 - d, 300.0, 10.0 + 5.0 / 3600])
    dec = np.array([0.0, 0.0, 89.9999, -30.0])
    idx, sep = match_sky(ra, dec, ref_ra, ref_dec, 1.0)
    # Across RA = 0/360 each source is 0.2" from its own reference.
    assert list(idx) == [1, 0, 2, -1]
    assert sep[0] == pytest.approx(0.2, abs=1e-6)
    # Near the pole RA 300 vs 120 at dec 89.9999 is 0.72" apart: matched.
    assert sep[2] == pytest.approx(2 * 0.0001 * 3600, rel=1e-4)
    # A second, closer source takes reference 1 over source 0 (unique matching).
    idx2, _ = match_sky(np.append(ra, 0.0001 + d / 2), np.append(dec, 0.0), ref_ra, ref_dec, 1.0)
    assert idx2[0] == -1 and idx2[4] == 1
    idx3, _ = match_sky(np.append(ra, 0.0001 + d / 2), np.append(dec, 0.0), ref_ra, ref_dec, 1.0, unique=False)
    assert idx3[0] == 1 and idx3[4] == 1
    with pytest.raises(pc.InputError):
        match_sky(ra, dec, ref_ra, ref_dec, -1.0)


def _matched(wcs, rng, n=400, noise=2e-3, outliers=0):
    x = rng.uniform(0, N - 1, n)
    y = rng.uniform(0, N - 1, n)
    ref = 10 ** rng.uniform(4.5, 6.0, n)  # nJy
    c_f = 0.8 * (1 + 0.03 * (x / N) - 0.02 * (y / N) ** 2)  # the true fluence-to-fluence map
    area = wcs.pixel_area(x, y)
    inst = ref / c_f * (1 + noise * rng.normal(size=n))
    if outliers:
        inst[:outliers] *= 1.3
    t = Table({"x": x, "y": y, "instflux": inst, "instflux_err": noise * inst,
               "ref_flux": ref, "ref_flux_err": np.zeros(n)})
    t["instflux_sb"] = inst / area
    t["instflux_sb_err"] = noise * inst / area
    return t, c_f, area


def test_three_models_on_the_same_stars(wcs, rng):
    t, c_f, area = _matched(wcs, rng, outliers=20)
    box = pc.Box(0, 0, N, N)
    truth = np.asarray(t["ref_flux"])
    for mode, col in (("fluence", "instflux"), ("surface-brightness", "instflux_sb")):
        res = fit_single(t, wcs=wcs, bbox=box, mode=mode, order=2)
        assert res.n_clipped >= 20 and not res.used[:20].any()
        f = res.photo_calib.instflux_to_nanojansky(t[col], t["x"], t["y"])
        err = -2.5 * np.log10(f / truth)[20:]
        assert np.sqrt(np.mean(err**2)) < 2.5e-3  # noise 2 mmag
        assert res.photo_calib.kind is (pc.ImageKind.FLUENCE if mode == "fluence" else pc.ImageKind.SURFACE_BRIGHTNESS)
        assert 0 < res.photo_calib.error < 1e-3
    # The SB calibration contains the Jacobian exactly: its fluence part is the fitted c_F.
    sb = fit_single(t, wcs=wcs, bbox=box, mode="surface-brightness", order=2).photo_calib
    ff = sb.fluence_to_fluence(wcs).evaluate(t["x"], t["y"])
    assert np.abs(ff / c_f - 1).max() < 2e-3
    # Legacy: one constant on SB photometry absorbs the mean area and leaves its trend.
    legacy = fit_single(t, wcs=wcs, bbox=box, mode="legacy", nsigma=10.0)
    f = legacy.photo_calib.instflux_to_nanojansky(t["instflux_sb"])
    resid = -2.5 * np.log10(f / truth)[20:]
    trend = -2.5 * np.log10(area * c_f / np.mean(area * c_f))[20:]
    assert np.corrcoef(resid, -trend)[0, 1] > 0.95
    assert np.ptp(resid) > 0.08  # tens of mmag: the area (9 %) and c_F (5 %) together


def test_constant_calibration_and_its_error(wcs, rng):
    n = 2000
    t = Table({"x": rng.uniform(0, N, n), "y": rng.uniform(0, N, n)})
    t["ref_flux"] = 1e5 * np.ones(n)
    t["ref_flux_err"] = np.zeros(n)
    t["instflux"] = 1e5 / 2.0 * (1 + 0.01 * rng.normal(size=n))
    t["instflux_err"] = 0.01 * t["instflux"]
    res = fit_single(t, mode="fluence")
    assert res.photo_calib.mean() == pytest.approx(2.0, rel=4 * 0.01 / np.sqrt(n))
    assert res.photo_calib.error == pytest.approx(0.01 / np.sqrt(n), rel=0.15)
    assert res.rms_mag == pytest.approx(0.01 * 1.0857, rel=0.1)
    with pytest.raises(pc.InputError, match="mode"):
        fit_single(t, mode="magic")
    with pytest.raises(pc.InputError, match="ref_flux"):
        fit_single(t[["x", "y", "instflux", "instflux_err"]])
    with pytest.raises(pc.InputError, match="bbox"):
        fit_single(t, order=2)


def test_match_reference_and_catalog_round_trip(wcs, rng, tmp_path):
    x = rng.uniform(10, N - 10, 300)
    y = rng.uniform(10, N - 10, 300)
    ra, dec = wcs.pixel_to_sky(x, y)
    ref = Table({"ra": ra[::2] + 0.1 / 3600, "dec": dec[::2], "flux": np.arange(150.0) + 1, "flux_err": np.ones(150)})
    phot = Table({"x": x, "y": y, "instflux": np.full(300, 1000.0), "instflux_err": np.full(300, 10.0),
                  "flags": np.zeros(300, np.int32), "ra": ra, "dec": dec})
    phot.meta["kind"] = "FLUENCE"
    m = match_reference(phot, ref, 0.5)
    assert np.array_equal(m["ref_index"][::2], np.arange(150)) and np.all(m["ref_index"][1::2] == -1)
    calib = pc.PhotoCalib(2.0)
    cat = source_catalog(phot, calib, wcs)
    assert np.allclose(cat["instflux_nJy"], 2000.0)
    assert np.allclose(cat["instflux_mag"], -2.5 * np.log10(2000.0) + 31.4)
    np.testing.assert_allclose(cat["pixel_area"], wcs.pixel_area(x, y))
    assert set(cat["kind"]) == {"FLUENCE"}
    write_catalog(cat, tmp_path / "cat.parquet")
    back = read_catalog(tmp_path / "cat.parquet")
    assert back.colnames == cat.colnames and back.meta["kind"] == "FLUENCE"
    assert str(back["instflux_nJy"].unit) == "nJy"
    np.testing.assert_array_equal(np.asarray(back["instflux_mag"]), np.asarray(cat["instflux_mag"]))
    with pytest.raises(pc.ImageKindError, match="to_kind"):
        source_catalog(phot, pc.PhotoCalib(2.0, kind="SURFACE_BRIGHTNESS"), wcs)
    with pytest.raises(pc.InputError):
        read_catalog(tmp_path / "missing.parquet")
