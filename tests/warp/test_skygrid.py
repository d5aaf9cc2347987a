"""SkyGrid: TAN geometry, patches, and its own non-uniform pixel area."""

from __future__ import annotations

import numpy as np
import pytest

import photocalib as pc
from photocalib.geom import Box
from photocalib.warp import SkyGrid, warp_exposure


@pytest.fixture(scope="module")
def grid() -> SkyGrid:
    # 2 degrees across at 0.5"/px: the TAN area falls by ~1e-3 at the corners
    return SkyGrid(45.0, -30.0, 0.5, 14400, 14400, patch_size=4000, rotation=20.0)


def test_pixel_area_matches_skywcs(grid):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, grid.width - 1, 500)
    y = rng.uniform(0, grid.height - 1, 500)
    np.testing.assert_allclose(grid.pixel_area(x, y), grid.wcs.pixel_area(x, y), rtol=1e-9)
    # non-uniform: 1 - 1.5 rho^2 at rho = 1.414 deg in the corner
    corner = grid.pixel_area(0.0, 0.0) / grid.pixel_area(*grid.crpix)
    rho = np.radians(np.hypot(*grid.crpix) * 0.5 / 3600)
    assert corner == pytest.approx((1 + rho**2) ** -1.5, rel=1e-12)
    assert 1 - corner > 5e-4


def test_centre_scale_and_rotation(grid):
    cx, cy = grid.crpix
    ra, dec = grid.wcs.pixel_to_sky(cx, cy)
    assert float(ra) == pytest.approx(45.0) and float(dec) == pytest.approx(-30.0)
    assert float(grid.wcs.pixel_scale(cx, cy)) == pytest.approx(0.5, rel=1e-9)
    # +y points to position angle 20 degrees east of north
    jac = grid.wcs.jacobian(cx, cy)
    xi, eta = jac[:, 1]
    assert np.degrees(np.arctan2(xi, eta)) == pytest.approx(20.0, abs=1e-6)


def test_patches_tile_the_grid(grid):
    nx, ny = grid.n_patches
    assert (nx, ny) == (4, 4)
    covered = sum(grid.patch_box(i, j).area for i in range(nx) for j in range(ny))
    assert covered == grid.width * grid.height
    assert grid.patch_box(3, 3) == Box(12000, 12000, 2400, 2400)
    wcs, box = grid.patch(1, 2)
    # patch pixel (x, y) is tract pixel (x + x0, y + y0)
    px, py = np.array([0.0, 17.5, 3999.0]), np.array([0.0, 2000.25, 3999.0])
    np.testing.assert_allclose(
        np.array(wcs.pixel_to_sky(px, py)), np.array(grid.wcs.pixel_to_sky(px + box.x0, py + box.y0)), atol=1e-11
    )
    field = grid.pixel_area_field(box)
    np.testing.assert_allclose(field.evaluate(px, py), grid.pixel_area(px + box.x0, py + box.y0), rtol=1e-9)
    with pytest.raises(pc.InputError, match="outside"):
        grid.patch(4, 0)


def test_patches_overlapping(grid):
    # a small image centred on the corner shared by patches (1, 1), (2, 1), (1, 2), (2, 2)
    ra, dec = grid.wcs.pixel_to_sky(8000.0, 8000.0)
    from astropy.io import fits

    h = fits.Header()
    h.update(NAXIS=2, NAXIS1=400, NAXIS2=300, CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRPIX1=200.5,
             CRPIX2=150.5, CRVAL1=float(ra), CRVAL2=float(dec), CD1_1=-0.2 / 3600, CD1_2=0.0,
             CD2_1=0.0, CD2_2=0.2 / 3600)
    wcs = pc.SkyWcs.from_header(h)
    assert sorted(grid.patches_overlapping(wcs, (300, 400))) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    far = h.copy()
    far["CRVAL2"] = 10.0
    assert grid.patches_overlapping(pc.SkyWcs.from_header(far), (300, 400)) == []


def test_warp_onto_patch_records_its_area(scene):
    ra, dec = scene.wcs.pixel_to_sky(384.0, 384.0)
    small = SkyGrid(float(ra), float(dec), 0.25, 1200, 1200, patch_size=700, rotation=-15.0)
    wcs, box = small.patch(0, 0)
    warped = warp_exposure(scene.exposure, wcs, box.shape)
    area = small.pixel_area(*np.meshgrid(np.arange(box.width) + box.x0, np.arange(box.height) + box.y0))
    assert warped.metadata["PAREAMIN"] == pytest.approx(area.min(), rel=1e-7)
    assert warped.metadata["PAREAMAX"] == pytest.approx(area.max(), rel=1e-7)
    assert warped.metadata["PAREAMEA"] == pytest.approx(area.mean(), rel=1e-7)
    np.testing.assert_allclose(warped.pixel_area_image(), area, rtol=1e-7)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pixel_scale": 0.0}, "pixel_scale"),
        ({"dec": 95.0}, "dec"),
        ({"width": 0}, "width"),
        ({"patch_size": 2.5}, "patch_size"),
        ({"ra": float("nan")}, "ra"),
    ],
)
def test_bad_grid_raises(kwargs, match):
    args = {"ra": 10.0, "dec": 0.0, "pixel_scale": 0.2, "width": 100, "height": 100, "patch_size": 50}
    args.update(kwargs)
    with pytest.raises(pc.InputError, match=match):
        SkyGrid(**args)


def test_patch_warp_equals_the_same_pixels_of_the_tract_warp(scene):
    ra, dec = scene.wcs.pixel_to_sky(384.0, 384.0)
    grid = SkyGrid(float(ra), float(dec), 0.25, 700, 600, patch_size=400, rotation=40.0)
    tract = warp_exposure(scene.exposure, grid.wcs, grid.shape, tolerance=1e-6)
    wcs, box = grid.patch(1, 0)
    patch = warp_exposure(scene.exposure, wcs, box.shape, tolerance=1e-6)
    same = tract.image[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1]
    np.testing.assert_array_equal(np.isnan(same), np.isnan(patch.image))
    ok = np.isfinite(same)
    assert ok.sum() > 0.5 * ok.size
    np.testing.assert_allclose(patch.image[ok], same[ok], rtol=0, atol=1e-6 * np.abs(same[ok]).max())
