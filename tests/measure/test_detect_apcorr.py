"""Detection, centroids, curves of growth and aperture corrections on rendered Gaussian stars."""

from __future__ import annotations

import numpy as np
import pytest

import photocalib as pc
from photocalib.measure import (
    apply_aperture_correction,
    curve_of_growth,
    detect,
    fit_aperture_correction,
)


def _star_field(render_gaussians, wcs, rng, n=60, size=512, sigma=None, noise=3.0):
    x = rng.uniform(20, size - 20, n)
    y = rng.uniform(20, size - 20, n)
    flux = rng.uniform(5e3, 5e4, n)
    sig = 2.0 if sigma is None else sigma(x, y)
    img = render_gaussians((size, size), x, y, flux, sig)
    img += rng.normal(0.0, noise, img.shape)
    exp = pc.Exposure(img, variance=np.full(img.shape, noise**2), wcs=wcs, kind="FLUENCE")
    return exp, x, y, flux


def test_detect_finds_stars_with_accurate_centroids(tan_wcs, rng, render):
    exp, x, y, _ = _star_field(render, tan_wcs, rng)
    cat = detect(exp, threshold=5.0)
    assert cat.meta["kind"] == "FLUENCE"
    d = np.hypot(cat["x"][:, None] - x[None, :], cat["y"][:, None] - y[None, :])
    nearest = d.min(axis=0)
    isolated = np.sort(np.hypot(x[:, None] - x, y[:, None] - y), axis=1)[:, 1] > 15
    assert np.all(nearest[isolated] < 0.05)  # windowed centroids at S/N > 100
    assert np.all(d.min(axis=1) < 3.0)  # no spurious detections (close pairs may merge)
    with pytest.raises(pc.ImageKindError):
        detect(exp.to_surface_brightness())


def test_curve_of_growth_matches_gaussian_encircled_energy(tan_wcs, rng, render):
    # sigma = 4 pixels keeps the pixelisation terms beyond variance below 1e-4.
    exp, x, y, flux = _star_field(render, tan_wcs, rng, noise=0.01, sigma=lambda x, y: 4.0)
    radii = np.array([0.8, 1.6, 2.4, 4.0])
    cog = curve_of_growth(exp, x, y, radii)
    scale = np.sqrt(tan_wcs.pixel_area(x, y))  # TAN: nearly constant 0.2"/pix
    r_pix = radii[None, :] / scale[:, None]
    # Pixel integration convolves the Gaussian with the unit box, and the overlap weights
    # convolve the aperture with it again: variance + 2/12, plus kurtosis terms far below the
    # tolerance for sigma = 4 pixels.
    ee = 1.0 - np.exp(-(r_pix**2) / (2 * (4.0**2 + 2 / 12)))
    isolated = np.sort(np.hypot(x[:, None] - x, y[:, None] - y), axis=1)[:, 1] > 50
    ok = (cog["flags"] == 0) & isolated
    assert ok.sum() > 10
    np.testing.assert_allclose(cog["instflux"][ok] / flux[ok, None], ee[ok], atol=1e-3)


def test_aperture_correction_field_follows_psf_width(tan_wcs, rng, render):
    def sigma(x, y):
        return 1.6 + 0.8 * x / 512.0

    exp, x, y, flux = _star_field(render, tan_wcs, rng, n=80, size=1024, sigma=sigma, noise=0.5)
    fit = fit_aperture_correction(exp, x, y, 1.2, 4.8, order=3)
    r_small = 1.2 / np.sqrt(tan_wcs.pixel_area(x, y))
    r_big = 4.8 / np.sqrt(tan_wcs.pixel_area(x, y))
    s = np.sqrt(sigma(x, y) ** 2 + 2 / 12)  # pixel integration and overlap weights
    truth = (1 - np.exp(-(r_big**2) / (2 * s**2))) / (1 - np.exp(-(r_small**2) / (2 * s**2)))
    model = fit.field.evaluate(x, y)
    isolated = np.sort(np.hypot(x[:, None] - x, y[:, None] - y), axis=1)[:, 1] > 60
    # A cubic field approximates the curved truth (1.0 to 1.2 across x) to a few 1e-3.
    assert np.max(np.abs(model[isolated] / truth[isolated] - 1)) < 1e-2
    assert fit.used.sum() > 40
    from photocalib.measure import aperture_photometry

    small = aperture_photometry(exp, x, y, radius_arcsec=1.2)
    corrected = apply_aperture_correction(small, fit.field)
    big_ee = 1 - np.exp(-(r_big**2) / (2 * s**2))
    ok = (corrected["flags"] == 0) & isolated
    ratio = corrected["instflux"][ok] / (flux[ok] * big_ee[ok])
    assert np.std(ratio) < 4e-3 and abs(np.median(ratio) - 1) < 4e-3


def test_detect_flags_saturated_footprints(tan_wcs, rng, render):
    from photocalib.image import MaskPlane

    exp, x, y, _ = _star_field(render, tan_wcs, rng, n=20)
    mask = np.zeros(exp.shape, np.uint32)
    hit = np.argsort(x)[:3]  # saturate the cores of three stars
    mask[np.round(y[hit]).astype(int), np.round(x[hit]).astype(int)] = MaskPlane.SAT
    cat = detect(exp.replace(mask=mask), threshold=5.0)
    d = np.hypot(cat["x"][:, None] - x[hit][None, :], cat["y"][:, None] - y[hit][None, :])
    flagged = d.min(axis=1) < 1.0
    assert flagged.sum() >= 3
    np.testing.assert_array_equal(np.asarray(cat["saturated"]), flagged)


def test_unusable_pixels_and_variances(tan_wcs, rng, render):
    exp, x, y, flux = _star_field(render, tan_wcs, rng, n=12)
    img = np.array(exp.image)
    ix, iy = int(round(x[0])), int(round(y[0]))
    img[iy - 2 : iy + 3, ix - 2 : ix + 3] = np.nan  # a hole in a star's core
    img[5, :] = np.inf
    holed = exp.replace(image=img)
    cat = detect(holed, threshold=5.0)
    d = np.hypot(cat["x"] - x[0], cat["y"] - y[0])
    assert (d < 6).sum() == 1 and np.all(np.isfinite(cat["x"]))
    from photocalib.measure import PhotFlag, aperture_photometry

    phot = aperture_photometry(holed, x, y, radius=6.0)
    assert phot["flags"][0] & PhotFlag.MASKED and np.isfinite(phot["instflux"][0])
    var = np.array(exp.variance)
    var[:] = 0.0
    with pytest.raises(pc.InputError, match="variance"):
        aperture_photometry(exp.replace(variance=var), x, y, radius=6.0)
    with pytest.raises(pc.InputError, match="variance"):
        detect(exp.replace(variance=var))


def test_fill_missing_interpolates_inward():
    from photocalib.measure._kernels import fill_missing

    yy, xx = np.mgrid[0:40, 0:50].astype(float)
    plane = 3.0 + 0.5 * xx - 0.25 * yy
    missing = np.zeros(plane.shape, bool)
    missing[10:15, 20:26] = True
    filled = fill_missing(np.where(missing, np.nan, plane), missing)
    assert np.all(np.isfinite(filled))
    np.testing.assert_array_equal(filled[~missing], plane[~missing])
    # Averages of valid neighbours stay within the values around the hole (no overshoot).
    ring = np.zeros(plane.shape, bool)
    ring[9:16, 19:27] = True
    ring &= ~missing
    assert plane[ring].min() <= filled[missing].min() and filled[missing].max() <= plane[ring].max()
    assert np.all(fill_missing(np.zeros((3, 3)), np.ones((3, 3), bool)) == 0.0)
