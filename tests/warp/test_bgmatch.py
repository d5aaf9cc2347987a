"""Background matching (photocalib.warp.bgmatch) on dithered exposures with known skies."""

from __future__ import annotations

import numpy as np
import pytest
from warp_scenes import dithered_exposures

import photocalib as pc
from photocalib.warp import coadd
from photocalib.warp.bgmatch import match_backgrounds

# per exposure: level, d/dxi, d/deta of the sky in count/arcsec² (xi, eta in arcsec)
SKIES = [(900.0, 1.5, -0.8), (1400.0, -2.0, 0.5), (700.0, 0.3, 2.2), (1150.0, -0.7, -1.9)]


def _tangent(ra, dec, ra0, dec0):
    from astropy.coordinates import SkyCoord

    c = SkyCoord(ra, dec, unit="deg").transform_to(SkyCoord(ra0, dec0, unit="deg").skyoffset_frame())
    return c.lon.arcsec, c.lat.arcsec


@pytest.fixture(scope="module")
def scene():
    exposures, ra, dec, flux, (ra0, dec0) = dithered_exposures(n_exp=4, n=256, seed=5)
    rng = np.random.default_rng(2)
    out = []
    for i, (exp, (level, gx, gy)) in enumerate(zip(exposures, SKIES, strict=True)):
        n = exp.shape[0]
        yy, xx = np.mgrid[0:n, 0:n].astype(float)
        xi, eta = _tangent(*exp.wcs.pixel_to_sky(xx, yy), ra0, dec0)
        area = exp.pixel_area_image()
        sky = (level + gx * xi + gy * eta) * area  # counts per pixel
        image = np.asarray(exp.image) + sky + rng.normal(size=sky.shape) * np.sqrt(sky)
        variance = np.asarray(exp.variance) + sky
        if i == 2:  # a bright transient seen by this exposure only: it must not bias the fit
            image = image + 3e5 * np.exp(-((xx - 140.0) ** 2 + (yy - 90.0) ** 2) / (2 * 2.0**2)) / (2 * np.pi * 4.0)
        out.append(exp.replace(image=image, variance=variance, metadata={"VISIT": 100 + i, "DETECTOR": 0}))
    return out, (ra0, dec0), (ra, dec)


def _true_difference(exps, visit, ref, wcs, shape, ra0, dec0):
    """True SB difference visit - ref in nJy/arcsec² on the coadd grid."""
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    xi, eta = _tangent(*wcs.pixel_to_sky(xx, yy), ra0, dec0)

    def sky(i):
        level, gx, gy = SKIES[i]
        return exps[i].photo_calib.instflux_to_nanojansky(1.0, 0.0, 0.0) * (level + gx * xi + gy * eta)

    return sky(visit - 100) - sky(ref - 100)


def test_matched_fields_equal_the_true_sky_differences(scene):
    exps, (ra0, dec0), _ = scene
    wcs = pc.SkyWcs.from_header(_grid_header(ra0, dec0))
    shape = (220, 220)
    res = coadd(exps, wcs, shape, background_matching=True, match_order=1, match_bin=16)
    ref = res.background_reference
    assert set(res.background_fields) == {100, 101, 102, 103}
    assert res.exposure.metadata["PCBGMAT"] and res.exposure.metadata["PCBGREF"] == str(ref)
    covered = res.count == 4
    sky_noise = np.sqrt(np.median(res.exposure.variance[covered])) / np.median(res.pixel_area)
    for visit, field in res.background_fields.items():
        truth = _true_difference(exps, visit, ref, wcs, shape, ra0, dec0)
        err = np.abs(field.fill() - truth)[covered]
        print(f"visit {visit}: |field - truth| max {err.max():.2f}, mean {np.mean(field.fill() - truth):.2f}, pixel noise {sky_noise:.1f} nJy/arcsec²")
        # a plane fitted to ~4e4 pixels: its error is a few % of one pixel's noise
        assert err.max() < 0.1 * sky_noise, (visit, err.max(), sky_noise)
    # the matched coadd is the coadd of the inputs with the true sky differences removed
    oracle = []
    for i, exp in enumerate(exps):
        n = exp.shape[0]
        yy, xx = np.mgrid[0:n, 0:n].astype(float)
        xi, eta = _tangent(*exp.wcs.pixel_to_sky(xx, yy), ra0, dec0)
        (level, gx, gy), (rl, rx, ry) = SKIES[i], SKIES[ref - 100]
        c_i = exp.photo_calib.instflux_to_nanojansky(1.0, 0.0, 0.0)
        c_ref = exps[ref - 100].photo_calib.instflux_to_nanojansky(1.0, 0.0, 0.0)
        diff = (level + gx * xi + gy * eta) - (c_ref / c_i) * (rl + rx * xi + ry * eta)  # count/arcsec²
        oracle.append(exp.replace(image=np.asarray(exp.image) - diff * exp.pixel_area_image()))
    expected = coadd(oracle, wcs, shape)
    resid = ((res.exposure.image - expected.exposure.image) / res.pixel_area)[covered]
    assert np.abs(resid).max() < 0.1 * sky_noise


def _grid_header(ra0, dec0):
    from warp_scenes import tan_header

    return tan_header(220, 220, 0.22, ra0, dec0, 10.0)


def test_bad_options_raise(scene):
    exps, (ra0, dec0), _ = scene
    wcs = pc.SkyWcs.from_header(_grid_header(ra0, dec0))
    with pytest.raises(pc.InputError, match="reference visit 7"):
        coadd(exps, wcs, (220, 220), background_matching=True, match_reference=7)
    with pytest.raises(pc.InputError, match="per must be"):
        coadd(exps, wcs, (220, 220), background_matching=True, match_per="chip")


def test_too_little_overlap_names_the_visit():
    area = np.ones((64, 64))
    ok = np.zeros((64, 64), bool)
    ok[:, :8] = True
    ref = (pc.Box(0, 0, 64, 64), np.ones((64, 64)), np.ones((64, 64)), np.zeros((64, 64), np.uint32),
           np.ones((64, 64), bool))
    other = (pc.Box(0, 0, 64, 64), np.ones((64, 64)), np.ones((64, 64)), np.zeros((64, 64), np.uint32),
             ok & False)
    with pytest.raises(pc.InputError, match="visit 2"):
        match_backgrounds([ref, other], [(1, 0), (2, 0)], area, reference=1)


def test_fields_round_trip_through_the_coadd_file(scene, tmp_path):
    from photocalib.warp.coadd import read_background_fields

    exps, (ra0, dec0), _ = scene
    wcs = pc.SkyWcs.from_header(_grid_header(ra0, dec0))
    res = coadd(exps, wcs, (220, 220), background_matching=True, match_order=1, coadd_background_order=0)
    res.write(tmp_path / "coadd.fits")
    back = read_background_fields(tmp_path / "coadd.fits")
    assert set(back) == set(res.background_fields)
    for key, field in res.background_fields.items():
        np.testing.assert_allclose(back[key].fill(), field.fill(), rtol=0, atol=1e-9)
    per_det = coadd(exps, wcs, (220, 220), background_matching=True, match_order=1, match_per="detector")
    assert set(per_det.background_fields) == {(100, 0), (101, 0), (102, 0), (103, 0)}
