"""pc.warp.reproject against reproject.reproject_interp: same inputs, same surface brightness,
and star fluxes conserved where reproject_interp (which interpolates values) does not."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import NDData
from astropy.wcs import WCS
from warp_scenes import render_stars, sip_header, tan_header

import photocalib as pc

reproject_mod = pytest.importorskip("reproject")

N = 256


@pytest.fixture(scope="module")
def grids():
    h_in = sip_header(N, k=6e-8 * (768.0 / N) ** 2)
    for key in ("A_2_0", "A_1_1", "B_0_2", "B_1_1"):
        h_in[key] *= 768.0 / N
    sky_in = WCS(h_in)
    ra0, dec0 = (float(v) for v in sky_in.all_pix2world([[N / 2, N / 2]], 0)[0])
    h_out = tan_header(220, 220, 0.25, ra0, dec0, 27.0)
    return h_in, h_out


def _smooth_sb(h_in):
    """A smooth surface brightness on the sky (a function of RA, Dec), sampled at pixel centres."""
    yy, xx = np.mgrid[0:N, 0:N]
    ra, dec = WCS(h_in).all_pix2world(xx, yy, 0)
    u = (ra - ra.mean()) * 3600 / 20.0
    v = (dec - dec.mean()) * 3600 / 20.0
    return 100.0 + 10.0 * np.sin(0.7 * u + 0.3) * np.cos(0.5 * v) + 3.0 * u * v


def test_surface_brightness_agrees_with_reproject_interp(grids):
    h_in, h_out = grids
    sb = _smooth_sb(h_in)
    ours, fp = pc.warp.reproject((sb, h_in), h_out, conserve="surface_brightness")
    theirs, fp_theirs = reproject_mod.reproject_interp((sb, h_in), h_out, order="bicubic")
    both = (fp > 0) & (fp_theirs > 0) & np.isfinite(theirs)
    # Away from the input's edge, where the kernels' supports differ (Lanczos-3: 3 pixels).
    from scipy.ndimage import binary_erosion

    inner = binary_erosion(both, iterations=4)
    assert inner.sum() > 0.5 * inner.size
    rel = np.abs(ours[inner] / theirs[inner] - 1)
    assert rel.max() <= 1e-3
    # And the output's truth: the same sky function at the output pixels' sky positions.
    yy, xx = np.mgrid[0:220, 0:220]
    ra, dec = WCS(h_out).all_pix2world(xx, yy, 0)
    ra_in, dec_in = WCS(h_in).all_pix2world(*np.mgrid[0:N, 0:N][::-1], 0)
    u = (ra - ra_in.mean()) * 3600 / 20.0
    v = (dec - dec_in.mean()) * 3600 / 20.0
    truth = 100.0 + 10.0 * np.sin(0.7 * u + 0.3) * np.cos(0.5 * v) + 3.0 * u * v
    assert np.abs(ours[inner] / truth[inner] - 1).max() <= 1e-3
    # The footprint: 1 where there is data, 0 (and NaN values) elsewhere.
    assert set(np.unique(fp)) == {0.0, 1.0}
    assert np.isnan(ours[fp == 0]).all() and np.isfinite(ours[fp == 1]).all()


def _stars(h_in, h_out):
    rng = np.random.default_rng(5)
    w_in, w_out = WCS(h_in), WCS(h_out)
    # A jittered grid 32 output pixels apart: 12-pixel apertures never share a star.
    g = np.arange(30.0, 191.0, 32.0)
    xo, yo = (v.ravel() + rng.uniform(-3, 3, v.size) for v in np.meshgrid(g, g))
    ra, dec = w_out.all_pix2world(xo, yo, 0)
    xi, yi = w_in.all_world2pix(ra, dec, 0)
    keep = (xi > 20) & (xi < N - 20) & (yi > 20) & (yi < N - 20)
    flux = rng.uniform(1e4, 1e5, keep.sum())
    return ra[keep], dec[keep], flux, xo[keep], yo[keep]


def test_fluence_conserves_star_fluxes_where_reproject_interp_does_not(grids):
    h_in, h_out = grids
    ra, dec, flux, xo, yo = _stars(h_in, h_out)
    image = render_stars(h_in, ra, dec, flux, sigma_arcsec=0.5)
    ours, _ = pc.warp.reproject((image, h_in), h_out)  # conserve="fluence" is the default
    theirs, _ = reproject_mod.reproject_interp((image, h_in), h_out, order="bicubic")
    # 3" apertures (12 output pixels of 0.25") hold all of each star but 1e-8 of its flux.
    r = 3.0 / 0.25
    got, _, _ = pc.measure.sum_ellipses(np.nan_to_num(ours), xo, yo, r, r, 0.0)
    other, _, _ = pc.measure.sum_ellipses(np.nan_to_num(theirs), xo, yo, r, r, 0.0)
    assert np.abs(got / flux - 1).max() <= 2e-4
    # reproject_interp keeps the value per pixel: fluxes scale by the pixel-area ratio,
    # (0.25 / ~0.2)² ≈ 1.5, varying with the input's distortion.
    assert np.abs(other / flux - 1).min() > 0.3
    total_in = image.sum()
    assert abs(np.nansum(ours) / total_in - 1) <= 1e-4  # a few stars' wings cross the output edge


def test_accepts_the_inputs_reproject_interp_takes(grids, tmp_path):
    h_in, h_out = grids
    sb = _smooth_sb(h_in).astype(np.float32)
    ref, ref_fp = pc.warp.reproject((sb, WCS(h_in)), WCS(h_out), (220, 220))
    assert ref.dtype == np.float32
    path = tmp_path / "in.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(sb, header=h_in, name="SCI")]).writeto(path)
    with fits.open(path) as hdul:
        candidates = [
            (hdul, {"hdu_in": 1}),
            (hdul["SCI"], {}),
        ]
        for inp, kw in candidates:
            out, fp = pc.warp.reproject(inp, h_out, **kw)
            np.testing.assert_array_equal(out, ref)
            np.testing.assert_array_equal(fp, ref_fp)
    for inp, kw in ((str(path), {"hdu_in": "SCI"}), (path, {"hdu_in": 1}), (NDData(sb, wcs=WCS(h_in)), {}),
                    ((sb, h_in), {})):
        out, fp = pc.warp.reproject(inp, h_out, **kw)
        np.testing.assert_array_equal(out, ref)
    assert pc.warp.reproject((sb, h_in), h_out, return_footprint=False).shape == (220, 220)


def test_blockwise_gives_the_pixels_of_the_in_memory_path(grids, tmp_path):
    """Dask in, Dask out (read and computed by output blocks) and Dask in, Zarr out, against the
    whole-image warp: only the mapping's node positions differ (rounding, 1e-12 pixels)."""
    da = pytest.importorskip("dask.array")
    zarr = pytest.importorskip("zarr")
    h_in, h_out = grids
    ra, dec, flux, _, _ = _stars(h_in, h_out)
    image = render_stars(h_in, ra, dec, flux, sigma_arcsec=0.5) + _smooth_sb(h_in)
    ref, ref_fp = pc.warp.reproject((image, h_in), h_out)
    lazy = da.from_array(image, chunks=(64, 64))
    # Blocks are whole tiles of the mapping (multiples of 128 pixels), so that each block's
    # mapping is the whole-image one's.
    out, fp = pc.warp.reproject((lazy, h_in), h_out, block_size=(96, 128))
    assert isinstance(out, da.Array) and out.chunks == ((128, 92), (128, 92))
    out, fp = out.compute(), fp.compute()
    np.testing.assert_array_equal(fp, ref_fp)
    ok = ref_fp > 0
    np.testing.assert_allclose(out[ok], ref[ok], rtol=1e-9, atol=1e-9 * np.nanmax(ref))
    assert np.isnan(out[~ok]).all()
    store = zarr.open_array(str(tmp_path / "out.zarr"), mode="w", shape=(220, 220), chunks=(96, 80),
                            dtype="f8")
    fp_store = zarr.open_array(str(tmp_path / "fp.zarr"), mode="w", shape=(220, 220), chunks=(96, 80),
                               dtype="f8")
    got, got_fp = pc.warp.reproject((lazy, h_in), h_out, block_size=128, output_array=store,
                                    output_footprint=fp_store)
    assert got is store
    back = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[:]
    np.testing.assert_allclose(back[ok], ref[ok], rtol=1e-9, atol=1e-9 * np.nanmax(ref))
    np.testing.assert_array_equal(np.asarray(got_fp[:]), ref_fp)


def test_bad_arguments_say_what_to_do(grids):
    h_in, h_out = grids
    sb = np.ones((N, N))
    with pytest.raises(pc.InputError, match="conserve"):
        pc.warp.reproject((sb, h_in), h_out, conserve="flux")
    with pytest.raises(pc.InputError, match="kernel"):
        pc.warp.reproject((sb, h_in), h_out, kernel="nearest")
    no_shape = h_out.copy()
    del no_shape["NAXIS1"], no_shape["NAXIS2"]
    with pytest.raises(pc.InputError, match="shape_out"):
        pc.warp.reproject((sb, h_in), WCS(no_shape))
    with pytest.raises(pc.InputError, match="shape_out"):
        pc.warp.reproject((sb, h_in), no_shape)
    with pytest.raises(pc.InputError, match="input_data"):
        pc.warp.reproject(sb, h_out)
    with pytest.raises(pc.InputError, match="2-D"):
        pc.warp.reproject((np.ones((2, N, N)), h_in), h_out)


def test_each_thread_transforms_with_its_own_wcs(grids):
    """astropy's WCS is not safe to share between threads (astropy/astropy#19174): the plan
    hands every thread its own copies, made once per thread, which transform identically."""
    from concurrent.futures import ThreadPoolExecutor

    from photocalib.warp.reprojection import _Plan

    h_in, h_out = grids
    src, dst = pc.SkyWcs.from_header(h_in), pc.SkyWcs.from_header(h_out)
    plan = _Plan(src, dst, (220, 220), (220, 220), "fluence", "lanczos3", 1e-3, 1)
    with ThreadPoolExecutor(2) as pool:
        pairs = list(pool.map(lambda _: plan.wcs_pair(), range(2)))
    mine = plan.wcs_pair()
    assert mine is plan.wcs_pair()  # cached per thread
    ids = {id(w) for pair in [*pairs, mine] for w in pair}
    assert id(src) not in ids and id(dst) not in ids
    x = np.linspace(0.0, 219.0, 50)
    for s, d in [*pairs, mine]:
        np.testing.assert_array_equal(s.pixel_to_sky(x, x), src.pixel_to_sky(x, x))
        np.testing.assert_array_equal(d.sky_to_pixel(*dst.pixel_to_sky(x, x)), dst.sky_to_pixel(*dst.pixel_to_sky(x, x)))
