"""Background meshes and models: analytic skies on distorted detectors, both image kinds."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

import photocalib as pc
from photocalib.astrometry.synthetic import hsc_like_sip_header
from photocalib.background import (
    MeshSplineField,
    estimate,
    mesh_statistics,
    subtract,
)
from photocalib.fields import ChebyshevField, read_field

N = 768


@pytest.fixture(scope="module")
def wcs():
    # A strongly distorted corner: the pixel area changes by ~7 % across the detector.
    h = hsc_like_sip_header(nx=N, ny=N, axis_pixel=(-12000.0, -8000.0), k1=4e-10)
    return pc.SkyWcs.from_header(h)


def _stars(rng, shape, n=150):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    img = np.zeros(shape)
    x = rng.uniform(0, shape[1], n)
    y = rng.uniform(0, shape[0], n)
    f = 10 ** rng.uniform(2.5, 4.5, n)
    for xi, yi, fi in zip(x, y, f, strict=True):  # test scene only: 150 small stamps
        sl = (slice(max(0, int(yi) - 10), int(yi) + 11), slice(max(0, int(xi) - 10), int(xi) + 11))
        img[sl] += fi * np.exp(-((xx[sl] - xi) ** 2 + (yy[sl] - yi) ** 2) / (2 * 1.8**2)) / (2 * np.pi * 1.8**2)
    return img


def test_mesh_statistics_recover_level_and_noise(rng):
    img = 500.0 + rng.normal(0, 10.0, (512, 512))
    bad = np.zeros(img.shape, bool)
    bad[:, :5] = True
    for stat in ("mean", "median", "mode"):
        g = mesh_statistics(img, bad, 64, statistic=stat)
        assert g.level.shape == (8, 8)
        # Per-mesh noise of the estimator: 10/64 for the mean, ~2x that for the mode.
        assert np.abs(g.level - 500.0).max() < 6 * 2 * 10.0 / 64
        np.testing.assert_allclose(g.sigma, 10.0, rtol=0.05)
    assert g.count[:, 0].max() <= 64 * 59  # masked columns excluded
    with pytest.raises(pc.InputError):
        mesh_statistics(img, bad, 64, statistic="average")


def test_mesh_spline_field_interpolates_and_round_trips(tmp_path):
    box = pc.Box(0, 0, 300, 200)
    xn = np.array([20.0, 90.0, 160.0, 230.0, 280.0])
    yn = np.array([10.0, 70.0, 130.0, 190.0])
    v = np.add.outer(np.sin(yn / 50), np.cos(xn / 70))
    f = MeshSplineField(xn, yn, v, box)
    np.testing.assert_allclose(f.evaluate(xn[None, :], yn[:, None]), v, atol=1e-12)
    filled = f.fill()
    np.testing.assert_allclose(filled[::7, ::11], f.evaluate(np.arange(0, 300, 11)[None, :], np.arange(0, 200, 7)[:, None]), rtol=1e-12)
    f.write(tmp_path / "bg.fits")
    g = read_field(tmp_path / "bg.fits")
    assert isinstance(g, MeshSplineField) and g == f
    np.testing.assert_allclose(g.fill(), filled, rtol=1e-14)


def _sky_sb(shape):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    return 1200.0 * (1.0 + 0.03 * (xx / shape[1]) - 0.02 * (yy / shape[0]) ** 2)


@pytest.mark.parametrize("kind", ["SURFACE_BRIGHTNESS", "FLUENCE"])
def test_background_on_surface_brightness_is_exact_for_either_kind(wcs, rng, kind):
    sky = _sky_sb((N, N))
    area = wcs.pixel_area_field(pc.Box(0, 0, N, N)).fill()
    noise = np.sqrt(sky * 0.03)  # SB noise of a ~36-count/pixel sky
    sb = sky + _stars(rng, (N, N)) / area + rng.normal(0, 1, (N, N)) * noise
    exp = pc.Exposure(sb, variance=noise**2, wcs=wcs, kind="SURFACE_BRIGHTNESS")
    exp = exp if kind == "SURFACE_BRIGHTNESS" else exp.to_fluence()
    field = estimate(exp, mesh_size=64)
    model = field.fill()
    # The model is in SB units whatever the input kind; residual << 0.1 % of the sky.
    assert np.abs(model / sky - 1).max() < 1e-3
    assert np.abs(model / sky - 1).std() < 2e-4
    out = subtract(exp, field)
    assert out.kind is exp.kind
    expected = (sb - model) if kind == "SURFACE_BRIGHTNESS" else (sb - model) * area
    np.testing.assert_allclose(out.image, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


def test_fluence_background_leaves_the_area_pattern(wcs, rng):
    """With the same low-order model, SB leaves no residual; fluence leaves the area pattern."""
    sky = np.full((N, N), 1000.0)
    area = wcs.pixel_area_field(pc.Box(0, 0, N, N)).fill()
    sb = sky + rng.normal(0, 3.0, (N, N))
    exp_sb = pc.Exposure(sb, wcs=wcs, kind="SURFACE_BRIGHTNESS")
    exp_f = exp_sb.to_fluence()
    good = estimate(exp_sb, mesh_size=64, order=1)
    resid_good = (good.fill() * area - sky * area) / (sky * area)  # model error, no noise
    assert np.abs(resid_good).max() < 2e-4
    # The same estimator pretending the fluence image were a sky image (the legacy mistake).
    wrong_exp = pc.Exposure(np.asarray(exp_f.image) / area.mean(), wcs=wcs, kind="SURFACE_BRIGHTNESS")
    wrong = estimate(wrong_exp, mesh_size=64, order=1)
    resid_wrong = (sky * area - wrong.fill() * area.mean()) / (sky * area)  # left after subtraction
    pattern = area / area.mean() - 1
    # The residual is the non-linear part of the area map: it correlates with it and is
    # many times the SB residual.
    fit_lin = ChebyshevField.fit(*np.mgrid[0:N:16, 0:N:16][::-1], pattern[::16, ::16], order=1, bbox=pc.Box(0, 0, N, N))
    nonlinear = pattern - fit_lin.fill()
    assert np.corrcoef(resid_wrong[::8, ::8].ravel(), nonlinear[::8, ::8].ravel())[0, 1] > 0.9
    assert np.abs(resid_wrong).max() > 10 * np.abs(resid_good).max()


def test_background_mapping_is_used_instead_of_area(wcs, rng):
    area_field = wcs.pixel_area_field(pc.Box(0, 0, N, N))
    yy, xx = np.mgrid[0:N, 0:N].astype(float)
    ratio = ChebyshevField([[1.0, 0.02], [0.01, 0.0]], pc.Box(0, 0, N, N))  # F_sky / F_fid
    mapping = area_field * ratio
    sky_sb = 800.0
    fluence = sky_sb * mapping.fill() + rng.normal(0, 0.01, (N, N))
    exp = pc.Exposure(fluence, wcs=wcs, kind="FLUENCE", background_mapping=mapping)
    field = estimate(exp, mesh_size=64, order=2)
    assert np.abs(field.fill() / sky_sb - 1).max() < 1e-5
    out = subtract(exp, field)
    np.testing.assert_allclose(out.image, fluence - field.fill() * mapping.fill(), rtol=1e-12, atol=1e-12)
    # The SB version of the same exposure gives the same model and an exact subtraction.
    sb = exp.to_surface_brightness()
    field_sb = estimate(sb, mesh_size=64, order=2)
    np.testing.assert_allclose(field_sb.fill(), field.fill(), rtol=1e-9)
    np.testing.assert_allclose(subtract(sb, field_sb).to_fluence().image, out.image, atol=1e-9 * sky_sb)


def test_background_bad_input(wcs):
    exp = pc.Exposure(np.ones((64, 64)), wcs=wcs)
    with pytest.raises(pc.InputError, match="interpolation"):
        estimate(exp, interpolation="linear")
    masked = pc.Exposure(np.ones((64, 64)), mask=np.ones((64, 64), np.uint32), wcs=wcs)
    with pytest.raises(pc.InputError, match="masked"):
        estimate(masked, mesh_size=16)
    with pytest.raises(pc.InputError):
        subtract(exp, ChebyshevField([[1.0]], pc.Box(0, 0, 32, 32)))
    assert fits  # noqa: B018 - astropy import kept for the header type in fixtures


def test_source_mask_is_a_box_dilation(rng):
    from scipy.ndimage import binary_dilation

    from photocalib.background import _kernels

    img = rng.normal(size=(300, 260))
    img[rng.random(img.shape) < 0.002] += 50.0
    img[0, 0] = img[-1, -1] = 99.0
    bad = rng.random(img.shape) < 0.01
    xe, ye = np.array([0, 100, 260]), np.array([0, 150, 300])
    level = np.array([[0.0, 0.5], [-0.5, 0.0]])
    sigma = np.ones((2, 2))
    for grow in (0, 1, 4):
        out = _kernels.mask_above(img, bad, level, sigma, xe, ye, 10.0, grow)
        cut = np.repeat(np.repeat(level + 10.0 * sigma, np.diff(ye), axis=0), np.diff(xe), axis=1)
        expected = binary_dilation(img > cut, structure=np.ones((2 * grow + 1,) * 2, bool)) | bad
        np.testing.assert_array_equal(out, expected)


def test_fused_second_pass_equals_masked_mesh_statistics(rng):
    """The fused second pass (mask rows into a band buffer, sum them as they come) gives the
    statistics of mesh_statistics on the image with mask_above's mask, started from the same
    windows: the fusion changes where pixels are read from, not what is computed."""
    from dataclasses import replace

    from photocalib.background import _kernels
    from photocalib.background.mesh import _STATISTICS

    img = (1000.0 + 20.0 * rng.normal(size=(300, 260)) + _stars(rng, (300, 260), n=60)).astype(np.float32)
    img[5:9, 40:200] = np.nan  # already-missing pixels stay out
    first = mesh_statistics(img, None, 50)
    level = first.level
    sigma = first.sigma
    for stat in ("mean", "median", "mode"):
        lv, sg, ct = _kernels.masked_mesh_statistics(
            img, level, sigma, first.x_edges, first.y_edges, 3.0, 4, 3.0, 10, _STATISTICS[stat],
            np.finfo(np.float32).max)
        bad = _kernels.mask_above(img, ~np.isfinite(img), level, sigma, first.x_edges, first.y_edges, 3.0, 4)
        ref = mesh_statistics(img, bad, 50, statistic=stat, start=replace(first, level=level, sigma=sigma))
        np.testing.assert_array_equal(ct, ref.count)
        np.testing.assert_allclose(lv, ref.level, rtol=1e-12)
        np.testing.assert_allclose(sg, ref.sigma, rtol=1e-12)
        assert np.abs(lv - 1000.0).max() < 6 * 20.0 / 50 * 2


def test_mesh_statistics_match_astropy_clipping_across_a_sky_step(rng):
    """Each mesh starts clipping from the mesh below it; where the sky steps by 50 sigma
    between mesh rows that start misses, and the mesh must still reach the answer that
    clipping from all its pixels gives (astropy's sigma_clipped_stats is the reference)."""
    from astropy.stats import sigma_clipped_stats

    img = 100.0 + rng.normal(size=(256, 192)) * 2.0
    img[128:, :] += 100.0  # a 50-sigma step at a mesh boundary
    img[rng.random(img.shape) < 0.01] += 400.0  # hot pixels for the clipping to remove
    g = mesh_statistics(img, None, 64, max_iter=50)
    for j in range(4):
        for i in range(3):
            block = img[64 * j : 64 * (j + 1), 64 * i : 64 * (i + 1)]
            mean, _, std = sigma_clipped_stats(block, sigma=3.0, maxiters=50, cenfunc="mean", stdfunc="std")
            assert g.level[j, i] == pytest.approx(mean, abs=0.02 * std)
            assert g.sigma[j, i] == pytest.approx(std, rel=0.02)
