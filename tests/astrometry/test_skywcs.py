"""SkyWcs geometry: RA wrap, poles, round trips, the TAN area law, APE-14 objects, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from hypothesis import given
from hypothesis import strategies as st

import photocalib as pc
from photocalib.astrometry import sky_to_tangent, tangent_to_sky
from photocalib.astrometry.synthetic import hsc_like_sip_header

from ._reference import DATA, det, reference_jacobian


def tan_header(ra, dec, cd, crpix=(100.0, 100.0), lonpole=None, naxis=(200, 200)) -> fits.Header:
    h = fits.Header()
    h["NAXIS"] = 2
    h["NAXIS1"], h["NAXIS2"] = naxis
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = float(ra), float(dec)
    h["CRPIX1"], h["CRPIX2"] = float(crpix[0]), float(crpix[1])
    h["CD1_1"], h["CD1_2"] = float(cd[0][0]), float(cd[0][1])
    h["CD2_1"], h["CD2_2"] = float(cd[1][0]), float(cd[1][1])
    if lonpole is not None:
        h["LONPOLE"] = float(lonpole)
    return h


def distance_from_crval(header: fits.Header, x, y) -> np.ndarray:
    """Angle (radians) of pixels from CRVAL, from astropy's pixel_to_world and SkyCoord."""
    ra, dec = WCS(header).all_pix2world(x, y, 0)
    return SkyCoord(ra * u.deg, dec * u.deg).separation(
        SkyCoord(header["CRVAL1"] * u.deg, header["CRVAL2"] * u.deg)
    ).rad


def tan_area_law(header: fits.Header, x, y) -> np.ndarray:
    """|det CD| cos^3(rho): the gnomonic projection shrinks radially by cos^2, tangentially by cos."""
    cd = np.array([[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]])
    return abs(np.linalg.det(cd)) * 3600.0**2 * np.cos(distance_from_crval(header, x, y)) ** 3


# -- the TAN area law, for random TAN WCSs ---------------------------------------------------
@given(
    ra=st.floats(0.0, 359.999),
    dec=st.floats(-89.5, 89.5),
    scale=st.floats(0.05, 30.0),  # arcsec/pixel: up to 30''/px so rho reaches ~1 deg
    angle=st.floats(0.0, 360.0),
    skew=st.floats(0.9, 1.1),
    flip=st.booleans(),
    lonpole=st.sampled_from([None, 180.0, 170.0]),
)
def test_random_tan_area_is_det_cd_times_cos_cubed(ra, dec, scale, angle, skew, flip, lonpole):
    th = np.deg2rad(angle)
    s = scale / 3600.0
    cd = s * np.array([[-np.cos(th), np.sin(th)], [np.sin(th) * skew, np.cos(th) * skew]])
    if flip:
        cd[0] *= -1
    header = tan_header(ra, dec, cd, crpix=(-50.0, 30.0), lonpole=lonpole)
    wcs = pc.SkyWcs.from_header(header)
    assert wcs.method == "analytic"
    x = np.array([0.0, 199.0, 0.0, 199.0, 57.3])
    y = np.array([0.0, 0.0, 199.0, 199.0, 121.9])
    np.testing.assert_allclose(wcs.pixel_area(x, y), tan_area_law(header, x, y), rtol=1e-9)
    np.testing.assert_allclose(np.abs(det(wcs.jacobian(x, y))), wcs.pixel_area(x, y), rtol=1e-12)
    ref = reference_jacobian(lambda a, b: WCS(header).all_pix2world(a, b, 0), x, y)
    np.testing.assert_allclose(wcs.jacobian(x, y), ref, rtol=0, atol=2e-7 * scale)


# -- RA = 0/360 and the poles -----------------------------------------------------------------
def test_ra_wrap_jacobian_and_area():
    s = 1.0 / 3600.0
    header = tan_header(0.0, 10.0, [[-s, 0.0], [0.0, s]])
    wcs = pc.SkyWcs.from_header(header)
    fd = pc.SkyWcs(WCS(header), method="finite-difference")
    x = np.linspace(0, 199, 21)
    y = np.full_like(x, 100.0)
    ra, _ = wcs.pixel_to_sky(x, y)
    assert ra.min() >= 0 and ra.max() < 360 and ra.max() > 359 and ra.min() < 1  # straddles 0
    jac = wcs.jacobian(x, y)
    ref = reference_jacobian(lambda a, b: WCS(header).all_pix2world(a, b, 0), x, y)
    np.testing.assert_allclose(jac, ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fd.jacobian(x, y), jac, rtol=0, atol=1e-9)
    # east is towards increasing RA: CD1_1 < 0 means RA grows to the left (-x).
    assert np.all(jac[:, 0, 0] < 0) and np.all(jac[:, 1, 1] > 0)
    np.testing.assert_allclose(wcs.pixel_area(x, y), tan_area_law(header, x, y), rtol=1e-12)


@pytest.mark.parametrize("dec0", [89.99, 90.0, -89.999])
def test_near_and_at_the_pole(dec0):
    s = 0.5 / 3600.0
    header = tan_header(45.0, dec0, [[-s, 0.0], [0.0, s]])
    wcs = pc.SkyWcs.from_header(header)
    fd = pc.SkyWcs(WCS(header), method="finite-difference")
    # A grid of 200 x 200 pixels of 0.5'' around CRVAL: it contains the pole for |dec0| >= 89.99.
    x, y = np.meshgrid(np.linspace(0, 199, 9), np.linspace(0, 199, 9))
    x, y = x.ravel(), y.ravel()
    area = wcs.pixel_area(x, y)
    np.testing.assert_allclose(area, tan_area_law(header, x, y), rtol=1e-12)
    np.testing.assert_allclose(fd.pixel_area(x, y), area, rtol=1e-8)
    jac = wcs.jacobian(x, y)
    # Square pixels of side s: the singular values of J are s cos^2(rho) (radial) and
    # s cos(rho) (tangential), whatever the orientation of the local frame at the pole.
    rho = distance_from_crval(header, x, y)
    sv = np.linalg.svd(jac, compute_uv=False)
    np.testing.assert_allclose(sv[:, 0], 0.5 * np.cos(rho), rtol=1e-12)
    np.testing.assert_allclose(sv[:, 1], 0.5 * np.cos(rho) ** 2, rtol=1e-12)
    np.testing.assert_allclose(fd.jacobian(x, y), jac, rtol=0, atol=1e-8)


def test_round_trip_sky_to_pixel_of_pixel_to_sky():
    for header in (hsc_like_sip_header(), fits.Header.fromfile(DATA / "tpvonly.hdr")):
        wcs = pc.SkyWcs.from_header(header)
        ny, nx = wcs.shape
        x, y = np.meshgrid(np.linspace(0, nx - 1, 7), np.linspace(0, ny - 1, 7))
        ra, dec = wcs.pixel_to_sky(x, y)
        assert ra.shape == x.shape
        x2, y2 = wcs.sky_to_pixel(ra, dec)
        np.testing.assert_allclose(x2, x, rtol=0, atol=1e-7)
        np.testing.assert_allclose(y2, y, rtol=0, atol=1e-7)


def test_broadcasting_and_scalars():
    wcs = pc.SkyWcs.from_header(hsc_like_sip_header())
    x = np.arange(5.0)[None, :]
    y = np.arange(3.0)[:, None]
    assert wcs.pixel_area(x, y).shape == (3, 5)
    assert wcs.jacobian(x, y).shape == (3, 5, 2, 2)
    assert np.ndim(wcs.pixel_area(1.0, 2.0)) == 0
    np.testing.assert_allclose(wcs.pixel_scale(x, y) ** 2, wcs.pixel_area(x, y), rtol=1e-15)
    ra, dec = wcs.celestial_center(pc.Box(0, 0, 4096, 4096))
    r2, d2 = wcs.pixel_to_sky(2047.5, 2047.5)
    assert (ra, dec) == (float(r2), float(d2))


# -- tangent-plane helpers ---------------------------------------------------------------------
def test_sky_to_tangent_matches_standard_gnomonic_formula_and_inverts(rng):
    ra0, dec0 = 359.9, -30.0
    ra = (ra0 + rng.uniform(-0.5, 0.5, 50)) % 360
    dec = dec0 + rng.uniform(-0.5, 0.5, 50)
    xi, eta = sky_to_tangent(ra, dec, ra0, dec0)
    a, d, a0, d0 = (np.deg2rad(v) for v in (ra, dec, ra0, dec0))
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi_ref = np.cos(d) * np.sin(a - a0) / cosc * 206264.80624709636
    eta_ref = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cosc * 206264.80624709636
    np.testing.assert_allclose(xi, xi_ref, rtol=0, atol=1e-8)
    np.testing.assert_allclose(eta, eta_ref, rtol=0, atol=1e-8)
    ra2, dec2 = tangent_to_sky(xi, eta, ra0, dec0)
    np.testing.assert_allclose(((ra2 - ra + 180) % 360) - 180, 0, atol=1e-11)
    np.testing.assert_allclose(dec2, dec, atol=1e-11)


# -- APE-14 objects (gwcs) ---------------------------------------------------------------------
def test_gwcs_uses_finite_differences_and_matches_fits_tan():
    gwcs = pytest.importorskip("gwcs")
    from astropy import coordinates as coord
    from astropy.modeling import models
    from gwcs import coordinate_frames as cf

    s = 0.2 / 3600.0
    cd = np.array([[-s * 0.98, s * 0.17], [s * 0.17, s * 0.98]])
    ra0, dec0 = 359.99, 60.0
    crpix0 = (1000.0, -200.0)  # 0-based
    forward = (
        (models.Shift(-crpix0[0]) & models.Shift(-crpix0[1]))
        | models.AffineTransformation2D(matrix=cd, translation=[0, 0])
        | models.Pix2Sky_TAN()
        | models.RotateNative2Celestial(ra0, dec0, 180.0)
    )
    detector = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    sky = cf.CelestialFrame(reference_frame=coord.ICRS(), name="icrs", unit=(u.deg, u.deg))
    g = gwcs.wcs.WCS(forward_transform=forward, input_frame=detector, output_frame=sky)
    wcs = pc.SkyWcs(g)
    assert wcs.method == "finite-difference"
    header = tan_header(ra0, dec0, cd, crpix=(crpix0[0] + 1, crpix0[1] + 1))
    fits_wcs = pc.SkyWcs.from_header(header)
    x = np.array([0.0, 500.0, 2047.0])
    y = np.array([0.0, 800.0, 2047.0])
    r1, d1 = wcs.pixel_to_sky(x, y)
    r2, d2 = fits_wcs.pixel_to_sky(x, y)
    np.testing.assert_allclose(((r1 - r2 + 180) % 360) - 180, 0, atol=1e-10)
    np.testing.assert_allclose(wcs.pixel_area(x, y), fits_wcs.pixel_area(x, y), rtol=1e-8)
    with pytest.raises(pc.InputError, match="header"):
        wcs.to_header()


# -- value semantics, persistence ---------------------------------------------------------------
def test_equality_repr_header_round_trip_and_immutability():
    header = hsc_like_sip_header()
    a = pc.SkyWcs.from_header(header)
    b = pc.SkyWcs.from_header(a.to_header())
    assert a == b and hash(a) == hash(b)
    assert a.method == b.method == "analytic"
    x = np.array([0.0, 4095.0])
    # to_header writes 17 significant digits, so values agree to rounding.
    np.testing.assert_allclose(a.pixel_area(x, x), b.pixel_area(x, x), rtol=1e-13)
    other = header.copy()
    other["A_3_0"] = 2e-10
    assert a != pc.SkyWcs.from_header(other)
    assert "TAN-SIP" in repr(a) and "0.168" in repr(a)
    tpv = pc.SkyWcs.from_header(fits.Header.fromfile(DATA / "tpvonly.hdr"))
    tpv2 = pc.SkyWcs.from_header(tpv.to_header())
    assert tpv2 == tpv and tpv2.method == "analytic"
    with pytest.raises(AttributeError):
        a._model = None
    assert a.pixel_area_field(pc.Box(0, 0, 64, 64)) is a.pixel_area_field(pc.Box(0, 0, 64, 64))


# -- bad input --------------------------------------------------------------------------------
def test_header_without_celestial_axes_raises_input_error():
    spectral = fits.Header({"CTYPE1": "FREQ", "CRVAL1": 1.4e9, "CDELT1": 1e6, "CRPIX1": 1.0, "CUNIT1": "Hz"})
    with pytest.raises(pc.InputError, match="CTYPE1.*FREQ"):
        pc.SkyWcs.from_header(spectral)
    linear = fits.Header({"CTYPE1": "X", "CTYPE2": "Y", "CRVAL1": 0.0, "CRVAL2": 0.0})
    with pytest.raises(pc.InputError, match="celestial"):
        pc.SkyWcs.from_header(linear)
    with pytest.raises(pc.InputError, match="celestial"):
        pc.SkyWcs.from_header(fits.Header())


@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
def test_nan_and_non_numeric_keywords_are_named():
    text = (
        "CTYPE1  = 'RA---TAN'\nCTYPE2  = 'DEC--TAN'\nCRVAL1  =                  NAN\n"
        "CRVAL2  =                  1.0\nCD1_1   =               0.0001\nCD2_2   =               0.0001\n"
    )
    with pytest.raises(pc.InputError, match="CRVAL1"):
        pc.SkyWcs.from_header(text)
    header = tan_header(10.0, 10.0, [[1e-4, 0], [0, 1e-4]])
    header["CD2_1"] = "abc"
    with pytest.raises(pc.InputError, match="CD2_1"):
        pc.SkyWcs.from_header(header)
    w = WCS(tan_header(10.0, 10.0, [[1e-4, 0], [0, 1e-4]]))
    w.wcs.crpix = [np.nan, 3.0]
    with pytest.raises(pc.InputError, match="CRPIX1"):
        pc.SkyWcs(w)


def test_not_a_wcs_raises_input_error():
    with pytest.raises(pc.InputError, match="APE-14"):
        pc.SkyWcs(object())
    with pytest.raises(pc.InputError, match="Header"):
        pc.SkyWcs.from_header(42)
    with pytest.raises(pc.InputError, match="Box"):
        pc.SkyWcs.from_header(hsc_like_sip_header()).pixel_area_field((0, 0, 10, 10))


def test_cube_header_keeps_celestial_axes():
    header = tan_header(10.0, 10.0, [[-1e-4, 0], [0, 1e-4]])
    header["NAXIS"] = 3
    header["NAXIS3"] = 5
    header["CTYPE3"], header["CRVAL3"], header["CDELT3"], header["CRPIX3"] = "FREQ", 1e9, 1e6, 1.0
    wcs = pc.SkyWcs.from_header(header)
    np.testing.assert_allclose(wcs.pixel_area(99.0, 99.0), 0.36**2, rtol=1e-12)


def test_zpn_finite_difference_matches_analytic_area_law():
    # ZPN: plane radius R(zeta) = sum_m P_m zeta^m (radians) at angle zeta from CRVAL, so the
    # area factor is sin(zeta) / (R R'(zeta)), independent of the orientation.
    s = 1.0 / 3600.0
    header = tan_header(359.5, -45.0, [[-s, 0.0], [0.0, s]], crpix=(1024.5, 1024.5), naxis=(2048, 2048))
    header["CTYPE1"], header["CTYPE2"] = "RA---ZPN", "DEC--ZPN"
    coeffs = {1: 1.0, 3: 50.0, 5: -3000.0}
    for m, value in coeffs.items():
        header[f"PV2_{m}"] = value
    wcs = pc.SkyWcs.from_header(header)
    assert wcs.method == "finite-difference"
    x, y = np.meshgrid(np.linspace(0, 2047, 6), np.linspace(0, 2047, 6))
    x, y = x.ravel(), y.ravel()
    zeta = distance_from_crval(header, x, y)
    r = sum(v * zeta**m for m, v in coeffs.items())
    dr = sum(m * v * zeta ** (m - 1) for m, v in coeffs.items())
    with np.errstate(invalid="ignore"):
        factor = np.where(zeta > 0, np.sin(zeta) / (r * dr), 1.0)
    expected = s * s * 3600.0**2 * factor
    area = wcs.pixel_area(x, y)
    np.testing.assert_allclose(area, expected, rtol=1e-8)
    assert area.max() / area.min() > 1.005  # the distortion is visible


def test_pickle_for_transport_to_workers():
    import copy
    import pickle

    header = hsc_like_sip_header(512, 512)
    for wcs in (pc.SkyWcs.from_header(header), pc.SkyWcs(WCS(header), method="finite-difference")):
        back = pickle.loads(pickle.dumps(wcs))
        assert back == wcs and back.method == wcs.method and back.shape == wcs.shape
        # astropy pickles a WCS through header text (17 digits): equal to rounding, which the
        # finite-difference path amplifies to ~1e-11 (positions of 150 deg carry 3e-14 deg).
        np.testing.assert_allclose(back.pixel_area([3.0, 400.0], [7.0, 9.0]), wcs.pixel_area([3.0, 400.0], [7.0, 9.0]),
                                   rtol=1e-9)
        assert copy.deepcopy(wcs).method == wcs.method
    field = pc.SkyWcs.from_header(header).pixel_area_field(pc.Box(0, 0, 512, 512))
    image = field.fill()
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(field)).fill(), image)


def test_numba_kernel_matches_numpy_chain_rule(rng):
    # SkyWcs evaluates the analytic Jacobian in a Numba kernel; _analytic holds the same chain
    # rule in NumPy. Both must agree to rounding on SIP and on TPV with radial terms.
    from photocalib.astrometry._kernels import tan_jacobian

    tpv = fits.Header.fromfile(DATA / "tpvonly.hdr")
    tpv["PV1_3"], tpv["PV1_11"], tpv["PV2_39"] = 0.002, 0.01, 0.3
    for header in (tpv, hsc_like_sip_header(), tan_header(30.0, -60.0, [[-1e-4, 2e-5], [1e-5, 1e-4]])):
        model = pc.SkyWcs.from_header(header)._model
        x = rng.uniform(-100, 4200, 300)
        y = rng.uniform(-100, 4200, 300)
        ref = model.jacobian(x, y)
        got = tan_jacobian(model, x, y)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13 * np.abs(ref).max())
        np.testing.assert_allclose(np.abs(det(got)), model.pixel_area(x, y), rtol=1e-13)


def test_latitude_first_axes():
    # CTYPE1 = DEC, CTYPE2 = RA: the same sky as the usual order with the pixel axes swapped.
    s = 0.2 / 3600.0
    usual = tan_header(200.0, -30.0, [[-s, 0.3 * s], [0.1 * s, s]], crpix=(40.0, 60.0))
    swapped = fits.Header()
    swapped["CTYPE1"], swapped["CTYPE2"] = "DEC--TAN", "RA---TAN"
    swapped["CRVAL1"], swapped["CRVAL2"] = -30.0, 200.0
    swapped["CRPIX1"], swapped["CRPIX2"] = 60.0, 40.0
    swapped["CD1_1"], swapped["CD1_2"] = usual["CD2_2"], usual["CD2_1"]
    swapped["CD2_1"], swapped["CD2_2"] = usual["CD1_2"], usual["CD1_1"]
    a = pc.SkyWcs.from_header(usual)
    b = pc.SkyWcs.from_header(swapped)
    x = np.array([0.0, 150.0, 17.0])
    y = np.array([0.0, 80.0, 190.0])
    ra_a, dec_a = a.pixel_to_sky(x, y)
    ra_b, dec_b = b.pixel_to_sky(y, x)
    np.testing.assert_allclose(ra_b, ra_a, rtol=0, atol=1e-11)
    np.testing.assert_allclose(dec_b, dec_a, rtol=0, atol=1e-11)
    np.testing.assert_allclose(b.pixel_area(y, x), a.pixel_area(x, y), rtol=1e-8)
    xb, yb = b.sky_to_pixel(ra_a, dec_a)
    np.testing.assert_allclose(xb, y, atol=1e-7)
    np.testing.assert_allclose(yb, x, atol=1e-7)
    # Swapping the pixel axes swaps the Jacobian's columns.
    np.testing.assert_allclose(b.jacobian(y, x)[..., ::-1], a.jacobian(x, y), rtol=0, atol=1e-8)
