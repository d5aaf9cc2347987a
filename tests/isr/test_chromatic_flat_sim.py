"""Acceptance on the simulator's megacam-like preset: flattening and the background mapping M.

Truth is the simulator's own ``Camera.rho`` (its chromatic response integrals on its 1 nm grid)
and its pixel areas; the chromatic flat is the simulator's response, binned by 8.
"""

from __future__ import annotations

import warnings

import galsim
import numpy as np
import pytest

import photocalib as pc
from photocalib.isr import ChromaticFlat, Spectrum, background_mapping

sim = pytest.importorskip("photocalib.sim")

SHARE = galsim.meta_data.share_dir
BINNING = 8
SKY = 800.0  # count / arcsec², sky-SED flattened


@pytest.fixture(scope="module")
def camera():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the distortion solve's xtol notice
        return sim.Camera.preset("megacam-like", detector_shape=(464, 208))


def photons(name: str) -> Spectrum:
    return Spectrum(sim.spectra.WAVELENGTH_NM, sim.spectra.sed_photons(name), flux_type="fphotons")


def block_centres(shape):
    ny, nx = shape
    by, bx = -(-ny // BINNING), -(-nx // BINNING)
    yc = np.arange(by) * BINNING + 0.5 * (np.minimum(BINNING, ny - np.arange(by) * BINNING) - 1)
    xc = np.arange(bx) * BINNING + 0.5 * (np.minimum(BINNING, nx - np.arange(bx) * BINNING) - 1)
    return xc, yc


def response_flat(camera, detector: int, band: str = "r") -> ChromaticFlat:
    """R(x, y, λ) from the simulator's response curves (a function of radius), binned by 8."""
    d = camera.detector(detector)
    xc, yc = block_centres(d.shape)
    t = camera.field_t(detector, xc[None, :], yc[:, None])
    tg = np.linspace(t.min(), t.max(), 96)
    curves = np.array([camera.response_curve(detector, float(v), band) for v in tg])
    idx = np.clip(np.searchsorted(tg, t, side="right") - 1, 0, tg.size - 2)
    f = (t - tg[idx]) / (tg[1] - tg[0])
    cube = np.moveaxis(curves[idx] * (1 - f)[..., None] + curves[idx + 1] * f[..., None], -1, 0)
    bp = galsim.Bandpass(f"{SHARE}/bandpasses/LSST_{band}.dat", "nm")
    return ChromaticFlat(sim.spectra.WAVELENGTH_NM, cube, (bp.wave_list, bp(bp.wave_list)),
                         bbox=pc.Box.from_shape(d.shape), binning=BINNING, cube_is_response=True)


@pytest.mark.parametrize("detector", [14, 0])  # centre and corner of the field
def test_flattening_matches_the_simulators_response_integrals(camera, detector):
    flat = response_flat(camera, detector)
    xc, yc = block_centres(camera.detector(detector).shape)
    for t in sim.spectra.stellar_templates():
        sed = t.sed()
        wl = np.asarray(sed.wave_list)
        wl = wl[(wl >= 300.0) & (wl <= 1200.0)]
        got = flat.flatten(wl, sed(wl), flux_type="fphotons")  # a galsim.SED, sampled
        truth = camera.rho(detector, xc[None, :], yc[:, None], t.name, "r")
        assert np.max(np.abs(got / truth - 1)) <= 1e-4
    for name in ("sky", "fiducial"):
        truth = camera.rho(detector, xc[None, :], yc[:, None], name, "r")
        assert np.max(np.abs(flat.flatten(photons(name)) / truth - 1)) <= 1e-4


def test_background_through_m_on_the_sim_corner_detector(camera):
    detector = 0  # t = 0.92 .. 1.32: the largest chromatic pattern
    d = camera.detector(detector)
    ny, nx = d.shape
    wcs = pc.SkyWcs.from_header(camera.detector_wcs(detector, 150.0, 2.0, 30.0))
    box = pc.Box.from_shape(d.shape)
    area = wcs.pixel_area_field(box)
    yy, xx = np.mgrid[0:ny, 0:nx]
    ratio_true = (camera.rho(detector, xx, yy, "sky", "r")
                  / camera.rho(detector, xx, yy, "fiducial", "r"))
    # the photometric image of a uniform sky: fluence, flattened to the fiducial SED. No noise:
    # on this 464 x 208 detector photon noise alone would move a mesh fit by ~0.2 %, and the
    # criterion is about the model; test_chromatic_background.py has the noisy 2.4 Mpix case.
    truth = SKY * camera.pixel_area(detector, xx, yy, tree_rings=False) * ratio_true
    image = truth
    flat = response_flat(camera, detector)
    m = background_mapping(area, chromatic_ratio=flat.ratio_field(photons("sky"), photons("fiducial"),
                                                                  order=4, bin_size=2))
    exp = pc.Exposure(image, wcs=wcs, kind=pc.ImageKind.FLUENCE, unit="count", background_mapping=m)
    sb = pc.background.estimate(exp, mesh_size=32, order=4).fill()
    assert np.max(np.abs(sb / SKY - 1)) <= 1e-3
    model = pc.background.background_image(exp, pc.background.estimate(exp, mesh_size=32, order=4))
    assert np.max(np.abs(model / truth - 1)) <= 1e-3
    # through the pixel area alone (the fiducial flat) the sky keeps the chromatic pattern
    sb_a = pc.background.estimate(exp.replace(background_mapping=None), mesh_size=32, order=4).fill()
    assert np.ptp(ratio_true) > 3e-3
    assert np.max(np.abs(sb_a / SKY - 1)) > 3e-3
    assert np.max(np.abs(sb_a / (SKY * ratio_true) - 1)) <= 1e-3
