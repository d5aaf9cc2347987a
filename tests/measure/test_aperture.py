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
    flux, vsum, trunc = _kernels.sum_circles(img, var, x, y, r)
    ref, ref_err, ref_flags = sep.sum_circle(img, x, y, r, var=var, subpix=0)
    inside = ~trunc
    np.testing.assert_allclose(flux[inside], ref[inside], rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    np.testing.assert_allclose(np.sqrt(vsum[inside]), ref_err[inside], rtol=1e-9)
    # Truncation is the geometric statement "the circle leaves the image's extent".
    leaves = (x - r < -0.5) | (x + r > 279.5) | (y - r < -0.5) | (y + r > 299.5)
    np.testing.assert_array_equal(trunc, leaves)
    # On a constant image the sum is the disc's area, clipped exactly at the image edge.
    ones = np.ones_like(img)
    area, _, _ = _kernels.sum_circles(ones, np.zeros((1, 1)), x, y, r)
    np.testing.assert_allclose(area[inside], np.pi * r[inside] ** 2, rtol=1e-12)
    assert np.all(area[trunc] < np.pi * r[trunc] ** 2)
