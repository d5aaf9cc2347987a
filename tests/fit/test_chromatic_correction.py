"""Catalog-level SED correction, on an analytic chromatic camera with real LSST throughputs.

The camera: a megacam-like detector whose r filter edge shifts blueward with field radius,
T(λ; t) = T0(λ + 3 nm · t²), times a chromatic QE slope. The truth for each star is integrated
directly on a dense grid (no ChromaticFlat involved); the stars are GalSim's Vega and
blackbodies, the fiducial SED is flat in f_nu.
"""

from __future__ import annotations

import galsim
import numpy as np
import pytest
from astropy.table import Table
from scipy.integrate import simpson
from scipy.interpolate import CubicSpline

import photocalib as pc
from photocalib.fit import (
    ChromaticCorrection,
    ChromaticCorrectionSet,
    ab_colour,
    chromatic_design,
    fit_chromatic_residuals,
)
from photocalib.isr import ChromaticFlat, Spectrum

SHARE = galsim.meta_data.share_dir
BOX = pc.Box(0, 0, 2048, 4612)
AXIS = (-150.0, -150.0)  # optical axis in detector pixels: the detector spans t = 0.03 .. 1
R_EDGE = float(np.hypot(BOX.width - 1 - AXIS[0], BOX.height - 1 - AXIS[1]))
SHIFT_EDGE_NM = 3.0
QE_SLOPE = 0.01  # per 100 nm about 620 nm
BINNING = 64


def bandpass(band):
    return galsim.Bandpass(f"{SHARE}/bandpasses/LSST_{band}.dat", "nm")


BP = bandpass("r")


def t0(lam):
    lam = np.asarray(lam, dtype=np.float64)
    inside = (lam >= BP.blue_limit) & (lam <= BP.red_limit)
    return np.where(inside, BP(np.clip(lam, BP.blue_limit, BP.red_limit)), 0.0)


def response(lam, t2):
    """System response at squared normalised radius t2 (broadcast against lam)."""
    return t0(lam + SHIFT_EDGE_NM * t2) * (1.0 + QE_SLOPE * (lam - 620.0) / 100.0)


def t2_at(x, y):
    return ((np.asarray(x) - AXIS[0]) ** 2 + (np.asarray(y) - AXIS[1]) ** 2) / R_EDGE**2


def blackbody(temp):
    wl = np.arange(300.0, 1200.5, 1.0)
    return Spectrum(wl, wl**-5 / np.expm1(1.4387769e7 / (wl * temp)))


def vega():
    return Spectrum.from_file(f"{SHARE}/SEDs/vega.txt")


FIDUCIAL = Spectrum(np.array([300.0, 1200.0]), np.array([1.0, 1.0]), flux_type="fnu")
G_BAND = (bandpass("g").wave_list, bandpass("g")(bandpass("g").wave_list))
I_BAND = (bandpass("i").wave_list, bandpass("i")(bandpass("i").wave_list))
TRAIN_TEMPS = (3200.0, 3500.0, 4000.0, 4500.0, 5000.0, 5800.0, 6500.0, 7500.0, 9000.0, 12000.0)
TEST_TEMPS = (3350.0, 3800.0, 4700.0, 6100.0, 8200.0)


_TABLES: dict = {}


def _dmag_table(spectrum):
    """Δm on a fine grid of t², integrated directly (dense Simpson over λ), memoised."""
    key = (spectrum.wavelength_nm.tobytes(), spectrum.values.tobytes(), spectrum.flux_type)
    if key not in _TABLES:
        lam = np.linspace(525.0, 712.0, 9351)
        t2 = np.linspace(0.0, 1.0, 401)[:, None]
        resp = response(lam[None, :], t2)

        def rho(spec):
            n = spec.photons(lam)
            return simpson(resp * n, x=lam, axis=1) / simpson(t0(lam) * n, x=lam)

        _TABLES[key] = CubicSpline(t2[:, 0], -2.5 * np.log10(rho(spectrum) / rho(FIDUCIAL)))
    return _TABLES[key]


def true_dmag(spectrum, x, y):
    """Δm = −2.5 log10(ρ_s / ρ_fid) at points (a cubic spline in t² of the dense integrals)."""
    return _dmag_table(spectrum)(t2_at(x, y))


@pytest.fixture(scope="module")
def flat():
    ny, nx = -(-BOX.height // BINNING), -(-BOX.width // BINNING)
    # mean of t² over each binned pixel, exactly: centre value plus the in-block variance
    py = np.diff(np.minimum(np.arange(ny + 1) * BINNING, BOX.height))
    px = np.diff(np.minimum(np.arange(nx + 1) * BINNING, BOX.width))
    yc = np.arange(ny) * BINNING + 0.5 * (py - 1)
    xc = np.arange(nx) * BINNING + 0.5 * (px - 1)
    t2 = t2_at(xc[None, :], yc[:, None]) + ((px[None, :] ** 2 - 1) + (py[:, None] ** 2 - 1)) / 12 / R_EDGE**2
    wl = np.arange(528.0, 712.0, 1.0)
    cube = response(wl[:, None, None], t2[None])
    return ChromaticFlat(wl, cube, (BP.wave_list, BP(BP.wave_list)), bbox=BOX, binning=BINNING,
                         cube_is_response=True)


@pytest.fixture(scope="module")
def correction(flat):
    seds = [blackbody(t) for t in TRAIN_TEMPS] + [vega()]
    colours = [ab_colour(s, G_BAND, I_BAND) for s in seds]
    return ChromaticCorrection.from_chromatic_flat(
        flat, FIDUCIAL, seds, colours, colour_fid=ab_colour(FIDUCIAL, G_BAND, I_BAND),
        order=4, colour_order=3, bin_size=2, colour_name="g-i",
    )


@pytest.fixture(scope="module")
def test_points():
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(-0.5, BOX.width - 0.5, 150), [0, BOX.width - 1, 0, BOX.width - 1]])
    y = np.concatenate([rng.uniform(-0.5, BOX.height - 0.5, 150), [0, 0, BOX.height - 1, BOX.height - 1]])
    return x, y


def test_ab_colour_matches_galsim():
    for path, unit in (("vega.txt", "nm"), ("CWW_Sbc_ext.sed", "Angstrom")):
        spec = Spectrum.from_file(f"{SHARE}/SEDs/{path}", wave_unit=unit)
        sed = galsim.SED(f"{SHARE}/SEDs/{path}", unit, "flambda")
        want = (sed.calculateMagnitude(bandpass("g").withZeropoint("AB"))
                - sed.calculateMagnitude(bandpass("i").withZeropoint("AB")))
        assert ab_colour(spec, G_BAND, I_BAND) == pytest.approx(want, abs=2e-4)
    assert ab_colour(FIDUCIAL, G_BAND, I_BAND) == pytest.approx(0.0, abs=1e-12)


def test_fiducial_flattening_leaves_colour_residual_growing_with_radius(test_points):
    x, y = test_points
    stars = [blackbody(t) for t in TEST_TEMPS] + [vega()]
    dm = np.array([true_dmag(s, x, y) for s in stars])  # (n_star, n_point)
    spread = np.ptp(dm, axis=0)  # colour-dependent residual at each point
    t = np.sqrt(t2_at(x, y))
    inner, outer = spread[t < 0.3], spread[t > 0.85]
    assert inner.size > 3 and outer.size > 3
    # grows with radius: monotonic on average, and several times larger at the edge
    assert np.corrcoef(t, spread)[0, 1] > 0.9
    assert outer.mean() > 4 * inner.mean()
    assert outer.max() > 0.010  # > 10 mmag between an M dwarf and an A star at the edge


def test_catalog_correction_leaves_at_most_one_mmag(correction, test_points):
    x, y = test_points
    worst = 0.0
    for spec in [blackbody(t) for t in TEST_TEMPS + TRAIN_TEMPS] + [vega()]:
        c = ab_colour(spec, G_BAND, I_BAND)
        truth = true_dmag(spec, x, y)
        model = correction.delta_mag(x, y, np.full(x.shape, c))
        worst = max(worst, float(np.max(np.abs(truth - model))))
    assert worst <= 1e-3, worst
    # at the fiducial colour there is nothing to correct
    np.testing.assert_allclose(correction.delta_mag(x, y, correction.colour_fid), 0.0, atol=1e-15)


def test_apply_to_calibrated_catalog(correction, tmp_path):
    rng = np.random.default_rng(1)
    n = 50
    temps = rng.choice(TEST_TEMPS, n)
    x = rng.uniform(0, BOX.width - 1, n)
    y = rng.uniform(0, BOX.height - 1, n)
    colours = np.array([ab_colour(blackbody(t), G_BAND, I_BAND) for t in temps])
    true_flux = rng.uniform(1e3, 1e5, n)  # nJy
    dm_true = np.array([true_dmag(blackbody(t), x[i : i + 1], y[i : i + 1])[0] for i, t in enumerate(temps)])
    measured = true_flux * 10 ** (-0.4 * dm_true)
    table = Table({"x": x, "y": y, "g-i": colours, "psf_nJy": measured,
                   "psf_mag": -2.5 * np.log10(measured) + 31.4, "detector": np.full(n, 3)})
    out = correction.apply(table, colour="g-i", flux_columns=["psf_nJy"], mag_columns=["psf_mag"])
    assert "psf_nJy" in out.colnames and "chromatic_dmag" in out.colnames
    assert np.max(np.abs(2.5 * np.log10(out["psf_nJy_sedcorr"] / true_flux))) <= 1e-3
    np.testing.assert_allclose(out["psf_mag_sedcorr"], -2.5 * np.log10(out["psf_nJy_sedcorr"]) + 31.4,
                               rtol=0, atol=1e-9)
    assert np.max(np.abs(2.5 * np.log10(measured / true_flux))) > 3e-3  # there was something to fix
    # per-detector set, persisted and read back
    cset = ChromaticCorrectionSet({3: correction})
    path = tmp_path / "chromatic.fits"
    cset.write(path)
    back = ChromaticCorrectionSet.read(path)
    assert back[3] == correction and back[3].colour_name == "g-i"
    out2 = back.apply(table, colour="g-i", flux_columns=["psf_nJy"])
    np.testing.assert_array_equal(out2["psf_nJy_sedcorr"], out["psf_nJy_sedcorr"])
    with pytest.raises(pc.InputError, match="detector 4"):
        back.apply(_with_detector(table, 4), colour="g-i")
    with pytest.raises(pc.InputError, match="lacks column"):
        correction.apply(table, colour="u-g")


def _with_detector(table, det):
    t = Table(table, copy=True)
    t["detector"] = det
    return t


def test_design_matrix_round_trip_and_exact_fit():
    rng = np.random.default_rng(5)
    box = pc.Box(0, 0, 300, 200)
    order, corder, cfid = 2, 2, 0.4
    n = 400
    x, y, c = rng.uniform(0, 299, n), rng.uniform(0, 199, n), rng.uniform(-0.5, 2.5, n)
    p = rng.normal(0, 0.01, 6 * corder)
    corr = ChromaticCorrection.from_parameters(p, box, order, corder, cfid)
    design = chromatic_design(x, y, c, box, order, corder, cfid)
    np.testing.assert_allclose(design @ p, corr.delta_mag(x, y, c), rtol=1e-12, atol=1e-15)
    # an independent evaluation of the model: k_p as ChebyshevFields times (c - c_fid)^p
    want = sum(corr.terms[k].evaluate(x, y) * (c - cfid) ** (k + 1) for k in range(corder))
    np.testing.assert_allclose(corr.delta_mag(x, y, c), want, rtol=1e-12, atol=1e-15)
    fitted = ChromaticCorrection.fit(x, y, c, design @ p, box, cfid, order=order, colour_order=corder)
    np.testing.assert_allclose(fitted.delta_mag(x, y, c), design @ p, atol=1e-12)
    with pytest.raises(pc.InputError, match="usable points"):
        ChromaticCorrection.fit(x[:5], y[:5], c[:5], np.zeros(5), box, cfid, order=order, colour_order=corder)
    with pytest.raises(pc.InputError, match="parameters"):
        ChromaticCorrection.from_parameters(p[:-1], box, order, corder, cfid)


def test_fit_chromatic_term_from_star_residuals(test_points):
    """The reference-free route: fit the term from noisy star residuals, detector by detector."""
    rng = np.random.default_rng(11)
    n = 3000
    temps = rng.choice(TRAIN_TEMPS, n)
    x = rng.uniform(0, BOX.width - 1, n)
    y = rng.uniform(0, BOX.height - 1, n)
    colours = {t: ab_colour(blackbody(t), G_BAND, I_BAND) for t in TRAIN_TEMPS}
    c = np.array([colours[t] for t in temps])
    dm = np.empty(n)
    for t in TRAIN_TEMPS:
        sel = temps == t
        dm[sel] = true_dmag(blackbody(t), x[sel], y[sel])
    sigma = 0.002
    table = Table({"x": x, "y": y, "colour": c, "dmag": dm + rng.normal(0, sigma, n),
                   "detector": np.full(n, 7), "w": np.full(n, 1 / sigma**2)})
    cset = fit_chromatic_residuals(table, {7: BOX}, colour_fid=0.0, weight="w", order=3, colour_order=2)
    px, py = test_points
    worst = 0.0
    for t in TEST_TEMPS:
        truth = true_dmag(blackbody(t), px, py)
        model = cset.delta_mag(np.full(px.shape, 7), px, py, np.full(px.shape, ab_colour(blackbody(t), G_BAND, I_BAND)))
        worst = max(worst, float(np.max(np.abs(model - truth))))
    assert worst <= 1e-3, worst
    with pytest.raises(pc.InputError, match="no box for detector 7"):
        fit_chromatic_residuals(table, {1: BOX}, colour_fid=0.0)


def _tan_wcs(ra, dec):
    from astropy.io import fits

    h = fits.Header()
    h.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=ra, CRVAL2=dec,
             CRPIX1=BOX.width / 2 + 0.5, CRPIX2=BOX.height / 2 + 0.5,
             CD1_1=-0.187 / 3600, CD1_2=0.0, CD2_1=0.0, CD2_2=0.187 / 3600)
    return pc.SkyWcs.from_header(h)


def test_reference_free_joint_fit_chromatic_term_becomes_the_correction(test_points):
    """E's reference-free fit with chromatic_order fits 1 + c K_d; from_joint_solution converts it."""
    from photocalib.fit.joint import JointCalibrator

    rng = np.random.default_rng(21)
    n_star, n_visit = 500, 10
    scale = 0.187 / 3600
    ra0, dec0 = 150.0, 2.0
    ra = ra0 + rng.uniform(-0.7, 0.7, n_star) * BOX.width * scale
    dec = dec0 + rng.uniform(-0.7, 0.7, n_star) * BOX.height * scale
    temps = rng.choice(TRAIN_TEMPS, n_star)
    colour_of = {t: ab_colour(blackbody(t), G_BAND, I_BAND) for t in TRAIN_TEMPS}
    colour = np.array([colour_of[t] for t in temps])
    mag = rng.uniform(17.0, 20.0, n_star)
    rows, wcs = [], {}
    for v in range(n_visit):
        w = _tan_wcs(ra0 + rng.uniform(-0.4, 0.4) * BOX.width * scale,
                     dec0 + rng.uniform(-0.4, 0.4) * BOX.height * scale)
        wcs[(v, 0)] = w
        x, y = w.sky_to_pixel(ra, dec)
        inside = (x > 0) & (x < BOX.width - 1) & (y > 0) & (y < BOX.height - 1)
        idx = np.flatnonzero(inside)
        dm = np.empty(idx.size)
        for t in TRAIN_TEMPS:
            sel = temps[idx] == t
            dm[sel] = true_dmag(blackbody(t), x[idx][sel], y[idx][sel])
        grey = 10 ** (-0.4 * rng.normal(0, 0.02))
        flux = 10 ** (-0.4 * (mag[idx] + dm)) * grey * 1e9
        err = 1e-3 * flux
        rows.append(Table({"visit": np.full(idx.size, v), "detector": np.zeros(idx.size, int), "star": idx,
                           "x": x[idx], "y": y[idx], "instflux": flux + rng.normal(0, 1, idx.size) * err,
                           "instflux_err": err, "colour": colour[idx]}))
    from astropy.table import vstack

    obs = vstack(rows)
    sol = JointCalibrator("reference-free", kind="FLUENCE", star_flat_order=2, chromatic_order=3,
                          n_sigma=None, compute_errors=False).fit(obs, wcs, bboxes={0: BOX})
    corr = ChromaticCorrection.from_joint_solution(sol, 0, colour_fid=0.0, colour_order=3)
    px, py = test_points
    worst, spatial = 0.0, 0.0
    for t in TEST_TEMPS:
        c = ab_colour(blackbody(t), G_BAND, I_BAND)
        truth = true_dmag(blackbody(t), px, py)
        d = corr.delta_mag(px, py, np.full(px.shape, c)) - truth
        # a colour term common to the detector is the stars' colour to a reference-free fit
        worst = max(worst, float(np.max(np.abs(d - d.mean()))))
        spatial = max(spatial, float(np.ptp(truth)))
    assert spatial > 0.01
    assert worst <= 1e-3, worst
