"""Acceptance on the simulator's megacam-like preset: chromatic residuals and their correction.

The camera's r filter edge moves blueward with radius (3 nm at the field edge) and each detector
has its own chromatic QE slope. Truth is the simulator's ``Camera.rho`` (its own integrals);
the chromatic flats are the simulator's scans: its response curves, and its noisy
monochromatic flats where the scan covers the shifted band.
"""

from __future__ import annotations

import warnings

import galsim
import numpy as np
import pytest

from photocalib.fit import ChromaticCorrection, ab_colour
from photocalib.isr import ChromaticFlat, Spectrum

sim = pytest.importorskip("photocalib.sim")

SHARE = galsim.meta_data.share_dir
BINNING = 8


@pytest.fixture(scope="module")
def camera():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the distortion solve's xtol notice
        return sim.Camera.preset("megacam-like", detector_shape=(232, 104))


def template_spectrum(template) -> Spectrum:
    """A simulator template (a galsim.SED) sampled on its own grid, as photons / nm."""
    sed = template.sed()
    wl = np.asarray(sed.wave_list, dtype=np.float64)
    wl = wl[(wl >= 300.0) & (wl <= 1200.0)]
    return Spectrum(wl, sed(wl), flux_type="fphotons")


def fiducial() -> Spectrum:
    return Spectrum(sim.spectra.WAVELENGTH_NM, sim.spectra.fiducial_sed_photons(), flux_type="fphotons")


def band_pair(band):
    bp = galsim.Bandpass(f"{SHARE}/bandpasses/LSST_{band}.dat", "nm")
    return bp.wave_list, bp(bp.wave_list)


def response_flat(camera, detector: int, band: str = "r") -> ChromaticFlat:
    """The detector's response R(x, y, λ) from the simulator, binned by BINNING, as a ChromaticFlat."""
    d = camera.detector(detector)
    ny, nx = d.shape
    by, bx = -(-ny // BINNING), -(-nx // BINNING)
    yc = np.arange(by) * BINNING + 0.5 * (np.minimum(BINNING, ny - np.arange(by) * BINNING) - 1)
    xc = np.arange(bx) * BINNING + 0.5 * (np.minimum(BINNING, nx - np.arange(bx) * BINNING) - 1)
    t = camera.field_t(detector, xc[None, :], yc[:, None])
    # the response is a function of radius only: sample it on a fine radius grid, interpolate
    tg = np.linspace(t.min(), t.max(), 64)
    curves = np.array([camera.response_curve(detector, float(v), band) for v in tg])  # (64, n_wl)
    idx = np.clip(np.searchsorted(tg, t, side="right") - 1, 0, tg.size - 2)
    f = (t - tg[idx]) / (tg[1] - tg[0])
    cube = curves[idx] * (1 - f)[..., None] + curves[idx + 1] * f[..., None]  # (by, bx, n_wl)
    cube = np.moveaxis(cube, -1, 0)
    return ChromaticFlat(sim.spectra.WAVELENGTH_NM, cube, band_pair(band),
                         bbox=_box(d.shape), binning=BINNING, cube_is_response=True)


def _box(shape):
    from photocalib import Box

    return Box.from_shape(shape)


def true_dmag(camera, detector, x, y, name, band="r"):
    return -2.5 * np.log10(camera.rho(detector, x, y, name, band) / camera.rho(detector, x, y, "fiducial", band))


def test_colour_residual_after_fiducial_flat_grows_with_radius(camera):
    names = [t.name for t in sim.spectra.stellar_templates()]
    t_mean, spread = [], []
    for d in camera.detectors:
        ny, nx = d.shape
        yy, xx = np.mgrid[0:ny:8, 0:nx:8]
        dm = np.array([true_dmag(camera, d.id, xx.ravel(), yy.ravel(), n) for n in names])
        t_mean.append(camera.field_t(d.id, xx, yy).mean())
        spread.append(np.ptp(dm, axis=0).max())  # worst colour-dependent residual on the detector
    t_mean, spread = np.array(t_mean), np.array(spread)
    assert np.corrcoef(t_mean, spread)[0, 1] > 0.85
    inner, outer = spread[t_mean < 0.4].mean(), spread[t_mean > 0.9].mean()
    assert outer > 3 * inner
    assert spread.max() > 0.025  # M dwarf vs Vega at the corner of the field: > 25 mmag


@pytest.mark.parametrize("detector", [14, 4, 0])  # centre; largest QE slope; field corner
def test_catalog_correction_within_one_mmag(camera, detector):
    flat = response_flat(camera, detector)
    templates = sim.spectra.stellar_templates()
    g, i = band_pair("g"), band_pair("i")
    seds = [template_spectrum(t) for t in templates]
    colours = [ab_colour(s, g, i) for s in seds]
    corr = ChromaticCorrection.from_chromatic_flat(flat, fiducial(), seds, colours,
                                                   colour_fid=ab_colour(fiducial(), g, i),
                                                   order=4, colour_order=3, bin_size=1)
    rng = np.random.default_rng(detector)
    ny, nx = camera.detector(detector).shape
    x = np.concatenate([rng.uniform(0, nx - 1, 200), [0, nx - 1, 0, nx - 1]])
    y = np.concatenate([rng.uniform(0, ny - 1, 200), [0, 0, ny - 1, ny - 1]])
    before, after = 0.0, 0.0
    for t, c in zip(templates, colours, strict=True):
        truth = true_dmag(camera, detector, x, y, t.name)
        before = max(before, float(np.max(np.abs(truth))))
        after = max(after, float(np.max(np.abs(truth - corr.delta_mag(x, y, np.full(x.shape, c))))))
    assert before > 2e-3  # there is a colour-dependent error to correct
    assert after <= 1e-3, after


@pytest.mark.parametrize("detector, response, order, colour_order",
                         [(14, False, 3, 2), (0, True, 4, 3)])
def test_correction_from_the_simulators_noisy_monochromatic_flats(camera, detector, response, order,
                                                                  colour_order):
    """The simulator's monochromator scan (5 nm steps, Poisson noise): on the central detector
    the nominal-band scan; on a corner detector, whose filter edge has moved bluewards past the
    nominal scan, the response scan that reaches the shifted edge, with the correction model of
    the corner in test_catalog_correction_within_one_mmag (cubic in colour)."""
    wl, t0, cube = sim.render.monochromatic_flats(camera, detector, "r", response=response)
    flat = ChromaticFlat(wl, cube, t0, cube_is_response=response)
    templates = sim.spectra.stellar_templates()
    g, i = band_pair("g"), band_pair("i")
    seds = [template_spectrum(t) for t in templates]
    colours = [ab_colour(s, g, i) for s in seds]
    corr = ChromaticCorrection.from_chromatic_flat(flat, fiducial(), seds, colours, colour_fid=0.0,
                                                   order=order, colour_order=colour_order,
                                                   bin_size=8)
    yy, xx = np.mgrid[0:232:7, 0:104:7]
    worst = 0.0
    for t, c in zip(templates, colours, strict=True):
        truth = true_dmag(camera, detector, xx.ravel(), yy.ravel(), t.name)
        worst = max(worst, float(np.max(np.abs(truth - corr.delta_mag(xx.ravel(), yy.ravel(), c)))))
    assert worst <= 1e-3, worst
