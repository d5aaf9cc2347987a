"""Rendering truth: star fluence, sky and dome flats, noise, and the files on disk."""

from __future__ import annotations

import numpy as np
import pytest

from photocalib.sim import Camera, make_survey, render


def _one_detector(cam, survey, det, star_xy=(), flux=1.0e5, seed=1):
    v = survey.visits[0]
    xs = np.array([p[0] for p in star_xy], dtype=float)
    ys = np.array([p[1] for p in star_xy], dtype=float)
    ra, dec = cam.pixel_to_sky(det, xs, ys, v.ra, v.dec, v.rotation_deg)
    stars = {"star": np.arange(xs.size), "ra": np.atleast_1d(ra), "dec": np.atleast_1d(dec),
             "template": np.full(xs.size, "bb5800"), "flux": np.full(xs.size, flux)}
    return render.render_detector(cam, survey, v.visit, det, stars, seed)


def _sky_electrons(cam, survey, det):
    v = survey.visits[0]
    ny, nx = cam.detector(det).shape
    x, y = np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float))
    sky = survey.sky_rate(v.visit) * v.exptime * cam.pixel_area(det, x, y) * cam.rho(det, x, y, "sky", survey.band)
    return sky, cam.qe(det) * cam.illumination_sky(det, x, y)


@pytest.mark.parametrize("preset,pixel_scale,psf", [("hsc-like", 0.168, "moffat"), ("hsc-like", 0.4, "moffat"),
                                                    ("hsc-like", 0.2, "kolmogorov"), ("megacam-like", 0.187, "moffat")])
def test_isolated_star_keeps_its_fluence(preset, pixel_scale, psf):
    cam = Camera.preset(preset, detector_shape=(96, 96), n_detectors=16, pixel_scale_arcsec=pixel_scale)
    survey = make_survey(cam, n_visits=1, seed=3, psf=psf)
    det = 0  # a corner detector, where the pixel area changes fastest
    rd = _one_detector(cam, survey, det, [(47.3, 50.6)])
    d = cam.detector(det)
    electrons = (rd.image.astype(np.float64) - d.bias) * d.gain
    sky, response = _sky_electrons(cam, survey, det)
    star = electrons / response - sky
    half = render.stamp_half_size(cam, survey.visits[0].seeing_fwhm)
    box = (slice(max(51 - half, 0), 51 + half + 1), slice(max(47 - half, 0), 47 + half + 1))
    measured = star[box].sum()
    truth = rd.stars
    assert truth["star"].tolist() == [0]
    # Noise of the sum: Poisson on the expected electrons plus read noise, divided by the response.
    var = (response * sky + d.read_noise**2) / response**2
    sigma = np.sqrt(var[box].sum() + truth["drawn_e"][0] / response[51, 47])
    assert abs(measured - truth["drawn_e"][0]) < 4 * sigma
    # The drawn flux is the true fluence F K t T (everything is on the detector here).
    v = survey.visits[0]
    fluence = 1.0e5 * survey.electrons_per_njy_s * v.exptime * 10 ** (-0.4 * (v.extinction_mag + v.grey_mag))
    # Chromatic camera: the star's own response through the shifted filter and the detector's QE slope.
    rho = float(cam.rho(det, 47.3, 50.6, "bb5800", survey.band))
    assert (rho == 1.0) == (preset != "megacam-like")
    fluence *= rho
    assert truth["expected_e"][0] == pytest.approx(fluence, rel=1e-12)
    if psf == "moffat":
        assert truth["drawn_e"][0] == pytest.approx(fluence, rel=1e-4)
        assert abs(measured - fluence) < 4 * sigma + 1e-4 * fluence
    else:  # Kolmogorov wings reach beyond the stamp; the truth table says how much was drawn
        assert 0.98 < truth["drawn_e"][0] / fluence < 1.0


def test_noise_matches_poisson_and_read_noise():
    cam = Camera.preset("hsc-like", detector_shape=(128, 128), n_detectors=4)
    survey = make_survey(cam, n_visits=1, seed=4)
    rd = _one_detector(cam, survey, 1)
    d = cam.detector(1)
    sky, response = _sky_electrons(cam, survey, 1)
    expected = sky * response
    pull = ((rd.image - d.bias) * d.gain - expected) / np.sqrt(expected + d.read_noise**2)
    assert abs(pull.mean()) < 5 / 128
    assert pull.std() == pytest.approx(1.0, abs=0.03)
    assert rd.header["SATURATE"] == pytest.approx(d.saturation)
    for key in ("VISIT", "DETECTOR", "FILTER", "EXPTIME", "MJD-OBS", "AIRMASS", "GAIN", "RDNOISE", "BIAS"):
        assert key in rd.header


def _flat_fielded_sky(cam, det, seed=1):
    # A long exposure: ~1e4 sky electrons per pixel, so 16x16-pixel blocks average to ~6e-4.
    survey = make_survey(cam, n_visits=1, seed=seed, exptime=600.0)
    rd = _one_detector(cam, survey, det)
    d = cam.detector(det)
    flat, fh = render.dome_flat(cam, det, survey.band)
    sb = (rd.image.astype(np.float64) - d.bias) * d.gain / (flat / fh["LAMPLVL"])
    v = survey.visits[0]
    return sb / (survey.sky_rate(v.visit) * v.exptime)


def _block_means(img, n=16):
    ny, nx = img.shape
    return img[: ny // n * n, : nx // n * n].reshape(ny // n, n, nx // n, n).mean(axis=(1, 3))


def test_dome_flat_fielded_sky_is_flat_where_illuminations_agree():
    # Dome and sky illumination agree everywhere: the flat-fielded sky is flat in surface
    # brightness, and its fluence version follows the area map.
    cam = Camera.preset("hsc-like", detector_shape=(128, 128), n_detectors=16, dome_gradient=0.0, dome_radial=0.0,
                        tree_rings=True)
    det = 0
    sb = _flat_fielded_sky(cam, det)
    blocks = _block_means(sb)
    block_noise = sb.std() / 16
    assert block_noise < 1e-3
    assert abs(sb.mean() - 1) < 5 * sb.std() / 128
    # Flat: block means scatter as the pixel noise predicts, no more.
    assert np.std(blocks) < 1.3 * block_noise
    x, y = np.meshgrid(np.arange(128.0), np.arange(128.0))
    area = cam.pixel_area(det, x, y, tree_rings=False)
    fluence = sb * area
    assert area.max() / area.min() > 1.04
    np.testing.assert_allclose(_block_means(fluence / area), 1.0, atol=1e-2)
    coef = np.polyfit(_block_means(area).ravel(), _block_means(fluence).ravel(), 1)
    assert coef[0] == pytest.approx(1.0, abs=0.05)  # fluence ~ area x sky


def test_dome_flat_fielded_sky_shows_the_illumination_ratio():
    cam = Camera.preset("hsc-like", detector_shape=(128, 128), n_detectors=16)
    det = 3
    sb = _flat_fielded_sky(cam, det)
    x, y = np.meshgrid(np.arange(128.0), np.arange(128.0))
    ratio = cam.illumination_ratio(det, x, y)
    assert ratio.max() - ratio.min() > 0.005
    block_noise = sb.std() / 16
    resid = _block_means(sb / ratio) - 1
    assert np.abs(resid).max() < 5 * block_noise
    assert np.std(resid) < 1.3 * block_noise
    # Without the ratio the structure is there, well above the noise.
    assert np.std(_block_means(sb)) > 2 * block_noise


def test_saturation_clips_bright_stars():
    cam = Camera.preset("hsc-like", detector_shape=(96, 96), n_detectors=4)
    survey = make_survey(cam, n_visits=1, seed=5)
    rd = _one_detector(cam, survey, 2, [(40.0, 40.0)], flux=3e7)
    assert rd.image.max() == pytest.approx(cam.detector(2).saturation)
    assert bool(rd.stars["saturated"][0])


def test_monochromatic_flats_flatten_to_the_model():
    cam = Camera.preset("megacam-like", detector_shape=(64, 64), n_detectors=16)
    det = 0
    wl, t0, cube = render.monochromatic_flats(cam, det, "r", step_nm=2.0)
    from photocalib.sim import spectra

    # Photon-weighted flattening to the fiducial (flat f_nu) SED, by the trapezoid rule.
    n_fid = np.interp(wl, spectra.WAVELENGTH_NM, spectra.fiducial_sed_photons())
    wgt = t0 * n_fid
    flat = np.tensordot(np.trapezoid(np.eye(wl.size) * wgt, wl, axis=1), cube, axes=1) / np.trapezoid(wgt, wl)
    x, y = np.meshgrid(np.arange(64.0), np.arange(64.0))
    model = (render.lamp_level(cam, 1e6) * cam.pixel_area(det, x, y) * cam.qe(det)
             * cam.illumination_dome(det, x, y) * cam.rho(det, x, y, "fiducial", "r"))
    ratio = flat / model
    assert abs(np.median(ratio) - 1) < 2e-3
    assert np.std(ratio) < 2e-3


@pytest.mark.parametrize("band", ["u", "r", "y"])
@pytest.mark.parametrize("step", [2.0, 5.0, 10.0, 7.3])
def test_mono_wavelengths_stay_inside_the_band(band, step):
    from photocalib.sim import spectra

    wl = render.mono_wavelengths(band, step)
    t0 = np.interp(wl, spectra.WAVELENGTH_NM, spectra.throughput(band))
    assert np.all(t0 > 0)
    assert np.all(np.abs(np.diff(wl) - step) < 0.5 * step)


def test_chromatic_dome_flat_fielded_sky():
    # Sky and lamp SEDs differ: the flat-fielded sky carries rho_sky / rho_lamp on top of the
    # illumination ratio, a pattern that grows with radius on megacam-like.
    cam = Camera.preset("megacam-like", detector_shape=(128, 128), n_detectors=16)
    det = 0
    sb = _flat_fielded_sky(cam, det)
    x, y = np.meshgrid(np.arange(128.0), np.arange(128.0))
    chrom = cam.rho(det, x, y, "sky", "r") / cam.rho(det, x, y, "lamp", "r")
    model = cam.illumination_ratio(det, x, y) * chrom
    block_noise = sb.std() / 16
    resid = _block_means(sb / model) - 1
    assert np.abs(resid).max() < 5 * block_noise
    assert chrom.max() - chrom.min() > 3 * block_noise
    assert np.std(_block_means(sb / cam.illumination_ratio(det, x, y))) > 2 * block_noise


def test_response_scan_covers_the_shifted_filter_edge_on_a_corner_detector():
    """On megacam-like's corner detector the r-band edge moves ~3 nm bluewards. The nominal-band
    scan misses that part of the response; the response scan reaches it, so its flattening to
    the fiducial SED equals the model, where the nominal scan is off by far more than the noise."""
    from photocalib.isr import ChromaticFlat
    from photocalib.sim import spectra

    cam = Camera.preset("megacam-like", detector_shape=(48, 48), n_detectors=16)
    det = 0  # a corner of the 4x4 focal plane
    x, y = np.meshgrid(np.arange(48.0), np.arange(48.0))
    assert cam.field_t(det, x, y).max() > 0.9
    level = 1e10  # photon noise ~1e-5 per frame, far below the effect
    model = (render.lamp_level(cam, level) * cam.pixel_area(det, x, y) * cam.qe(det)
             * cam.illumination_dome(det, x, y) * cam.rho(det, x, y, "fiducial", "r"))
    fid = spectra.fiducial_sed_photons()
    wave = spectra.WAVELENGTH_NM

    wl, t0, cube = render.monochromatic_flats(cam, det, "r", step_nm=1.0, flat_level_e=level,
                                              response=True)
    assert wl.min() < render.mono_wavelengths("r", 1.0).min() - 2.0
    flat = ChromaticFlat(wl, cube, t0, cube_is_response=True)
    got = flat.flatten(wave, fid, flux_type="fphotons") / model
    assert np.max(np.abs(got - 1)) < 3e-4

    wl0, t00, cube0 = render.monochromatic_flats(cam, det, "r", step_nm=1.0, flat_level_e=level)
    nominal = ChromaticFlat(wl0, cube0, t00).flatten(wave, fid, flux_type="fphotons") / model
    assert np.max(np.abs(nominal - 1)) > 1e-3
