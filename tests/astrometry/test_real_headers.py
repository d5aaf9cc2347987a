"""Pixel areas on real PTF, Spitzer, HST ACS and WFC3 headers against GalSim and finite differences."""

from __future__ import annotations

import warnings

import galsim
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_area

import photocalib as pc

from ._reference import DATA, det, reference_jacobian


def _text_header(name: str) -> fits.Header:
    return fits.Header.fromstring((DATA / name).read_text())


def _headers():
    """(label, header, hdulist or None, (ny, nx)) for every real header in the acceptance list."""
    out = []
    for name in ("tpvonly.hdr", "siponly.hdr"):
        h = fits.Header.fromfile(DATA / name)
        out.append((name, h, None, (h["NAXIS2"], h["NAXIS1"])))
    h = _text_header("irac_sip.hdr")
    out.append(("irac_sip.hdr", h, None, (h["NAXIS2"], h["NAXIS1"])))
    with fits.open(DATA / "j94f05bgq_flt.fits") as hdul:
        for ext in (1, 4):
            h = hdul[ext].header.copy()
            # The data were stripped from the test file; SIZAXIS gives the real ACS/WFC chip.
            out.append((f"j94f05bgq_flt.fits[{ext}]", h, None, (h["SIZAXIS2"], h["SIZAXIS1"])))
    return out


HEADERS = _headers()


def _points(shape, n, rng):
    ny, nx = shape
    corners_x = np.array([0.0, nx - 1.0, 0.0, nx - 1.0])
    corners_y = np.array([0.0, 0.0, ny - 1.0, ny - 1.0])
    x = np.concatenate([corners_x, rng.uniform(0, nx - 1, n)])
    y = np.concatenate([corners_y, rng.uniform(0, ny - 1, n)])
    return x, y


@pytest.mark.parametrize("label,header,hdulist,shape", HEADERS, ids=[h[0] for h in HEADERS])
def test_area_matches_galsim_analytic(label, header, hdulist, shape, rng):
    wcs = pc.SkyWcs.from_header(header)
    assert wcs.method == "analytic"
    gs = galsim.GSFitsWCS(header=header)
    x, y = _points(shape, 40, rng)
    # GalSim image positions are 1-based: pixel centre x (0-based) is image_pos x + 1.
    expected = np.array([gs.pixelArea(galsim.PositionD(a + 1.0, b + 1.0)) for a, b in zip(x, y, strict=True)])
    got = wcs.pixel_area(x, y)
    np.testing.assert_array_less(np.abs(got / expected - 1.0), 1e-7)
    # GalSim's local Jacobian has u towards west: same matrix up to the sign of the first row.
    jac = wcs.jacobian(x[:5], y[:5])
    for k in range(5):
        g = gs.jacobian(galsim.PositionD(x[k] + 1.0, y[k] + 1.0))
        np.testing.assert_allclose(jac[k, 0], -np.array([g.dudx, g.dudy]), rtol=0, atol=1e-9 * abs(g.dvdy) + 1e-12)
        np.testing.assert_allclose(jac[k, 1], np.array([g.dvdx, g.dvdy]), rtol=0, atol=1e-9 * abs(g.dvdy) + 1e-12)


@pytest.mark.parametrize("label,header,hdulist,shape", HEADERS, ids=[h[0] for h in HEADERS])
def test_jacobian_matches_independent_fd_and_fd_path(label, header, hdulist, shape, rng):
    wcs = pc.SkyWcs.from_header(header)
    fd = pc.SkyWcs.from_header(header)
    fd = pc.SkyWcs(fd.astropy_wcs, method="finite-difference")
    assert fd.method == "finite-difference"
    astro = WCS(header)
    x, y = _points(shape, 30, rng)
    ref = reference_jacobian(lambda a, b: astro.all_pix2world(a, b, 0), x, y)
    jac = wcs.jacobian(x, y)
    scale = np.sqrt(np.abs(det(ref)))[:, None, None]
    np.testing.assert_array_less(np.abs(jac - ref) / scale, 1e-7)
    np.testing.assert_array_less(np.abs(fd.jacobian(x, y) - jac) / scale, 1e-8)
    np.testing.assert_array_less(np.abs(fd.pixel_area(x, y) / wcs.pixel_area(x, y) - 1), 1e-8)


LOOKUP_FILES = [
    # WFC3/UVIS: TAN + D2IM tables of 64 x 32 cells of 64 pixels (a 4096 x 2048 chip).
    ("ie6d07ujq_wcs.fits", 0, ("det2im1", "det2im2")),
    # ACS/WFC: TAN-SIP + CPDIS tables (65 x 33 nodes) + a per-column D2IM (one node per pixel).
    ("dist_lookup.fits.gz", 1, ("cpdis1", "cpdis2", "det2im1")),
]


@pytest.mark.parametrize("name,ext,tables", LOOKUP_FILES, ids=[f[0] for f in LOOKUP_FILES])
def test_lookup_table_wcs_against_independent_fd(name, ext, tables, rng):
    with fits.open(DATA / name) as hdul:
        wcs = pc.SkyWcs.from_header(hdul[ext].header, hdul)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            astro = WCS(hdul[ext].header, hdul)
    assert all(getattr(astro, t) is not None for t in tables)
    assert wcs.method == "finite-difference" and "+" in repr(wcs)
    # Tables are piecewise bilinear, so the derivative jumps at their nodes (for the per-column
    # D2IM, at every pixel centre): the area is defined at pixel centres, as the mean over the
    # pixel. The reference differences within the pixel (steps 0.25 and 0.5) on both sides.
    x = rng.integers(0, 4096, 60).astype(float)
    y = rng.integers(0, 2048, 60).astype(float)
    ref = reference_jacobian(lambda a, b: astro.all_pix2world(a, b, 0), x, y, h=0.25)
    area = wcs.pixel_area(x, y)
    np.testing.assert_array_less(np.abs(area / np.abs(det(ref)) - 1), 1e-4)
    # The tables matter at this level: without them the area is measurably different.
    bare = astro.deepcopy()
    bare.cpdis1 = bare.cpdis2 = bare.det2im1 = bare.det2im2 = None
    assert np.max(np.abs(pc.SkyWcs(bare).pixel_area(x, y) / area - 1)) > 1e-5
    with pytest.raises(pc.InputError, match="lookup-table"):
        wcs.to_header()


def test_proj_plane_pixel_area_is_wrong_by_more_than_one_percent_on_ptf():
    header = fits.Header.fromfile(DATA / "tpvonly.hdr")
    wcs = pc.SkyWcs.from_header(header)
    field = wcs.pixel_area_field(pc.Box(0, 0, header["NAXIS1"], header["NAXIS2"]))
    area = field.fill()
    naive = proj_plane_pixel_area(WCS(header)) * 3600.0**2
    worst = np.max(np.abs(naive / area - 1.0))
    # The naive area comes from CD alone; the TPV terms and the chip's 1.6 deg distance from
    # CRVAL change the real area by 1.8-2.4 % over this chip.
    assert worst > 0.01
    assert np.min(np.abs(naive / area - 1.0)) > 0.01


def test_tpv_polynomial_is_applied_not_just_tan():
    header = fits.Header.fromfile(DATA / "tpvonly.hdr")
    tan = header.copy()
    for key in [k for k in tan if k.startswith("PV")]:
        del tan[key]
    tan["CTYPE1"], tan["CTYPE2"] = "RA---TAN", "DEC--TAN"
    a = pc.SkyWcs.from_header(header).pixel_area(1000.0, 2000.0)
    b = pc.SkyWcs.from_header(tan).pixel_area(1000.0, 2000.0)
    assert abs(a / b - 1) > 1e-3
    assert "TPV" in repr(pc.SkyWcs.from_header(header))


def test_tpv_radial_terms_are_analytic_and_exact(rng):
    # The PTF header has no odd radial terms r, r^3, r^5, r^7 (PV 3, 11, 23, 39); add them.
    header = fits.Header.fromfile(DATA / "tpvonly.hdr")
    header["PV1_3"], header["PV1_11"], header["PV1_23"] = 0.002, 0.01, 0.1
    header["PV2_3"], header["PV2_11"], header["PV2_39"] = -0.001, 0.02, 0.3
    wcs = pc.SkyWcs.from_header(header)
    assert wcs.method == "analytic"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        astro = WCS(header)
    x, y = _points((4096, 2048), 40, rng)
    ref = reference_jacobian(lambda a, b: astro.all_pix2world(a, b, 0), x, y)
    np.testing.assert_array_less(np.abs(wcs.pixel_area(x, y) / np.abs(det(ref)) - 1), 1e-7)
    plain = pc.SkyWcs.from_header(fits.Header.fromfile(DATA / "tpvonly.hdr"))
    assert np.max(np.abs(plain.pixel_area(x, y) / wcs.pixel_area(x, y) - 1)) > 1e-4


def test_galsim_positions_are_one_based():
    # The agreement above needs x + 1: with 0-based positions GalSim is off by one pixel's
    # worth of area gradient, far above 1e-7 on the PTF chip.
    header = fits.Header.fromfile(DATA / "tpvonly.hdr")
    wcs = pc.SkyWcs.from_header(header)
    gs = galsim.GSFitsWCS(header=header)
    x, y = 1500.0, 300.0
    ours = float(wcs.pixel_area(x, y))
    assert abs(gs.pixelArea(galsim.PositionD(x + 1, y + 1)) / ours - 1) < 1e-12
    assert abs(gs.pixelArea(galsim.PositionD(x, y)) / ours - 1) > 1e-7
