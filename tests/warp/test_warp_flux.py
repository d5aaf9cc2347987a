"""Flux conservation of warp_exposure on a GalSim-rendered, strongly distorted input."""

from __future__ import annotations

import numpy as np
import pytest
from warp_scenes import Scene, aperture_sums, render_stars, sip_header, tan_header

import photocalib as pc
from photocalib.geom import Box
from photocalib.image import MaskPlane
from photocalib.warp import warp_arrays, warp_exposure


def _star_errors(scene: Scene, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative flux change per star (output vs input aperture), and input vs GalSim truth."""
    radius_arcsec = 3.0  # 8.6 sigma: the Gaussian outside it is below 1e-16
    # input apertures are in input pixels of the local scale (area varies: use the local scale)
    local_scale = np.sqrt(scene.wcs.pixel_area(scene.x_in, scene.y_in))
    f_in = np.array([
        aperture_sums(scene.image, [x], [y], radius_arcsec / s)[0]
        for x, y, s in zip(scene.x_in, scene.y_in, local_scale, strict=True)
    ])
    xo, yo = scene.target.sky_to_pixel(scene.ra, scene.dec)
    f_out = aperture_sums(out, xo, yo, radius_arcsec / scene.out_scale)
    return f_out / f_in - 1.0, f_in / scene.flux - 1.0


def test_input_is_strongly_distorted(scene):
    area = scene.wcs.pixel_area_field(Box(0, 0, *scene.image.shape[::-1])).fill()
    assert area.max() / area.min() - 1 >= 0.05


@pytest.mark.parametrize("out_scale", [0.17, 0.26])
def test_star_and_total_flux_conserved(out_scale):
    scene = Scene(out_scale=out_scale)
    warped = warp_exposure(scene.exposure, scene.target, scene.out_shape)
    assert warped.kind is pc.ImageKind.FLUENCE
    rel, truth_rel = _star_errors(scene, warped.image)
    assert np.all(np.isfinite(rel))
    assert np.max(np.abs(truth_rel)) < 1e-4  # the input apertures hold the GalSim flux
    assert np.max(np.abs(rel)) <= 5e-4, np.max(np.abs(rel))
    total = np.nansum(warped.image) / scene.image.sum() - 1
    assert abs(total) <= 1e-3
    assert warped.metadata["PAREAMIN"] < warped.metadata["PAREAMAX"]


def test_bilinear_conserves_flux(scene):
    warped = warp_exposure(scene.exposure, scene.target, scene.out_shape, kernel="bilinear")
    rel, _ = _star_errors(scene, warped.image)
    # bilinear smooths but conserves flux to the same order (its weights also integrate to 1)
    assert np.max(np.abs(rel)) <= 5e-4
    assert abs(np.nansum(warped.image) / scene.image.sum() - 1) <= 1e-3


def test_without_jacobian_flux_is_wrong(scene):
    """Control: interpolating fluence without the area correction misses by the area ratio."""
    warped = warp_arrays(scene.image, scene.wcs, scene.target, scene.out_shape, mode="surface_brightness")
    rel, _ = _star_errors(scene, warped.image)
    area_ratio = scene.out_scale**2 / scene.wcs.pixel_area(scene.x_in, scene.y_in)
    # each star is scaled by about (A_out / A_in)^-1 relative to the correct warp
    np.testing.assert_allclose(rel + 1, 1 / area_ratio, rtol=3e-3)


def test_uniform_sky_in_surface_brightness_mode_stays_uniform(scene):
    sky = 123.4  # count / arcsec^2
    sb = np.full(scene.image.shape, sky)
    exp = pc.Exposure(sb, wcs=scene.wcs, kind=pc.ImageKind.SURFACE_BRIGHTNESS)
    warped = warp_exposure(exp, scene.target, scene.out_shape, mode="surface_brightness")
    assert warped.kind is pc.ImageKind.SURFACE_BRIGHTNESS
    ok = (warped.mask & (MaskPlane.NO_DATA | MaskPlane.EDGE)) == 0
    assert ok.sum() > 0.3 * ok.size
    assert np.max(np.abs(warped.image[ok] / sky - 1)) <= 1e-4


def test_uniform_sky_in_fluence_mode_is_uniform_surface_brightness(scene):
    """A GalSim-rendered uniform sky (fluence ∝ A_in) warps to fluence ∝ A_out."""
    sky = 50.0
    fluence = render_stars(scene.header, [], [], [], sky=sky)
    exp = pc.Exposure(fluence, wcs=scene.wcs, kind=pc.ImageKind.FLUENCE)
    warped = warp_exposure(exp, scene.target, scene.out_shape)
    ok = (warped.mask & (MaskPlane.NO_DATA | MaskPlane.EDGE)) == 0
    a_out = scene.target.pixel_area_field(Box(0, 0, *scene.out_shape[::-1])).fill()
    # GalSim integrates the sky over each pixel; the area at the centre differs by < 1e-7
    assert np.max(np.abs(warped.image[ok] / (sky * a_out[ok]) - 1)) <= 1e-5


def test_identity_warp_is_exact(scene):
    warped = warp_exposure(scene.exposure, scene.wcs, scene.image.shape)
    np.testing.assert_allclose(warped.image, scene.image, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(warped.variance, scene.exposure.variance, rtol=1e-6)


def _lanczos3_reference(x: float) -> tuple[int, np.ndarray]:
    """Independent normalised Lanczos-3 weights with numpy.sinc."""
    i0 = int(np.floor(x))
    taps = np.arange(i0 - 2, i0 + 4)
    t = x - taps
    w = np.sinc(t) * np.sinc(t / 3.0)
    return taps, w / w.sum()


def test_kernel_weights_and_variance_match_reference(rng):
    """A shift by a constant sub-pixel offset, checked against numpy.sinc weights."""
    from astropy.wcs import WCS

    n = 40
    src = WCS(tan_header(n, n, 0.2, 10.0, -30.0, 0.0))
    dst_h = tan_header(n, n, 0.2, 10.0, -30.0, 0.0)
    dst_h["CRPIX1"] += 0.3  # output pixel x maps to input x + 0.3 (ish; exact per pixel below)
    dst_h["CRPIX2"] -= 0.45
    dst = WCS(dst_h)
    image = rng.normal(size=(n, n))
    var = rng.uniform(1, 2, size=(n, n))
    res = warp_arrays(image, src, dst, (n, n), variance=var, mode="surface_brightness")
    src_w, dst_w = pc.SkyWcs(src), pc.SkyWcs(dst)
    for xo, yo in [(20, 20), (7, 30), (31, 9)]:
        xi, yi = src_w.sky_to_pixel(*dst_w.pixel_to_sky(float(xo), float(yo)))
        tx, wx = _lanczos3_reference(float(xi))
        ty, wy = _lanczos3_reference(float(yi))
        w2 = np.outer(wy, wx)
        expect = np.sum(w2 * image[np.ix_(ty, tx)])
        expect_var = np.sum(w2**2 * var[np.ix_(ty, tx)])
        # the kernel interpolates a table whose weights are within 6.6e-9 of the exact ones
        bound = 2 * 36 * 6.6e-9 * np.abs(image).max()
        assert res.image[yo, xo] == pytest.approx(expect, abs=bound)
        assert res.variance[yo, xo] == pytest.approx(expect_var, abs=bound * var.max())


def test_tabulated_weights_match_reference():
    from photocalib.warp._kernels import N_PHASE, lanczos3_table

    table = lanczos3_table()
    f = np.random.default_rng(2).uniform(0, 1, 5000)
    p = f * N_PHASE
    i = p.astype(int)
    u = (p - i)[:, None]
    w = table[i] + u * (table[i + 1] - table[i])  # what the kernel does
    ref = np.array([_lanczos3_reference(2.0 + x)[1] for x in f])
    assert np.abs(w - ref).max() <= 6.6e-9  # the documented accuracy of the table
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-15)


def test_variance_is_squared_weights_times_area_squared(scene):
    """One input pixel of value 1 and variance 1: output variance equals output value squared."""
    n = scene.image.shape[0]
    img = np.zeros(scene.image.shape)
    var = np.zeros(scene.image.shape)
    img[n // 2 + 3, n // 2 - 7] = 1.0
    var[n // 2 + 3, n // 2 - 7] = 1.0
    res = warp_arrays(img, scene.wcs, scene.target, scene.out_shape, variance=var)
    finite = np.isfinite(res.image)
    nz = finite & (res.image != 0)
    assert nz.sum() > 10
    np.testing.assert_allclose(res.variance[nz], res.image[nz] ** 2, rtol=1e-10)


def _mapped_offsets(scene, bits, b):
    """Input-pixel offsets from pixel ``b`` of the output pixels near it, and their mask flags."""
    mask = np.zeros(scene.image.shape, dtype=np.uint32)
    mask[b, b] = bits
    warped = warp_exposure(scene.exposure.replace(mask=mask), scene.target, scene.out_shape)
    flagged_all = (warped.mask & bits) != 0
    # exact mapping only in a window around the pixel (elsewhere nothing may be flagged)
    xo, yo = (int(round(float(v))) for v in scene.target.sky_to_pixel(*scene.wcs.pixel_to_sky(float(b), float(b))))
    win = (slice(yo - 12, yo + 13), slice(xo - 12, xo + 13))
    assert flagged_all.sum() == flagged_all[win].sum()
    yy, xx = np.mgrid[win]
    xi, yi = scene.wcs.sky_to_pixel(*scene.target.pixel_to_sky(xx.astype(float), yy.astype(float)))
    return flagged_all[win], xi - b, yi - b


def test_informational_mask_bits_grow_by_the_bilinear_footprint(scene):
    b = scene.image.shape[0] // 2
    flagged, dx, dy = _mapped_offsets(scene, MaskPlane.DETECTED, b)
    # flagged exactly where the pixel is in the point's bilinear footprint: |offset| < 1
    near = (np.abs(dx) < 1) & (np.abs(dy) < 1)
    np.testing.assert_array_equal(flagged, near)
    assert 1 <= flagged.sum() <= 9


def test_bad_mask_bits_grow_by_the_lanczos_support(scene):
    b = scene.image.shape[0] // 2 + 5
    flagged, dx, dy = _mapped_offsets(scene, MaskPlane.SAT, b)
    # every output pixel whose Lanczos-3 taps include the bad pixel (floor(x) - 2 .. floor(x) + 3)
    # is flagged, so no value from a bad pixel leaks out unflagged; nothing further is flagged
    tapped = (np.floor(dx) >= -3) & (np.floor(dx) <= 2) & (np.floor(dy) >= -3) & (np.floor(dy) <= 2)
    assert np.all(flagged[tapped])
    assert np.all((np.abs(dx[flagged]) < 3) & (np.abs(dy[flagged]) < 3))


def test_outside_input_is_no_data(scene):
    warped = warp_exposure(scene.exposure, scene.target, scene.out_shape)
    corner = (slice(0, 5), slice(0, 5))  # the target is 1.5x larger than the input
    assert np.all(np.isnan(warped.image[corner]))
    assert np.all(warped.mask[corner] & MaskPlane.NO_DATA)


def test_surface_brightness_input_to_fluence_warp_raises(scene):
    sb = scene.exposure.to_surface_brightness()
    with pytest.raises(pc.ImageKindError, match="to_fluence"):
        warp_exposure(sb, scene.target, scene.out_shape)
    with pytest.raises(pc.ImageKindError, match="to_surface_brightness"):
        warp_exposure(scene.exposure, scene.target, scene.out_shape, mode="surface_brightness")


def test_bad_arguments_raise(scene):
    with pytest.raises(pc.InputError, match="kernel"):
        warp_exposure(scene.exposure, scene.target, scene.out_shape, kernel="cubic")
    with pytest.raises(pc.InputError, match="mode"):
        warp_exposure(scene.exposure, scene.target, scene.out_shape, mode="flux")
    with pytest.raises(pc.InputError, match="shape"):
        warp_exposure(scene.exposure, scene.target, (0, 10))
    with pytest.raises(pc.InputError, match="WCS"):
        warp_exposure(scene.exposure.replace(wcs=None), scene.target, scene.out_shape)


def test_sip_header_helper_really_has_sip():
    h = sip_header(64)
    assert h["CTYPE1"].endswith("-SIP")


def test_noise_covariance_as_documented():
    """White noise through a sub-pixel shift: per-pixel variance as propagated, aperture sums
    keep the input's variance, and the per-pixel variances fall short of it by sum(w^2)."""
    from astropy.wcs import WCS

    n = 1000  # 20 x 20 blocks of 50 x 50 pixels: 400 independent 40 x 40 apertures
    src = pc.SkyWcs(WCS(tan_header(n, n, 0.2, 40.0, 10.0, 0.0)))
    dst_h = tan_header(n, n, 0.2, 40.0, 10.0, 0.0)
    dst_h["CRPIX1"] += 0.37
    dst_h["CRPIX2"] += 0.61
    dst = pc.SkyWcs(WCS(dst_h))
    rng = np.random.default_rng(7)
    res = warp_arrays(rng.normal(size=(n, n)), src, dst, (n, n), variance=np.ones((n, n)),
                      mode="surface_brightness")
    inner = res.image[10:-10, 10:-10]
    # the phase is (almost) the same everywhere: sum(w^2) from the reference weights
    xi, yi = src.sky_to_pixel(*dst.pixel_to_sky(500.0, 500.0))
    factor = np.sum(_lanczos3_reference(float(xi))[1] ** 2) * np.sum(_lanczos3_reference(float(yi))[1] ** 2)
    assert factor < 0.9
    np.testing.assert_allclose(res.variance[10:-10, 10:-10], factor, rtol=1e-4)
    # per pixel: the propagated variance is the true one (960^2 samples, ~0.5 % error with covariance)
    assert inner.var() / factor == pytest.approx(1.0, abs=0.02)
    # a 40x40 aperture sum scatters like 1600 independent input pixels (to ~ 3/40 from the edge)
    blocks = res.image.reshape(20, 50, 20, 50)[:, 5:45, :, 5:45]
    sums = blocks.sum(axis=(1, 3)).ravel()
    assert sums.var() / 1600 == pytest.approx(1.0, abs=0.2)
    assert sums.var() > 1600 * factor * 1.05


def test_float32_input_gives_float32_output(scene):
    res64 = warp_arrays(scene.image, scene.wcs, scene.target, scene.out_shape)
    res32 = warp_arrays(scene.image.astype(np.float32), scene.wcs, scene.target, scene.out_shape)
    assert res32.image.dtype == np.float32
    ok = np.isfinite(res64.image)
    np.testing.assert_array_equal(ok, np.isfinite(res32.image))
    scale = np.abs(res64.image[ok]).max()
    np.testing.assert_allclose(res32.image[ok], res64.image[ok], atol=1e-6 * scale)


def test_photo_calib_is_carried_only_when_constant(scene):
    from photocalib.fields import ChebyshevField

    calib = pc.PhotoCalib(2.5, kind=pc.ImageKind.FLUENCE)
    warped = warp_exposure(scene.exposure.replace(photo_calib=calib), scene.target, scene.out_shape)
    assert warped.photo_calib == calib
    n = scene.image.shape[0]
    box = Box(0, 0, n, n)
    varying = pc.PhotoCalib(ChebyshevField(np.array([[2.0, 0.1], [0.05, 0.0]]), box), kind=pc.ImageKind.FLUENCE)
    with pytest.raises(pc.InputError, match="calibrate_image"):
        warp_exposure(scene.exposure.replace(photo_calib=varying), scene.target, scene.out_shape)


def test_dropped_tiles_are_no_data_and_a_hand_made_mapping_is_prefilled(scene):
    """Pixels of dropped tiles are NaN / NO_DATA (the output is not pre-filled); a mapping
    without ``dropped`` (made by hand) gets the same pixels through the pre-filled output."""
    import dataclasses

    from photocalib.warp import pixel_mapping

    ny, nx = scene.out_shape
    m = pixel_mapping(scene.wcs, scene.target, (ny, nx + 700), input_shape=scene.image.shape)
    assert len(m.dropped) > 0
    res = warp_arrays(scene.image, scene.wcs, scene.target, (ny, nx + 700), variance=scene.exposure.variance,
                      mapping=m)
    for x0, y0, w, h in m.dropped:
        box = (slice(y0, y0 + h), slice(x0, x0 + w))
        assert np.all(np.isnan(res.image[box])) and np.all(np.isnan(res.variance[box]))
        assert np.all(res.mask[box] == MaskPlane.NO_DATA)
    bare = dataclasses.replace(m, dropped=np.zeros((0, 4), dtype=np.int64))
    res2 = warp_arrays(scene.image, scene.wcs, scene.target, (ny, nx + 700), variance=scene.exposure.variance,
                       mapping=bare)
    np.testing.assert_array_equal(res2.image, res.image)
    np.testing.assert_array_equal(res2.variance, res.variance)
    np.testing.assert_array_equal(res2.mask, res.mask)


@pytest.mark.parametrize(("out_scale", "bound"), [(0.26, 1e-6), (0.17, 1e-6), (0.1, 1e-8)])
def test_total_flux_to_the_sampling_limit(out_scale, bound):
    """The total flux: within 1e-6 on the coarse grids and 1e-8 once the output samples the
    stars finely (sigma 3.5 output pixels at 0.1"): what is left at the coarse scales is the
    output grid's sampling of each star (random with the stars' phases; see bench_warp.py),
    not a bias of the warp."""
    scene = Scene(out_scale=out_scale)
    warped = warp_exposure(scene.exposure, scene.target, scene.out_shape)
    total = np.nansum(warped.image, dtype=np.float64) / np.sum(scene.image, dtype=np.float64) - 1
    assert abs(total) <= bound, total
