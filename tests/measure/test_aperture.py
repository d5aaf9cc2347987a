"""Aperture photometry: exact overlaps, Jacobian ellipses, errors, flags, kinds."""

from __future__ import annotations

import numpy as np
import pytest

import photocalib as pc
from photocalib.image import MaskPlane
from photocalib.measure import PhotFlag, aperture_photometry, ellipse_from_jacobian, sum_ellipses


def test_ellipse_from_jacobian_boundary_area_and_axes(rng):
    J = rng.normal(0.0, 0.1, size=(200, 2, 2)) + np.array([[0.2, 0.0], [0.0, 0.2]])
    r = rng.uniform(0.5, 3.0, size=200)
    a, b, theta = ellipse_from_jacobian(J, r)
    assert np.all(a >= b) and np.all(np.abs(theta) <= np.pi / 2 + 1e-15)
    major = np.stack([np.cos(theta), np.sin(theta)], -1) * a[:, None]
    minor = np.stack([-np.sin(theta), np.cos(theta)], -1) * b[:, None]
    # The ends of both axes lie on |J d| = r, and the axes are its extreme directions.
    np.testing.assert_allclose(np.linalg.norm(np.einsum("nij,nj->ni", J, major), axis=-1), r, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(np.einsum("nij,nj->ni", J, minor), axis=-1), r, rtol=1e-12)
    np.testing.assert_allclose(np.pi * a * b, np.pi * r**2 / np.abs(np.linalg.det(J)), rtol=1e-12)
    # Any other direction at distance b..a maps inside the annulus the axes bound.
    phi = rng.uniform(0, 2 * np.pi, size=200)
    d = np.stack([np.cos(phi), np.sin(phi)], -1)
    s = np.linalg.norm(np.einsum("nij,nj->ni", J, d), axis=-1)
    assert np.all(r / s <= a * (1 + 1e-12)) and np.all(r / s >= b * (1 - 1e-12))


def _overlap_numeric(px, py, x0, y0, a, b, theta, n=1500):
    """Area of pixel (px, py) inside the ellipse by midpoint quadrature on n×n sub-pixels."""
    u = (np.arange(n) + 0.5) / n - 0.5
    X, Y = np.meshgrid(px + u - x0, py + u - y0)
    c, s = np.cos(theta), np.sin(theta)
    p = (X * c + Y * s) / a
    q = (-X * s + Y * c) / b
    return np.mean(p * p + q * q <= 1.0)


def test_elliptical_overlap_is_exact():
    x0, y0, a, b, theta = 20.3, 19.6, 6.2, 3.7, 0.6
    img = np.ones((40, 40))
    flux, _, _ = sum_ellipses(img, x0, y0, a, b, theta)
    # A constant image sums to the ellipse's area to rounding: no sub-pixel sampling error.
    assert flux[0] == pytest.approx(np.pi * a * b, rel=1e-12)
    # And each boundary pixel's weight is its exact overlap area.
    t = np.linspace(0.3, 2 * np.pi + 0.3, 6, endpoint=False)
    bx = np.rint(x0 + a * np.cos(t) * np.cos(theta) - b * np.sin(t) * np.sin(theta)).astype(int)
    by = np.rint(y0 + a * np.cos(t) * np.sin(theta) + b * np.sin(t) * np.cos(theta)).astype(int)
    for px, py in zip(bx, by, strict=True):
        delta = np.zeros((40, 40))
        delta[py, px] = 1.0
        w, _, _ = sum_ellipses(delta, x0, y0, a, b, theta)
        expected = _overlap_numeric(px, py, x0, y0, a, b, theta)
        assert 0.0 < expected < 1.0
        assert w[0] == pytest.approx(expected, abs=2e-5)


def test_requires_fluence(tan_wcs):
    exp = pc.Exposure(np.ones((64, 64)), wcs=tan_wcs, kind="SURFACE_BRIGHTNESS")
    with pytest.raises(pc.ImageKindError, match="to_fluence"):
        aperture_photometry(exp, [10.0], [10.0], radius=3.0)
    with pytest.raises(pc.InputError):
        aperture_photometry(exp.to_fluence(), [10.0], [10.0])
    with pytest.raises(pc.InputError):
        aperture_photometry(pc.Exposure(np.ones((8, 8)), kind="FLUENCE"), [3.0], [3.0], radius_arcsec=1.0)


def test_angular_apertures_cover_fixed_solid_angle(distorted_wcs):
    """A uniform surface brightness, as fluence, sums to s·πr² in any angular aperture."""
    sb = 7.0
    exp = pc.Exposure(np.full((1024, 1024), sb), wcs=distorted_wcs).to_fluence()
    g = np.linspace(60, 960, 7)
    x, y = (v.ravel() for v in np.meshgrid(g, g))
    r = 1.5
    ang = aperture_photometry(exp, x, y, radius_arcsec=r)
    # The area varies by ~1e-4 across an aperture; its curvature term is far below 1e-6.
    np.testing.assert_allclose(ang["instflux"], sb * np.pi * r**2, rtol=2e-6)
    np.testing.assert_allclose(ang["area"], np.pi * r**2 / distorted_wcs.pixel_area(x, y), rtol=1e-9)
    pix = aperture_photometry(exp, x, y, radius=r / 0.18)
    spread = pix["instflux"].max() / pix["instflux"].min() - 1
    assert spread > 0.03  # a fixed pixel aperture follows the pixel area (4.7 % here)


def test_errors_from_variance_and_flags(tan_wcs):
    rng = np.random.default_rng(3)
    n = 256
    var = np.full((n, n), 4.0)
    mask = np.zeros((n, n), np.uint32)
    mask[100, 100] = MaskPlane.SAT
    mask[150, 150] = MaskPlane.BAD
    img = rng.normal(0, 2.0, size=(n, n))
    exp = pc.Exposure(img, variance=var, mask=mask, wcs=tan_wcs, kind="FLUENCE")
    x = np.array([100.0, 150.0, 2.0, 60.0, 63.0, 200.0])
    y = np.array([100.0, 150.0, 60.0, 200.0, 200.0, 60.0])
    t = aperture_photometry(exp, x, y, radius=4.0)
    inside = np.array([0, 1, 3, 4, 5])
    np.testing.assert_allclose(t["instflux_err"][inside], np.sqrt(4.0 * np.pi * 16.0), rtol=1e-10)
    # The edge source's aperture loses the circular segment beyond the image edge x = -0.5.
    d, r = 2.5, 4.0
    kept = np.pi * r**2 - (r**2 * np.arccos(d / r) - d * np.sqrt(r**2 - d**2))
    assert t["instflux_err"][2] == pytest.approx(np.sqrt(4.0 * kept), rel=1e-10)
    f = np.asarray(t["flags"])
    assert f[0] & PhotFlag.SATURATED and not f[0] & PhotFlag.MASKED
    assert f[1] & PhotFlag.MASKED
    assert f[2] & PhotFlag.EDGE
    assert f[3] & PhotFlag.BLENDED and f[4] & PhotFlag.BLENDED
    assert f[5] == 0
    assert t.meta["kind"] == "FLUENCE"


def test_masked_pixel_flux_restored_by_area():
    img = np.full((50, 50), 3.0)
    mask = np.zeros((50, 50), np.uint32)
    mask[25, 25] = MaskPlane.BAD
    img[25, 25] = 1e6  # a bad pixel's value must not leak into the sum
    exp = pc.Exposure(img, mask=mask, kind="FLUENCE")
    t = aperture_photometry(exp, [25.2], [24.9], radius=5.0)
    assert t["instflux"][0] == pytest.approx(3.0 * np.pi * 25.0, rel=1e-10)
    assert t["flags"][0] & PhotFlag.MASKED


def test_circle_kernel_matches_sep_and_geometry(rng):
    import sep

    from photocalib.measure import _kernels

    # sep rounds pixel values to float32 internally: give both float32-representable values.
    img = rng.normal(100.0, 10.0, (300, 280)).astype(np.float32).astype(np.float64)
    var = rng.uniform(1.0, 5.0, img.shape).astype(np.float32).astype(np.float64)
    x = rng.uniform(-6, 286, 3000)
    y = rng.uniform(-6, 306, 3000)
    r = rng.uniform(0.2, 15.0, 3000)
    nomask = np.zeros((1, 1), np.uint32)
    flux, vsum, flags, _ = _kernels.sum_circles(img, var, nomask, 0, 0, x, y, r)
    trunc = (flags & PhotFlag.EDGE) != 0
    ref, ref_err, ref_flags = sep.sum_circle(img, x, y, r, var=var, subpix=0)
    inside = ~trunc
    np.testing.assert_allclose(flux[inside], ref[inside], rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    np.testing.assert_allclose(np.sqrt(vsum[inside]), ref_err[inside], rtol=1e-9)
    # Truncation is the geometric statement "the circle leaves the image's extent".
    leaves = (x - r < -0.5) | (x + r > 279.5) | (y - r < -0.5) | (y + r > 299.5)
    np.testing.assert_array_equal(trunc, leaves)
    # On a constant image the sum is the disc's area, clipped exactly at the image edge.
    ones = np.ones_like(img)
    area, _, _, _ = _kernels.sum_circles(ones, np.zeros((1, 1)), nomask, 0, 0, x, y, r)
    np.testing.assert_allclose(area[inside], np.pi * r[inside] ** 2, rtol=1e-12)
    assert np.all(area[trunc] < np.pi * r[trunc] ** 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_circles_with_missing_pixels_match_sep_mask_rule(rng, dtype):
    """NaN pixels, negative variances and BAD bits are left out and restored by area as sep does.

    sep is given the same pixels as an explicit mask (and zeros in their place); our kernel
    finds them itself from the image, variance and mask planes, reading only aperture pixels.
    """
    import sep

    shape = (160, 150)
    img = rng.normal(50.0, 5.0, shape).astype(dtype)
    var = rng.uniform(1.0, 3.0, shape).astype(dtype)
    mask = np.zeros(shape, np.uint32)
    nan_px = rng.random(shape) < 0.01
    negvar_px = rng.random(shape) < 0.01
    bad_px = rng.random(shape) < 0.01
    sat_px = rng.random(shape) < 0.005
    img[nan_px] = np.nan
    var[negvar_px] = -1.0
    mask[bad_px] |= np.uint32(MaskPlane.BAD)
    mask[sat_px] |= np.uint32(MaskPlane.SAT)
    missing = nan_px | negvar_px | bad_px
    x = rng.uniform(10, 140, 400)
    y = rng.uniform(10, 150, 400)
    r = rng.uniform(0.5, 7.0, 400)
    exp = pc.Exposure(img, variance=var, mask=mask, kind="FLUENCE")
    t = aperture_photometry(exp, x, y, radius=r, flag_blends=False)
    clean_img = np.where(missing, 0.0, img).astype(np.float64)
    clean_var = np.where(missing, 0.0, var).astype(np.float64)
    ref, ref_err, _ = sep.sum_circle(clean_img.astype(np.float32).astype(np.float64), x, y, r,
                                      var=clean_var, mask=missing, subpix=0)
    if dtype == np.float32:  # sep sums float32 pixel values exactly; float64 it rounds to float32
        np.testing.assert_allclose(t["instflux"], ref, rtol=1e-10)
    else:
        np.testing.assert_allclose(t["instflux"], ref, rtol=1e-6)
    np.testing.assert_allclose(t["instflux_err"], ref_err, rtol=1e-6)
    # MASKED exactly where a missing pixel overlaps the disc (weights from a delta image).
    hit = np.zeros(x.size, bool)
    sat_hit = np.zeros(x.size, bool)
    nomask = np.zeros((1, 1), np.uint32)
    for plane, out in ((missing, hit), (sat_px, sat_hit)):
        w, _, _, _ = _kernels_sum(plane.astype(np.float64), nomask, x, y, r)
        out[:] = w > 0
    f = np.asarray(t["flags"])
    np.testing.assert_array_equal((f & PhotFlag.MASKED) != 0, hit)
    np.testing.assert_array_equal((f & PhotFlag.SATURATED) != 0, sat_hit)
    assert hit.sum() > 50 and sat_hit.sum() > 10


def _kernels_sum(image, mask, x, y, r):
    from photocalib.measure import _kernels

    return _kernels.sum_circles(image, np.zeros((1, 1)), mask, 0, 0, x, y, r)


def test_all_masked_circle_and_variance_check():
    img = np.ones((40, 40))
    mask = np.zeros((40, 40), np.uint32)
    mask[15:26, 15:26] = MaskPlane.BAD
    exp = pc.Exposure(img, variance=np.ones((40, 40)), mask=mask, kind="FLUENCE")
    t = aperture_photometry(exp, [20.0, 5.0], [20.0, 5.0], radius=3.0, flag_blends=False)
    assert t["flags"][0] & PhotFlag.ALL_MASKED and t["flags"][0] & PhotFlag.NONFINITE
    assert np.isnan(t["instflux"][0]) and t["flags"][1] == 0
    # Apertures over zero variance only: fine while the plane has a positive value elsewhere.
    var = np.zeros((40, 40))
    var[0, 0] = 1.0
    exp = pc.Exposure(img, variance=var, kind="FLUENCE")
    t = aperture_photometry(exp, [20.0], [20.0], radius=3.0)
    assert t["instflux_err"][0] == 0.0
    with pytest.raises(pc.InputError, match="no positive finite value"):
        aperture_photometry(pc.Exposure(img, variance=np.zeros((40, 40)), kind="FLUENCE"), [20.0], [20.0],
                            radius=3.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ellipse_kernel_matches_sep_and_geometry(rng, dtype):
    """Our strip-integral ellipses against sep's exact ellipse overlaps, on and off the edges."""
    import sep

    img = rng.normal(100.0, 10.0, (300, 280)).astype(np.float32).astype(dtype)
    var = rng.uniform(1.0, 5.0, img.shape).astype(np.float32).astype(dtype)
    n = 3000
    x = rng.uniform(-6, 286, n)
    y = rng.uniform(-6, 306, n)
    b = rng.uniform(0.2, 10.0, n)
    a = b * rng.uniform(1.0, 3.0, n)
    theta = rng.uniform(-np.pi / 2, np.pi / 2, n)
    flux, err, flags = sum_ellipses(img, x, y, a, b, theta, variance=var)
    ref, ref_err, _ = sep.sum_ellipse(img, x, y, a, b, theta, 1.0, var=var, subpix=0)
    np.testing.assert_allclose(flux, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
    np.testing.assert_allclose(err, ref_err, rtol=1e-10)
    # EDGE: the ellipse's extent (half-widths from the quadratic form) leaves the image.
    c, s = np.cos(theta), np.sin(theta)
    xh = np.sqrt((a * c) ** 2 + (b * s) ** 2)
    yh = np.sqrt((a * s) ** 2 + (b * c) ** 2)
    leaves = (x - xh < -0.5) | (x + xh >= 279.5) | (y - yh < -0.5) | (y + yh >= 299.5)
    np.testing.assert_array_equal((flags & PhotFlag.EDGE) != 0, leaves)
    area, _, _ = sum_ellipses(np.ones((300, 280)), x, y, a, b, theta)
    np.testing.assert_allclose(area[~leaves], np.pi * a[~leaves] * b[~leaves], rtol=1e-12)


def test_ellipse_masking_matches_circle_rule():
    """An ellipse with a == b masks and restores exactly like the circle kernel."""
    img = np.full((60, 60), 2.0)
    img[30, 31] = np.nan
    mask = np.zeros((60, 60), np.uint32)
    mask[28, 29] = MaskPlane.BAD
    mask[32, 30] = MaskPlane.SAT
    fe, _, fle = sum_ellipses(img, [30.2], [30.1], [4.0], [3.0], [0.4], mask=mask)
    assert fe[0] == pytest.approx(2.0 * np.pi * 12.0, rel=1e-12)
    assert fle[0] & PhotFlag.MASKED and fle[0] & PhotFlag.SATURATED
    fc, _, flc = sum_ellipses(img, [30.2], [30.1], [4.0], [4.0], [0.0], mask=mask)
    assert fc[0] == pytest.approx(2.0 * np.pi * 16.0, rel=1e-12) and flc[0] == fle[0]
    f, _, fl = sum_ellipses(img, [np.nan, 30.0], [30.0, 30.0], 3.0, 2.0, 0.0)
    assert np.isnan(f[0]) and fl[0] & PhotFlag.NONFINITE and np.isfinite(f[1])
    with pytest.raises(pc.InputError, match="positive"):
        sum_ellipses(img, [30.0], [30.0], [0.0], [1.0], [0.0])
