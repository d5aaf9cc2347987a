"""The tiled, checked pixel mapping: within tolerance everywhere, refined and exact where needed."""

from __future__ import annotations

import numpy as np
import pytest

import photocalib as pc
from photocalib.warp import PixelMapping, pixel_mapping


def _wavy(x, y):
    # strong, short-scale distortion: a single 128-pixel cubic cannot follow it
    return (x + 40.0 * np.sin(x / 35.0) * np.cos(y / 50.0) + 3.0,
            y + 30.0 * np.cos(x / 60.0) * np.sin(y / 25.0) - 2.0)


def _errors(mapping: PixelMapping, func) -> np.ndarray:
    mx, my = mapping.evaluate()
    ny, nx = mapping.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    ex, ey = func(xx, yy)
    return np.hypot(mx - ex, my - ey)


@pytest.mark.parametrize("tolerance", [1e-3, 1e-5])
def test_error_below_tolerance_at_every_pixel(tolerance):
    m = PixelMapping.build(_wavy, (300, 410), tolerance=tolerance)
    err = _errors(m, _wavy)
    assert np.all(np.isfinite(err))
    assert err.max() <= tolerance
    assert m.max_error <= tolerance
    # it had to refine: more tiles than the 3 x 4 root tiles
    assert m.n_tiles > 12


def test_smooth_mapping_is_cheap():
    """An affine map is accepted on the root tiles: ~49 exact evaluations per 128² tile."""
    def affine(x, y):
        return 0.9 * x + 0.2 * y + 5.0, -0.2 * x + 0.9 * y + 7.0

    m = PixelMapping.build(affine, (1024, 1024))
    assert m.n_tiles == 64
    assert m.n_exact == 64 * 49
    assert _errors(m, affine).max() < 1e-9


def test_discontinuity_falls_back_to_exact_pixels():
    def step(x, y):
        return x + 0.5 * (x > 100.3), y.copy()

    m = PixelMapping.build(step, (64, 256), tolerance=1e-3, min_tile=8)
    err = _errors(m, step)
    assert err.max() <= 1e-3
    assert (m.exact_offset >= 0).any()  # the tiles across the step are evaluated exactly


def test_no_mapping_gives_nan():
    def half(x, y):
        bad = x > 150.5
        return np.where(bad, np.nan, x + 1.0), np.where(bad, np.nan, y - 1.0)

    m = PixelMapping.build(half, (100, 300))
    mx, my = m.evaluate()
    assert np.all(np.isnan(mx[:, 151:]))
    yy, xx = np.mgrid[0:100, 0:151].astype(float)
    np.testing.assert_allclose(mx[:, :151], xx + 1.0, atol=1e-9)
    np.testing.assert_allclose(my[:, :151], yy - 1.0, atol=1e-9)


def test_tiles_far_outside_the_input_are_dropped():
    def shift(x, y):
        return x - 2000.0, y

    m = PixelMapping.build(shift, (256, 2560), input_shape=(256, 256))
    mx, _ = m.evaluate()
    # output columns 2000..2255 map onto the input; tiles far beyond it are dropped
    assert np.isfinite(mx[:, 2000:2256]).all()
    assert np.isnan(mx[:, :1500]).all()


def test_wcs_mapping_matches_exact_roundtrip(scene):
    m = pixel_mapping(scene.wcs, scene.target, scene.out_shape, input_shape=scene.image.shape)
    mx, my = m.evaluate()
    rng = np.random.default_rng(3)
    ny, nx = scene.out_shape
    xs = rng.integers(0, nx, 3000)
    ys = rng.integers(0, ny, 3000)
    ex, ey = scene.wcs.sky_to_pixel(*scene.target.pixel_to_sky(xs.astype(float), ys.astype(float)))
    ok = np.isfinite(mx[ys, xs])
    assert ok.sum() > 1000
    err = np.hypot(mx[ys, xs] - ex, my[ys, xs] - ey)[ok]
    assert err.max() <= 1e-3
    # the exact evaluations are a small fraction of the output pixels
    assert m.n_exact < 0.05 * nx * ny


def test_bad_arguments():
    with pytest.raises(pc.InputError, match="tolerance"):
        PixelMapping.build(_wavy, (10, 10), tolerance=0.0)
    with pytest.raises(pc.InputError, match="shape"):
        PixelMapping.build(_wavy, (0, 10))


def test_grow_bits_is_a_box_dilation_of_the_chosen_bits():
    from scipy.ndimage import binary_dilation

    from photocalib.warp import _kernels

    rng = np.random.default_rng(11)
    mask = np.zeros((70, 53), np.uint32)
    mask[rng.random(mask.shape) < 0.01] |= np.uint32(1)
    mask[rng.random(mask.shape) < 0.01] |= np.uint32(4)
    mask[0, 0] = mask[-1, -1] = 1
    mask[rng.random(mask.shape) < 0.05] |= np.uint32(2)  # not grown
    for radius in (1, 2, 3):
        out = _kernels.grow_bits(mask, np.uint32(1 | 4), radius)
        expected = mask.copy()
        for bit in (1, 4):
            grown = binary_dilation((mask & bit) != 0, structure=np.ones((2 * radius + 1,) * 2, bool))
            expected[grown] |= np.uint32(bit)
        np.testing.assert_array_equal(out, expected)
    clean = np.full((5, 6), 2, np.uint32)
    assert _kernels.grow_bits(clean, np.uint32(1), 2) is clean


def _dilated(mask, bits, radius):
    """Reference: each chosen bit dilated by a (2 radius + 1)² box with scipy, ORed in."""
    from scipy.ndimage import binary_dilation

    expected = mask.copy()
    for bit in bits:
        grown = binary_dilation((mask & bit) != 0, structure=np.ones((2 * radius + 1,) * 2, bool))
        expected[grown] |= np.uint32(bit)
    return expected


def test_grow_bits_on_columns_runs_and_dense_blocks():
    """The run-length scan: bad columns, long runs that cross its 64-pixel blocks, runs whose
    bits change along the row, dense blocks and runs touching every edge."""
    from photocalib.warp import _kernels

    rng = np.random.default_rng(5)
    mask = np.zeros((150, 301), np.uint32)
    mask[:, 0] |= 1  # a bad column on the left edge
    mask[:, 130] |= 4
    mask[40:43, 20:290] |= 1  # long runs across several blocks
    mask[41, 100:200] |= 4  # the bits change inside a run
    mask[90:149, 200:301] = 1  # a dense block on the bottom-right corner
    mask[rng.random(mask.shape) < 0.02] |= np.uint32(2)  # not grown
    mask[rng.random(mask.shape) < 0.005] |= np.uint32(4)
    for radius in (1, 2, 3):
        np.testing.assert_array_equal(_kernels.grow_bits(mask, np.uint32(1 | 4), radius), _dilated(mask, (1, 4), radius))


def test_tiles_and_dropped_tiles_partition_the_output():
    def shift(x, y):
        return x - 2000.0, y

    m = PixelMapping.build(shift, (300, 2600), input_shape=(256, 256))
    assert len(m.dropped) > 0
    cover = np.zeros(m.shape, int)
    for x0, y0, w, h in zip(m.x0, m.y0, m.nx, m.ny, strict=True):
        cover[y0:y0 + h, x0:x0 + w] += 1
    for x0, y0, w, h in m.dropped:
        cover[y0:y0 + h, x0:x0 + w] += 1
    assert np.all(cover == 1)
