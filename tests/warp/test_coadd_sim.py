"""Coadd the simulator's visits (photocalib.sim) and compare star fluxes with the truth.

Single-epoch processing is done here from the simulator's own truth (dome flat, sky level,
and the true calibration nJy = instflux / (K t T_v SF)), so the test isolates the warp and
coadd: the expected aperture flux of each star is computed from the true fluxes and the
visits' PSFs (including neighbours and the light outside the aperture), not from the images.
"""

from __future__ import annotations

import numpy as np
import pytest
from warp_scenes import aperture_sums, true_calibrated_fluence

import photocalib as pc
from photocalib.warp import SkyGrid, coadd

pytestmark = pytest.mark.slow

SCALE = 0.2  # coadd pixel scale, arcsec
RADIUS = 5.0  # aperture radius, arcsec


def _calibrated_visit(sim, visit: int, detector: int) -> pc.Exposure:
    """Raw -> dome-flattened surface brightness -> fluence, true sky subtracted, true calib."""
    cam, survey = sim.camera, sim.survey
    fluence = true_calibrated_fluence(sim, visit, detector)
    ny, nx = fluence.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    sky = (survey.sky_rate(visit) * survey.visit(visit).exptime * cam.illumination_ratio(detector, xx, yy)
           * fluence.pixel_area_image())
    return fluence.replace(image=fluence.image - sky)


def _moffat_fraction_in_circle(psf, d, radius):
    """Fraction of a (GalSim, untruncated) Moffat centred at distance d inside a circle."""
    r = np.concatenate([np.linspace(0.0, 3.0, 3001)[1:], np.geomspace(3.001, 300.0, 4000)])
    beta, alpha = psf.beta, psf.scale_radius
    profile = (1 + (r / alpha) ** 2) ** (-beta) * (beta - 1) / (np.pi * alpha**2)
    d = np.atleast_1d(d)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.clip((r**2 + d**2 - radius**2) / (2 * r * np.maximum(d, 1e-12)), -1, 1)
        arc = np.where(r + d <= radius, 1.0,
                       np.where((r >= radius + d) | (r <= d - radius), 0.0, np.arccos(cos) / np.pi))
    return np.trapezoid(profile * 2 * np.pi * r * arc, r, axis=1)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from photocalib.sim.testing import small_survey

    # one large detector per visit, small dithers and rotations so the visits overlap
    return small_survey(tmp_path_factory.mktemp("warp-sim"), n_visits=6, n_detectors=1,
                        detector_shape=(1024, 1024), star_density=6e4, star_mag_range=(14.5, 17.5),
                        seed=3, survey_options={"dither_fraction": 0.05, "rotation_range_deg": 10.0})


def test_coadd_of_simulated_visits_matches_truth(sim):
    from photocalib.sim import sky_to_tangent
    from photocalib.sim.render import make_psf

    survey = sim.survey
    assert survey.config.psf == "moffat"
    exposures = [_calibrated_visit(sim, v, d) for v in sim.visits for d in sim.detectors]
    ra0, dec0 = survey.config.ra, survey.config.dec
    n = 1100
    wcs, box = SkyGrid(ra0, dec0, SCALE, n, n, patch_size=n, rotation=17.0).patch(0, 0)
    result = coadd(exposures, wcs, box.shape)

    stars = sim.stars
    flux = stars.flux[survey.band]
    obs = sim.observations.to_pandas()
    saturated = np.isin(stars.star, obs.star[obs.saturated].to_numpy())
    x, y = wcs.sky_to_pixel(stars.ra, stars.dec)
    measured = aperture_sums(result.exposure.image, x, y, RADIUS / SCALE)
    variance = aperture_sums(result.exposure.variance, x, y, RADIUS / SCALE)
    # every visit covers the whole aperture (no patchwork of PSFs)
    r = int(np.ceil(RADIUS / SCALE)) + 1
    full = np.zeros(len(flux), dtype=bool)
    for k, (xc, yc) in enumerate(zip(x, y, strict=True)):
        ix, iy = int(round(float(xc))), int(round(float(yc)))
        if r <= ix < n - r and r <= iy < n - r:
            full[k] = result.count[iy - r : iy + r + 1, ix - r : ix + r + 1].min() == len(exposures)
    # the truth in the aperture: every star's flux times its PSF mix's fraction inside it
    xi, eta = sky_to_tangent(stars.ra, stars.dec, ra0, dec0)
    weights = result.input_weights / result.input_weights.sum()
    psfs = [make_psf(survey, v) for v in sim.visits]
    expected = np.full(len(flux), np.nan)
    for k in np.nonzero(full)[0]:
        dist = np.hypot(xi - xi[k], eta - eta[k])
        near = dist < RADIUS + 60.0
        fraction = sum(w * _moffat_fraction_in_circle(p, dist[near], RADIUS) for w, p in zip(weights, psfs, strict=True))
        expected[k] = np.sum(flux[near] * fraction)
    noise_mag = 1.0857 * np.sqrt(variance) / measured
    isolated = np.abs(expected / flux - 1) < 0.01  # neighbours add < 1 % to the aperture
    bright = full & ~saturated & isolated & (noise_mag < 1e-3)
    assert bright.sum() >= 8
    dm = -2.5 * np.log10(measured[bright] / expected[bright])
    rms = np.sqrt(np.mean(dm**2))
    print(f"{bright.sum()} bright stars: coadd - truth RMS {1e3 * rms:.2f} mmag, mean {1e3 * dm.mean():.2f} mmag")
    assert rms <= 2e-3
