"""Background matching on the simulator: visits whose skies differ by a level and a gradient
larger than a detector, over an extended halo (photocalib.sim), compared with the truth.

The inputs are dome-flattened fluence images calibrated with the simulator's true calibration
(as in test_coadd_sim.py) and keep their sky, whose calibrated surface brightness is known
exactly: ``S_v g_v(xi, eta) / (K T_v)`` nJy/arcsec²; the halo's is ``survey.halo_sb``.
"""

from __future__ import annotations

import numpy as np
import pytest
from warp_scenes import true_calibrated_fluence

import photocalib as pc
from photocalib.geom import Box
from photocalib.warp import SkyGrid, coadd
from photocalib.warp.bgmatch import match_backgrounds

pytestmark = pytest.mark.slow

SCALE = 0.2  # coadd pixel scale, arcsec
STAR_MASK = 20  # coadd pixels: beyond the truncated Moffat (4 FWHM <= 4") of every visit


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from photocalib.sim import sky_to_tangent
    from photocalib.sim.testing import small_survey

    sim = small_survey(tmp_path_factory.mktemp("bgmatch-sim"), n_visits=6, n_detectors=9, detector_shape=(512, 512),
                       star_density=3e4, star_mag_range=(18.0, 24.0), seed=5,
                       survey_options={"dither_fraction": 0.25, "rotation_range_deg": 20.0, "exptime": 300.0,
                                       "sky_gradient_fraction": 0.03, "halo_fraction": 0.003,
                                       "halo_scale_arcsec": 30.0})
    survey = sim.survey
    exposures = [true_calibrated_fluence(sim, v, d, {"VISIT": v, "DETECTOR": d}) for v in sim.visits for d in sim.detectors]
    n = int(1.6 * sim.camera.field_radius_arcsec / SCALE)
    wcs, box = SkyGrid(survey.config.ra, survey.config.dec, SCALE, n, n, patch_size=n, rotation=17.0).patch(0, 0)
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    ra, dec = wcs.pixel_to_sky(xx, yy)

    def true_sky(visit):
        v = survey.visit(visit)
        xi, eta = sky_to_tangent(ra, dec, v.ra, v.dec)
        return (survey.sky_rate(visit) / survey.electrons_per_njy_s * survey.sky_factor(visit, xi, eta)
                / survey.transmission(visit, 0.0, 0.0))

    stars_x, stars_y = wcs.sky_to_pixel(sim.stars.ra, sim.stars.dec)
    star_mask = np.zeros((n, n), dtype=bool)
    r = STAR_MASK
    for x0, y0 in zip(stars_x, stars_y, strict=True):
        ix, iy = int(round(float(x0))), int(round(float(y0)))
        if -r <= ix < n + r and -r <= iy < n + r:
            star_mask[max(0, iy - r): iy + r + 1, max(0, ix - r): ix + r + 1] = True
    sky_level = float(np.median([true_sky(v)[n // 2, n // 2] for v in sim.visits]))
    return dict(sim=sim, exposures=exposures, wcs=wcs, shape=box.shape, ra=ra, dec=dec, true_sky=true_sky,
                star_mask=star_mask, halo=survey.halo_sb(ra, dec), sky_level=sky_level, xx=xx, yy=yy)


def _halo_net(sb, scene, count):
    """Halo fluence inside 2.5 h minus the level of the 3-4 h annulus (both on star-free pixels
    with data; a constant or linear sky cancels), for an image and for the true halo alike."""
    survey = scene["sim"].survey
    hx, hy = scene["wcs"].sky_to_pixel(*survey.halo_center())
    r = np.hypot(scene["xx"] - hx, scene["yy"] - hy) * SCALE
    h = survey.config.halo_scale_arcsec
    free = ~scene["star_mask"] & (count > 0)
    aperture = r < 2.5 * h
    annulus = (r > 3 * h) & (r < 4 * h) & free
    inside = aperture & free
    area = float(np.sum(aperture)) * SCALE**2

    def net(img):
        return (np.mean(img[inside]) - np.mean(img[annulus])) * area

    return net(sb), net(scene["halo"])


def _flatness(sb, scene, count, block=100):
    """Largest deviation of the star-free block medians of (coadd - true halo) from their median,
    over blocks with at least three inputs on most pixels, as a fraction of the sky level."""
    resid = sb - scene["halo"]
    n = resid.shape[0]
    values = []
    for j in range(n // block):
        for i in range(n // block):
            sl = (slice(j * block, (j + 1) * block), slice(i * block, (i + 1) * block))
            good = (count[sl] >= 3) & ~scene["star_mask"][sl]
            if good.mean() > 0.5:
                values.append(np.median(resid[sl][good]))
    values = np.array(values)
    assert values.size >= 50
    return float(np.max(np.abs(values - np.median(values)))) / scene["sky_level"]


def test_matched_coadd_is_flat_and_keeps_the_halo(scene):
    res = coadd(scene["exposures"], scene["wcs"], scene["shape"], background_matching=True,
                coadd_background_order=1)
    sb = res.exposure.image / res.pixel_area
    # each visit's field against the true difference of the skies
    ref = res.background_reference
    cover = res.count >= 3
    for visit, field in res.background_fields.items():
        truth = scene["true_sky"](visit) - scene["true_sky"](ref)
        err = np.abs(field.fill() - truth)[cover].max() / scene["sky_level"]
        print(f"visit {visit}: matched field - truth max {100 * err:.4f} % of the sky")
        assert err <= 5e-4
    flat = _flatness(sb, scene, res.count)
    measured, true = _halo_net(sb, scene, res.count)
    print(f"matched: sky flat to {100 * flat:.4f} % of the sky; halo {measured:.0f} of {true:.0f} nJy "
          f"({100 * (measured / true - 1):+.2f} %)")
    assert flat <= 5e-4
    assert abs(measured / true - 1) <= 0.05

    # without matching the skies' steps remain
    plain = coadd(scene["exposures"], scene["wcs"], scene["shape"])
    plain_flat = _flatness(plain.exposure.image / plain.pixel_area, scene, plain.count)
    print(f"unmatched: sky flat to {100 * plain_flat:.3f} %")
    assert plain_flat > 10 * flat


def test_per_detector_background_subtraction_loses_the_halo(scene):
    subtracted = []
    for exp in scene["exposures"]:
        calibrated = exp.photo_calib.calibrate_image(exp)
        field = pc.background.estimate(calibrated, mesh_size=64)  # the pipeline's default mesh
        subtracted.append(pc.background.subtract(calibrated, field))
    res = coadd(subtracted, scene["wcs"], scene["shape"])
    measured, true = _halo_net(res.exposure.image / res.pixel_area, scene, res.count)
    lost = 1 - measured / true
    print(f"per-detector background: halo {measured:.0f} of {true:.0f} nJy, {100 * lost:.1f} % lost")
    assert lost > 0.30


def test_matching_on_surface_brightness_warps_against_fluence_warps(scene):
    """The design note expects differences of fluence warps to be needed for the sources to
    cancel. The fluence warp here interpolates surface brightness and multiplies by the output
    pixel area, so a surface-brightness warp is the fluence warp / A_out pixel by pixel, and
    matching on it fits the same fields: the test measures both against the truth."""
    from photocalib.warp import warp_arrays
    from photocalib.warp.coadd import _footprint_box

    wcs, shape = scene["wcs"], scene["shape"]
    grid = Box(0, 0, shape[1], shape[0])
    area = wcs.pixel_area_field(grid).fill()
    pieces_f, pieces_s, keys = [], [], []
    for exp in scene["exposures"]:
        calibrated = exp.photo_calib.calibrate_image(exp)
        sub = _footprint_box(calibrated.wcs, calibrated.shape, wcs, grid)
        sl = (slice(sub.y0, sub.y0 + sub.height), slice(sub.x0, sub.x0 + sub.width))
        for mode, out in (("fluence", pieces_f), ("surface_brightness", pieces_s)):
            src = calibrated if mode == "fluence" else calibrated.to_surface_brightness()
            w = warp_arrays(np.asarray(src.image), src.wcs, wcs, sub.shape, variance=np.asarray(src.variance),
                            mask=np.asarray(src.mask), mode=mode, src_area=calibrated.pixel_area_image(),
                            dst_area=area[sl], origin=(sub.x0, sub.y0))
            ok = np.isfinite(w.image) & np.isfinite(w.variance) & (w.variance > 0)
            ok &= (w.mask & np.uint32(pc.warp.DEFAULT_BAD_MASK)) == 0
            out.append((sub, w.image, w.variance, w.mask, ok))
        meta = exp.metadata
        keys.append((meta["VISIT"], meta["DETECTOR"]))
    on_fluence = match_backgrounds(pieces_f, keys, area)
    # SB warps: differences already in nJy/arcsec², so the area divisor is one
    on_sb = match_backgrounds(pieces_s, keys, np.ones_like(area), reference=on_fluence.reference)
    ref = on_fluence.reference
    errors = {}
    for name, m in (("fluence", on_fluence), ("surface brightness", on_sb)):
        worst = 0.0
        for visit, field in m.fields.items():
            truth = scene["true_sky"](visit) - scene["true_sky"](ref)
            worst = max(worst, float(np.sqrt(np.mean((field.fill() - truth) ** 2))))
        errors[name] = worst / scene["sky_level"]
        print(f"matching on {name} warps: worst per-visit RMS error {100 * errors[name]:.5f} % of the sky")
    # Not worse and not better: equal to well below the errors themselves.
    assert abs(errors["surface brightness"] - errors["fluence"]) <= 0.01 * errors["fluence"]
