"""ChromaticFlat: flattening to an SED against direct numerical integration, and the fields.

Truth: a cube whose wavelength dependence is known analytically, integrated directly on a
dense grid against GalSim's LSST bandpasses and SEDs (GalSim evaluates T and the SED).
"""

from __future__ import annotations

import galsim
import numpy as np
import pytest
from scipy.integrate import simpson

import photocalib as pc
from photocalib.isr import ChromaticFlat, Spectrum, background_mapping, read_spectrum

SHARE = galsim.meta_data.share_dir
NY, NX = 6, 7


def _coeffs():
    """Per-pixel coefficients of the analytic flat (smooth in x, y; different per pixel)."""
    y, x = np.mgrid[0:NY, 0:NX].astype(float)
    u = (x - 3.0) / 3.0
    v = (y - 2.5) / 2.5
    r2 = u * u + v * v
    a = 0.9 + 0.05 * u - 0.03 * v
    b = 0.04 * r2 + 0.01 * u
    c = -0.03 * r2 + 0.02 * v
    d = 0.01 * (1 + u)
    return a, b, c, d


def analytic_flat(lam):
    """flat(x, y, λ) for an array of wavelengths: shape (n, NY, NX)."""
    a, b, c, d = _coeffs()
    s = (np.asarray(lam)[:, None, None] - 650.0) / 150.0
    return a + b * s + c * s * s + d * np.sin(3.0 * s)


@pytest.fixture(scope="module")
def cube_wl():
    return np.arange(300.0, 1101.0, 1.0)


@pytest.fixture(scope="module")
def cube(cube_wl):
    return analytic_flat(cube_wl)


def lsst_bandpass(band):
    return galsim.Bandpass(f"{SHARE}/bandpasses/LSST_{band}.dat", "nm")


def direct(bp, photons):
    """∫ flat T N dλ / ∫ T N dλ on a dense grid, N(λ) the photon density (a callable)."""
    lam = np.linspace(bp.blue_limit, bp.red_limit, 40001)
    wt = bp(lam) * photons(lam)
    num = simpson(analytic_flat(lam) * wt[:, None, None], x=lam, axis=0)
    return num / simpson(wt, x=lam)


def _galsim_seds():
    return {
        "vega": galsim.SED(f"{SHARE}/SEDs/vega.txt", "nm", "flambda"),
        "CWW_E": galsim.SED(f"{SHARE}/SEDs/CWW_E_ext.sed", "Angstrom", "flambda"),
        "CWW_Im_z0.4": galsim.SED(f"{SHARE}/SEDs/CWW_Im_ext.sed", "Angstrom", "flambda").atRedshift(0.4),
    }


@pytest.mark.parametrize("band", ["g", "r", "i", "z"])
def test_flatten_matches_direct_integration_for_galsim_seds(band, cube_wl, cube):
    bp = lsst_bandpass(band)
    flat = ChromaticFlat(cube_wl, cube, (bp.wave_list, bp(bp.wave_list)))
    for name, sed in _galsim_seds().items():
        truth = direct(bp, sed)  # a galsim.SED returns photons / nm when called
        wl = sed.wave_list
        got = flat.flatten(wl, sed(wl), flux_type="fphotons")
        assert got.shape == (NY, NX)
        err = np.max(np.abs(got - truth))
        assert err <= 1e-4, (band, name, err)
        # the chromatic effect is far larger than the tolerance, so the test can fail
        assert np.ptp(truth / analytic_flat(np.array([650.0]))[0]) > 1e-2


def test_flatten_reads_galsim_sed_files_in_their_own_units(cube_wl, cube):
    bp = lsst_bandpass("r")
    flat = ChromaticFlat(cube_wl, cube, (bp.wave_list, bp(bp.wave_list)))
    sed = galsim.SED(f"{SHARE}/SEDs/CWW_Sbc_ext.sed", "Angstrom", "flambda")
    truth = direct(bp, sed)
    # the raw file: Angstrom and f_lambda per Angstrom
    wl_a, flam = np.loadtxt(f"{SHARE}/SEDs/CWW_Sbc_ext.sed", unpack=True)
    got = flat.flatten(wl_a, flam, wave_unit="Angstrom")
    assert np.max(np.abs(got - truth)) <= 1e-4
    spec = Spectrum.from_file(f"{SHARE}/SEDs/CWW_Sbc_ext.sed", wave_unit="Angstrom")
    np.testing.assert_allclose(flat.flatten(spec), got, rtol=0, atol=1e-13)
    # the same SED in f_nu: photons ∝ f_nu / λ
    fnu = spec.values * spec.wavelength_nm**2
    # (f_nu is interpolated linearly between the file's samples, not f_lambda, hence 1e-5)
    np.testing.assert_allclose(
        flat.flatten(spec.wavelength_nm, fnu, flux_type="fnu"), got, rtol=0, atol=1e-5
    )
    # an astropy Quantity wavelength overrides wave_unit
    import astropy.units as u

    np.testing.assert_allclose(flat.flatten(wl_a * u.AA, flam), got, rtol=0, atol=1e-13)


def test_flatten_analytic_sed_and_throughput_forms(cube_wl, cube):
    bp = lsst_bandpass("i")
    temp = 4000.0

    def bb_photons(lam):
        return lam**-4 / np.expm1(1.4387769e7 / (lam * temp))

    truth = direct(bp, bb_photons)
    sed_wl = np.arange(600.0, 900.0, 2.0)  # a coarse grid of its own
    flam = bb_photons(sed_wl) / sed_wl
    pair = ChromaticFlat(cube_wl, cube, (bp.wave_list, bp(bp.wave_list)))
    got = pair.flatten(sed_wl, flam)
    assert np.max(np.abs(got - truth)) <= 1e-4
    # throughput on the cube's grid, and as a callable, agree with the tabulated pair
    inside = inside_band(cube_wl, bp)
    on_grid = np.zeros_like(cube_wl)
    on_grid[inside] = bp(cube_wl[inside])

    def t_callable(w):
        return np.where(inside_band(w, bp), bp(np.clip(w, bp.blue_limit, bp.red_limit)), 0.0)

    for other in (ChromaticFlat(cube_wl, cube, on_grid), ChromaticFlat(cube_wl, cube, t_callable)):
        assert np.max(np.abs(other.flatten(sed_wl, flam) - truth)) <= 1e-4


def inside_band(w, bp):
    return (w >= bp.blue_limit) & (w <= bp.red_limit)


def test_weights_and_exact_cases(cube_wl):
    bp = lsst_bandpass("r")
    rng = np.random.default_rng(3)
    spatial = rng.uniform(0.8, 1.2, (NY, NX))
    # a flat independent of wavelength flattens to itself for any SED
    cube = np.broadcast_to(spatial, (cube_wl.size, NY, NX))
    flat = ChromaticFlat(cube_wl, cube, (bp.wave_list, bp(bp.wave_list)))
    vega = Spectrum.from_file(f"{SHARE}/SEDs/vega.txt")
    np.testing.assert_allclose(flat.flatten(vega), spatial, rtol=1e-14)
    w = flat.weights(vega)
    assert w.shape == cube_wl.shape and np.all(w >= 0)
    assert abs(w.sum() - 1.0) < 1e-14
    # weights vanish outside the band
    assert np.all(w[(cube_wl < bp.blue_limit - 1) | (cube_wl > bp.red_limit + 1)] == 0)
    # a monochromatic flat linear in λ flattens to the photon-weighted mean wavelength
    lin = ChromaticFlat(cube_wl, cube_wl[:, None, None] * np.ones((1, 2, 2)), (bp.wave_list, bp(bp.wave_list)))
    sed = galsim.SED(f"{SHARE}/SEDs/vega.txt", "nm", "flambda")
    lam = np.linspace(bp.blue_limit, bp.red_limit, 100001)
    wt = sed(lam) * bp(lam)
    lam_eff = simpson(wt * lam, x=lam) / simpson(wt, x=lam)
    assert abs(lin.flatten(vega)[0, 0] - lam_eff) / lam_eff < 1e-7


def test_flatten_field_and_ratio_field(cube_wl):
    # spatial dependence polynomial of total order 2: a triangular order-3 field is exact, with
    # single pixels or with blocks (the fit uses the block mean of each basis function)
    ny, nx = 40, 48
    y, x = np.mgrid[0:ny, 0:nx].astype(float)
    u, v = x / nx - 0.5, y / ny - 0.5
    s = (cube_wl[:, None, None] - 650.0) / 150.0
    cube = 1.0 + (0.05 * (u * u + v * v) + 0.02 * u) * s + 0.01 * v * s * s
    bp = lsst_bandpass("r")
    flat = ChromaticFlat(cube_wl, cube, (bp.wave_list, bp(bp.wave_list)))
    vega = Spectrum.from_file(f"{SHARE}/SEDs/vega.txt")
    direct_img = flat.flatten(vega)
    f1 = flat.flatten_field(vega, order=3, bin_size=1)
    assert isinstance(f1, pc.ChebyshevField) and f1.bbox == pc.Box(0, 0, nx, ny)
    np.testing.assert_allclose(f1.fill(), direct_img, rtol=0, atol=1e-12)
    f4 = flat.flatten_field(vega, order=3, bin_size=4)
    np.testing.assert_allclose(f4.fill(), direct_img, rtol=0, atol=1e-12)
    # a spline reproduces bicubics, so it is exact here too
    fs = flat.flatten_field(vega, kind="spline", nodes=(5, 6), bin_size=1)
    assert isinstance(fs, pc.SplineField) and fs.bbox == f1.bbox
    np.testing.assert_allclose(fs.fill(), direct_img, rtol=0, atol=1e-10)
    with pytest.raises(pc.InputError, match="kind"):
        flat.flatten_field(vega, kind="legendre")
    red = Spectrum(np.arange(400.0, 800.0, 5.0), np.arange(400.0, 800.0, 5.0) ** 3)
    ratio = flat.ratio_field(red, vega, order=4, bin_size=1)
    np.testing.assert_allclose(ratio.fill(), flat.flatten(red) / direct_img, rtol=0, atol=1e-6)
    ratio_s = flat.ratio_field(red, vega, kind="spline", nodes=6, bin_size=1)
    np.testing.assert_allclose(ratio_s.fill(), flat.flatten(red) / direct_img, rtol=0, atol=1e-6)
    # M = A F_sky / F_fid, from two flats or from the fitted ratio
    area = pc.ChebyshevField([[0.04, 0.001], [0.0005, 0.0]], f1.bbox)
    m_pair = background_mapping(area, flat.flatten_field(red, order=3, bin_size=1), f1)
    m_ratio = background_mapping(area, chromatic_ratio=ratio)
    want = area.fill() * flat.flatten(red) / direct_img
    np.testing.assert_allclose(m_pair.fill(), want, rtol=1e-9)
    np.testing.assert_allclose(m_ratio.fill(), want, rtol=1e-5)
    assert background_mapping(0.04, chromatic_ratio=ratio).bbox == ratio.bbox


def test_errors_name_the_input(cube_wl, cube):
    bp = lsst_bandpass("r")
    tp = (bp.wave_list, bp(bp.wave_list))
    with pytest.raises(pc.InputError, match="shape"):
        ChromaticFlat(cube_wl[:-1], cube, tp)
    with pytest.raises(pc.InputError, match="non-negative"):
        ChromaticFlat(cube_wl, cube, -np.ones(cube_wl.size))
    with pytest.raises(pc.InputError, match="zero everywhere"):
        ChromaticFlat(cube_wl, cube, np.zeros(cube_wl.size))
    with pytest.raises(pc.InputError, match="strictly increasing"):
        ChromaticFlat(cube_wl[::-1], cube, tp)
    flat = ChromaticFlat(cube_wl, cube, tp)
    with pytest.raises(pc.InputError, match="extend the SED"):
        flat.flatten(np.array([550.0, 650.0]), np.ones(2))
    with pytest.raises(pc.InputError, match="galsim.SED"):
        flat.flatten(np.array([500.0, 800.0]))
    with pytest.raises(pc.InputError, match="flux_type"):
        flat.flatten(np.array([500.0, 800.0]), np.ones(2), flux_type="photons")
    with pytest.raises(pc.InputError, match="wavelength unit"):
        flat.flatten(np.array([500.0, 800.0]), np.ones(2), wave_unit="furlong")
    with pytest.raises(pc.InputError, match="no photons"):
        flat.flatten(np.array([500.0, 800.0]), np.zeros(2))
    with pytest.raises(pc.InputError, match="either"):
        background_mapping(1.0)
    with pytest.raises(pc.InputError, match="cannot read"):
        read_spectrum("/nonexistent/sed.txt")


def test_chromatic_flat_is_read_only(cube_wl, cube):
    bp = lsst_bandpass("r")
    flat = ChromaticFlat(cube_wl, cube, (bp.wave_list, bp(bp.wave_list)))
    with pytest.raises(ValueError):
        flat.cube[0, 0, 0] = 2.0
    with pytest.raises(ValueError):
        flat.wavelength_nm[0] = 1.0
    assert "ChromaticFlat(n_lambda=801" in repr(flat)


def test_binned_cube_gives_full_resolution_fields(cube_wl):
    # a detector of 50 x 37 pixels stored binned by 4 (last row / column partial); the spatial
    # dependence is a polynomial of total order 2, so block-averaged fits are exact
    box = pc.Box(10, 20, 37, 50)
    b = 4
    ys, xs = np.mgrid[box.y0 : box.y0 + box.height, box.x0 : box.x0 + box.width].astype(float)
    u, v = (xs - 28.0) / 40.0, (ys - 45.0) / 50.0
    s = (cube_wl[:, None, None] - 650.0) / 150.0
    full = 1.0 + (0.05 * (u * u + v * v) + 0.02 * u) * s + 0.03 * v * s * s
    ny, nx = -(-box.height // b), -(-box.width // b)
    pad = np.zeros((cube_wl.size, ny * b, nx * b))
    cnt = np.zeros((ny * b, nx * b))
    pad[:, : box.height, : box.width] = full
    cnt[: box.height, : box.width] = 1.0
    binned = pad.reshape(-1, ny, b, nx, b).sum(axis=(2, 4)) / cnt.reshape(ny, b, nx, b).sum(axis=(1, 3))
    bp = lsst_bandpass("g")
    tp = (bp.wave_list, bp(bp.wave_list))
    flat = ChromaticFlat(cube_wl, binned, tp, bbox=box, binning=b)
    ref = ChromaticFlat(cube_wl, full, tp, bbox=box)
    vega = Spectrum.from_file(f"{SHARE}/SEDs/vega.txt")
    assert flat.flatten(vega).shape == (ny, nx)
    f = flat.flatten_field(vega, order=2, bin_size=2)
    assert f.bbox == box
    np.testing.assert_allclose(f.fill(), ref.flatten(vega), rtol=0, atol=1e-12)
    with pytest.raises(pc.InputError, match="binned by 4"):
        ChromaticFlat(cube_wl, binned, tp, bbox=pc.Box(0, 0, 60, 50), binning=b)


def test_response_cube_with_moving_filter_edge(cube_wl):
    # The filter edge shifts blueward with radius: R(x, y, λ) = T0(λ + s(x, y)). R / T0 is
    # undefined beyond T0's edges, so the cube holds R itself (cube_is_response=True).
    bp = lsst_bandpass("r")
    y, x = np.mgrid[0:NY, 0:NX].astype(float)
    shift = 4.0 * ((x / (NX - 1)) ** 2 + (y / (NY - 1)) ** 2) / 2.0
    wl = np.arange(520.0, 720.5, 0.5)

    def t0(lam):
        lam = np.asarray(lam, dtype=float)
        return np.where(inside_band(lam, bp), bp(np.clip(lam, bp.blue_limit, bp.red_limit)), 0.0)

    resp = t0(wl[:, None, None] + shift[None])
    flat = ChromaticFlat(wl, resp, (bp.wave_list, bp(bp.wave_list)), cube_is_response=True)
    for sed in _galsim_seds().values():
        lam = np.linspace(515.0, 720.0, 82001)
        n = sed(lam)
        truth = simpson(t0(lam[:, None, None] + shift[None]) * n[:, None, None], x=lam, axis=0)
        truth /= simpson(t0(lam) * n, x=lam)
        got = flat.flatten(sed.wave_list, sed(sed.wave_list), flux_type="fphotons")
        assert np.max(np.abs(got - truth)) <= 1e-4, np.max(np.abs(got - truth))
        assert got[0, 0] == pytest.approx(1.0, abs=1e-4)
        assert np.ptp(got) > 1e-3  # the moving edge matters
