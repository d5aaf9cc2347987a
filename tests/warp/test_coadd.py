"""Coadds of dithered, distorted GalSim exposures: photometry against truth, clipping, variance."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from warp_scenes import aperture_sums, dithered_exposures

import photocalib as pc
from photocalib.image import MaskPlane
from photocalib.warp import SkyGrid, coadd

SCALE = 0.25


@pytest.fixture(scope="module")
def survey():
    exposures, ra, dec, flux, (ra0, dec0) = dithered_exposures()
    grid = SkyGrid(ra0, dec0, SCALE, 300, 300, patch_size=300, rotation=12.0)
    wcs, box = grid.patch(0, 0)
    return exposures, ra, dec, flux, wcs, box.shape


def _coadd_mags(result, wcs, ra, dec, flux):
    x, y = wcs.sky_to_pixel(ra, dec)
    f = aperture_sums(result.exposure.image, x, y, 2.5 / SCALE)  # 5 sigma of the widest PSF
    return -2.5 * np.log10(f / flux)


def test_coadd_photometry_matches_truth(survey):
    exposures, ra, dec, flux, wcs, shape = survey
    result = coadd(exposures, wcs, shape)
    exp = result.exposure
    assert exp.kind is pc.ImageKind.FLUENCE and exp.unit == u.nJy
    assert exp.photo_calib.kind is pc.ImageKind.FLUENCE and exp.photo_calib.mean() == 1.0
    assert exp.metadata["PCKIND"] == "FLUENCE" and exp.metadata["NINPUTS"] == len(exposures)
    dm = _coadd_mags(result, wcs, ra, dec, flux)
    assert np.isfinite(dm).all()
    rms = np.sqrt(np.mean(dm**2))
    assert rms <= 2e-3, rms
    x, y = wcs.sky_to_pixel(ra, dec)
    at_stars = result.count[np.round(y).astype(int), np.round(x).astype(int)]
    assert at_stars.max() == len(exposures) and np.mean(at_stars == len(exposures)) > 0.8


def test_without_calibration_the_coadd_is_wrong(survey):
    """Control: the same inputs with their calibrations dropped (treated as nJy) miss the truth."""
    exposures, ra, dec, flux, wcs, shape = survey
    raw = [e.replace(photo_calib=None, unit="nJy") for e in exposures]
    dm = _coadd_mags(coadd(raw, wcs, shape), wcs, ra, dec, flux)
    assert np.sqrt(np.mean(dm**2)) > 0.02


def test_coadd_variance_is_the_variance_of_the_pixels():
    """Pure-noise inputs: the coadd's pixels scatter as its variance plane says."""
    exposures, *_ = dithered_exposures(n_exp=3, seed=4)
    rng = np.random.default_rng(9)
    noise = [e.replace(image=rng.normal(size=e.shape) * np.sqrt(e.variance)) for e in exposures]
    grid = SkyGrid(30.0, -5.0, SCALE, 240, 240, patch_size=240, rotation=-30.0)
    wcs, box = grid.patch(0, 0)
    for weighting in ("exposure", "pixel"):
        result = coadd(noise, wcs, box.shape, weighting=weighting)
        ok = result.count == 3
        chi2 = result.exposure.image[ok] ** 2 / result.exposure.variance[ok]
        assert ok.sum() > 20000
        assert np.mean(chi2) == pytest.approx(1.0, abs=0.05)


def test_clipping_removes_a_transient(survey):
    # clipping compares unmatched warps pixel by pixel: it needs alike PSFs (see coadd's notes)
    exposures, ra, dec, flux, _ = dithered_exposures(sigmas=(0.4,), seed=12)
    _, _, _, _, wcs, shape = survey
    # a transient in the first exposure only, on empty sky between stars
    t_ra, t_dec = ra[0] + 6.0 / 3600, dec[0] + 6.0 / 3600
    e0 = exposures[0]
    xt, yt = (float(v) for v in e0.wcs.sky_to_pixel(t_ra, t_dec))
    yy, xx = np.mgrid[0 : e0.shape[0], 0 : e0.shape[1]]
    blob = 3e5 * np.exp(-((xx - xt) ** 2 + (yy - yt) ** 2) / (2 * 2.0**2)) / (2 * np.pi * 2.0**2)
    with_transient = [e0.replace(image=e0.image + blob)] + exposures[1:]
    xo, yo = (float(v) for v in wcs.sky_to_pixel(t_ra, t_dec))
    plain = coadd(with_transient, wcs, shape)
    clipped = coadd(with_transient, wcs, shape, clip=True)
    f_plain = aperture_sums(plain.exposure.image, [xo], [yo], 10)[0]
    f_clip = aperture_sums(clipped.exposure.image, [xo], [yo], 10)[0]
    calib = e0.photo_calib.mean()
    assert f_plain > 0.1 * 3e5 * calib  # visible without clipping
    assert abs(f_clip) < 0.01 * 3e5 * calib  # gone with it
    assert clipped.rejected.sum() > 0
    # and the stars survive clipping
    dm = _coadd_mags(clipped, wcs, ra, dec, flux)
    assert np.sqrt(np.mean(dm**2)) <= 2e-3


def test_masked_pixels_are_left_out(survey):
    exposures, ra, dec, flux, wcs, shape = survey
    e0 = exposures[0]
    bad = np.zeros(e0.shape, dtype=np.uint32)
    bad[:, : e0.shape[1] // 2] = MaskPlane.BAD
    image = np.where(bad != 0, 1e9, e0.image)  # garbage where masked
    masked = [e0.replace(image=image, mask=bad)] + exposures[1:]
    result = coadd(masked, wcs, shape)
    dm = _coadd_mags(result, wcs, ra, dec, flux)
    assert np.sqrt(np.mean(dm**2)) <= 2e-3
    assert result.count.min() >= 0 and (result.count == len(exposures) - 1).any()


def test_no_data_outside_every_input(survey):
    exposures, ra, dec, flux, wcs, shape = survey
    far = SkyGrid(31.0, -5.0, SCALE, 50, 50, patch_size=50)
    w, box = far.patch(0, 0)
    result = coadd(exposures[:2], w, box.shape)
    assert np.all(result.count == 0)
    assert np.all(result.exposure.mask & MaskPlane.NO_DATA)
    assert np.all(np.isnan(result.exposure.image))


def test_write_round_trip(survey, tmp_path):
    exposures, ra, dec, flux, wcs, shape = survey
    result = coadd(exposures[:2], wcs, shape)
    path = tmp_path / "coadd.fits"
    result.write(path)
    back = pc.Exposure.read(path)
    assert back.kind is pc.ImageKind.FLUENCE
    np.testing.assert_array_equal(back.image, result.exposure.image)
    from astropy.io import fits

    with fits.open(path) as hdul:
        np.testing.assert_array_equal(hdul["COUNT"].data, result.count)
        np.testing.assert_allclose(hdul["AREA"].data, result.pixel_area)
        np.testing.assert_allclose(hdul["WEIGHT"].data, result.weight)


def test_bad_inputs_raise(survey):
    exposures, ra, dec, flux, wcs, shape = survey
    e0 = exposures[0]
    with pytest.raises(pc.InputError, match="at least one"):
        coadd([], wcs, shape)
    with pytest.raises(pc.InputError, match="photo_calib"):
        coadd([e0.replace(photo_calib=None)], wcs, shape)
    with pytest.raises(pc.InputError, match="variance"):
        coadd([e0.replace(variance=None)], wcs, shape)
    sb_njy = e0.replace(photo_calib=None, unit="nJy").to_surface_brightness()
    with pytest.raises(pc.ImageKindError, match="to_fluence"):
        coadd([sb_njy], wcs, shape)
    with pytest.raises(pc.InputError, match="weighting"):
        coadd([e0], wcs, shape, weighting="median")


def test_single_input_coadd_is_its_calibrated_warp(survey):
    """The coadd warps each input onto its own footprint only; that must change nothing."""
    from photocalib.warp import warp_exposure

    exposures, ra, dec, flux, wcs, shape = survey
    e0 = exposures[1]
    result = coadd([e0], wcs, shape)
    direct = warp_exposure(e0.photo_calib.calibrate_image(e0), wcs, shape)
    used = result.count == 1
    assert used.sum() > 0.3 * used.size
    np.testing.assert_allclose(result.exposure.image[used], direct.image[used], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(result.exposure.variance[used], direct.variance[used], rtol=1e-12)
    # and nothing is lost: where the direct warp has good data the coadd has it too
    good = np.isfinite(direct.image) & ((direct.mask & (MaskPlane.EDGE | MaskPlane.NO_DATA)) == 0)
    assert np.all(used[good])


def test_pixel_weighting_biases_bright_stars_as_documented(survey):
    """Why per-exposure weights are the default: per-pixel 1/V weights, with the stars' own
    photon noise in V, favour the input with the broadest PSF in each star's core."""
    exposures, ra, dec, flux, wcs, shape = survey
    dm_pixel = _coadd_mags(coadd(exposures, wcs, shape, weighting="pixel"), wcs, ra, dec, flux)
    dm_exposure = _coadd_mags(coadd(exposures, wcs, shape), wcs, ra, dec, flux)
    assert np.mean(dm_pixel) > 0.05  # biased faint by ~0.1 mag
    assert abs(np.mean(dm_exposure)) < 1e-3


def test_stacking_written_warps_equals_warping_in_the_coadd(survey, tmp_path):
    """coadd(warped=True) stacks warps made once (as the pipeline writes them) and gives the
    coadd that warping inside coadd() gives, with and without clipping."""
    from photocalib.warp import warp_exposure

    exposures, ra, dec, flux, wcs, shape = survey
    warps = []
    for i, e in enumerate(exposures):
        w = warp_exposure(e.photo_calib.calibrate_image(e), wcs, shape)
        w.write(tmp_path / f"warp-{i}.fits")
        warps.append(pc.Exposure.read(tmp_path / f"warp-{i}.fits"))
    for clip in (False, True):
        direct = coadd(exposures, wcs, shape, clip=clip)
        stacked = coadd(warps, wcs, shape, clip=clip, warped=True)
        np.testing.assert_array_equal(stacked.count, direct.count)
        used = direct.count > 0
        np.testing.assert_allclose(stacked.exposure.image[used], direct.exposure.image[used],
                                   rtol=1e-6, atol=1e-6 * np.abs(direct.exposure.image[used]).max())
        np.testing.assert_allclose(stacked.weight, direct.weight, rtol=1e-6)
        if not clip:  # (clipping unmatched PSFs costs 1 %, as coadd() documents)
            dm = _coadd_mags(stacked, wcs, ra, dec, flux)
            assert np.sqrt(np.mean(dm**2)) <= 2e-3
    with pytest.raises(pc.InputError, match="warp it onto the grid"):
        coadd(exposures, wcs, shape, warped=True)
