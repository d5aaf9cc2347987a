"""Acceptance of issue 4 against simulator truth (hsc-like): calibration, apertures, background.

One visit of four 1024² hsc-like detectors around the optical axis (the pixel area falls by
~9 % across each, towards the field edge), rendered by photocalib.sim (GalSim), with dome and
sky illumination equal so the only position-dependent factor between true flux and a
dome-flat-fielded aperture sum is the pixel area: the effect under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from scipy.spatial import cKDTree

from photocalib import background, measure
from photocalib.fit import fit_single, match_reference
from photocalib.isr import DomeFlat, isr_from_hdu

DETECTORS = 4


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from photocalib.sim import simulate

    return simulate(
        tmp_path_factory.mktemp("sim_single"),
        preset="hsc-like",
        n_visits=1,
        detector_shape=(1024, 1024),
        n_detectors=DETECTORS,
        seed=11,
        star_density=3.0e4,
        star_mag_range=(14.5, 19.5),
        refcat_mag_max=19.5,
        # Sky and dome illumination agree (no star flat), and a deep well with a high gain so
        # stars bright enough for sub-mmag photon noise do not saturate.
        camera_options={"dome_gradient": 0.0, "dome_radial": 0.0, "full_well_e": 1.5e6, "gain_mean": 25.0},
        survey_options={"exptime": 120.0},
        scheduler="threads",
    )


@pytest.fixture(scope="module")
def processed(sim):
    """Per detector: SB exposure, background, background-subtracted fluence, sources with truth."""
    ref = Table({k: np.asarray(sim.refcat[k]) for k in ("star", "ra", "dec", "flux", "flux_err")})
    obs = sim.observations.to_pandas()
    visit = sim.visits[0]
    out = {}
    for det in sim.detectors:
        raw, header = sim.read_raw(visit, det)
        flat, flat_header = sim.read_dome_flat(det)
        sb = isr_from_hdu(fits.ImageHDU(raw, header), DomeFlat.from_array(flat, header=flat_header))
        bg = background.estimate(sb, mesh_size=128)
        fl = background.subtract(sb, bg).to_fluence()
        found = measure.detect(fl, 10.0)
        x, y = np.asarray(found["x"]), np.asarray(found["y"])
        phot = measure.aperture_photometry(fl, x, y, radius_arcsec=2.0)
        flags = np.asarray(phot["flags"]) | np.where(found["blended"] | found["saturated"], 1 << 10, 0)
        ra, dec = fl.wcs.pixel_to_sky(x, y)
        phot["ra"], phot["dec"], phot["flags"] = ra, dec, flags
        m = match_reference(phot, ref, 0.5)
        truth = obs[(obs.visit == visit) & (obs.detector == det)].set_index("star")
        star = np.where(m["ref_index"] >= 0, np.asarray(ref["star"])[np.maximum(m["ref_index"], 0)], -1)
        m["true_flux"] = truth.flux_njy.reindex(star).to_numpy()
        m["saturated_truth"] = truth.saturated.reindex(star).fillna(True).to_numpy(dtype=bool)
        m["area"] = fl.wcs.pixel_area(x, y)
        m["radius"] = np.hypot(*sim.camera.focal_plane(det, x, y))  # mm from the optical axis
        m["instflux_sb"] = m["instflux"] / m["area"]  # what the same aperture sums on the SB image
        m["instflux_sb_err"] = m["instflux_err"] / m["area"]
        # Isolation from the truth (every rendered star, detected or not): no neighbour within
        # 4" brighter than 1 % of the star; blending is not what these tests are about.
        tree = cKDTree(np.column_stack([truth.x.to_numpy(), truth.y.to_numpy()]))
        reach = 4.0 / sim.camera.config.pixel_scale_arcsec
        pairs = tree.query_ball_point(np.column_stack([x, y]), reach)
        tflux = truth.flux_njy.to_numpy()
        own = np.asarray(m["true_flux"])
        crowded = np.array([np.sum(tflux[idx] > 0.01 * f) > 1 for idx, f in zip(pairs, own, strict=True)])
        snr = np.asarray(m["instflux"]) / np.asarray(m["instflux_err"])
        m["good"] = (
            (m["ref_index"] >= 0) & (m["flags"] == 0) & ~m["saturated_truth"] & np.isfinite(m["true_flux"])
            & (snr > 100) & ~crowded
        )
        out[det] = {"sb": sb, "bg": bg, "fluence": fl, "cat": m}
    return out


def _trend(v, resid, err=None):
    """Weighted least-squares slope of resid against v, times the range of v (the trend's size).

    Returns (trend, its 1-sigma error)."""
    w = np.ones_like(v) if err is None else 1.0 / np.asarray(err) ** 2
    a = np.vstack([np.ones_like(v), v - np.average(v, weights=w)]).T
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(a * sw[:, None], resid * sw, rcond=None)
    cov = np.linalg.inv((a * w[:, None]).T @ a)
    chi2 = np.sum(w * (resid - a @ coef) ** 2) / max(v.size - 2, 1)
    return coef[1] * np.ptp(v), np.sqrt(cov[1, 1] * max(chi2, 1.0)) * np.ptp(v)


def test_jacobian_aware_calibration_meets_2_mmag_and_legacy_shows_area_trend(processed):
    report = []
    for det, p in processed.items():
        cat = p["cat"][p["cat"]["good"]]
        box = p["fluence"].bbox
        fit = fit_single(cat, mode="fluence", bbox=box)
        sbfit = fit_single(cat, mode="surface-brightness", wcs=p["fluence"].wcs, bbox=box)
        legacy = fit_single(cat, mode="legacy", bbox=box, nsigma=10.0)
        truth = np.asarray(cat["true_flux"])
        resid = -2.5 * np.log10(fit.photo_calib.instflux_to_nanojansky(cat["instflux"]) / truth)
        resid_sb = -2.5 * np.log10(
            sbfit.photo_calib.instflux_to_nanojansky(cat["instflux_sb"], cat["x"], cat["y"]) / truth
        )
        resid_legacy = -2.5 * np.log10(legacy.photo_calib.instflux_to_nanojansky(cat["instflux_sb"]) / truth)
        bright = np.asarray(cat["instflux"] / cat["instflux_err"]) > 1000  # photon noise < 1.1 mmag
        assert bright.sum() >= 8, f"detector {det}: only {bright.sum()} bright stars"
        rms = np.sqrt(np.mean(resid[bright] ** 2))
        rms_sb = np.sqrt(np.mean(resid_sb[bright] ** 2))
        radius = np.asarray(cat["radius"])
        mag_err = 1.0857 * np.asarray(cat["instflux_err"] / cat["instflux"])
        trend, trend_err = _trend(radius, resid, mag_err)
        trend_legacy, _ = _trend(radius, resid_legacy, mag_err)
        area_trend = 2.5 * np.log10(np.ptp(cat["area"]) / np.mean(cat["area"]) + 1)
        report.append((det, bright.sum(), 1e3 * rms, 1e3 * rms_sb, 1e3 * trend, 1e3 * trend_err, 1e3 * trend_legacy,
                       1e3 * np.ptp(resid_legacy), 1e3 * area_trend))
        assert rms <= 2e-3 and rms_sb <= 2e-3, f"detector {det}: {1e3 * rms:.2f} / {1e3 * rms_sb:.2f} mmag"
        assert abs(trend) <= 1e-3, f"detector {det}: radial trend {1e3 * trend:.2f} mmag"
        # Legacy: one constant on SB photometry leaves the area's radial trend (tens of mmag).
        assert abs(trend_legacy) > 20e-3 and abs(trend_legacy) > 20 * abs(trend)
        assert np.corrcoef(resid_legacy, np.log(np.asarray(cat["area"])))[0, 1] > 0.9
    print("\ndet n_bright rms_F rms_SB trend_F +- err trend_legacy ptp_legacy area_range (mmag)")
    for row in report:
        print("{:3d} {:8d} {:6.2f} {:6.2f} {:7.2f} {:5.2f} {:12.1f} {:10.1f} {:10.1f}".format(*row))


def test_angular_apertures_are_position_independent_pixel_apertures_are_not(processed, sim):
    r_arcsec = 2.0  # the calibration aperture
    axis_scale = sim.camera.config.pixel_scale_arcsec
    ln_area, ln_ang, err, ln_pix, slope_ee = [], [], [], [], []
    for p in processed.values():
        fl = p["fluence"]
        cat = p["cat"][p["cat"]["good"]]
        x, y = np.asarray(cat["x"]), np.asarray(cat["y"])
        ang = measure.aperture_photometry(fl, x, y, radius_arcsec=r_arcsec, flag_blends=False)
        pix = measure.aperture_photometry(fl, x, y, radius=r_arcsec / axis_scale, flag_blends=False)
        cog = measure.curve_of_growth(fl, x, y, [r_arcsec / 1.1, r_arcsec * 1.1])
        ln_area.append(np.log(np.asarray(cat["area"])))
        ln_ang.append(np.log(np.asarray(ang["instflux"]) / np.asarray(cat["true_flux"])))
        err.append(np.asarray(ang["instflux_err"]) / np.asarray(ang["instflux"]))
        ln_pix.append(np.log(np.asarray(pix["instflux"]) / np.asarray(ang["instflux"])))
        slope_ee.append(np.log(cog["instflux"][:, 1] / cog["instflux"][:, 0]) / np.log(1.1**2))
    ln_area, ln_ang, err, ln_pix, s = (np.concatenate(v) for v in (ln_area, ln_ang, err, ln_pix, slope_ee))
    bright = 1.0 / err > 300
    s_med = np.median(s[bright])
    # The angular aperture's flux does not depend on where the star is (≤ 1 mmag over the area range).
    trend_ang, trend_ang_err = (1.0857 * t for t in _trend(ln_area, ln_ang, err))
    # A fixed pixel aperture covers r·sqrt(A/A_axis) arcsec: ln F_pix/F_ang = s · ½ ln(A / A_axis).
    predicted = s_med * 0.5 * (ln_area - np.log(axis_scale**2))
    trend_pix = 1.0857 * _trend(ln_area[bright], ln_pix[bright])[0]
    trend_pred = 1.0857 * _trend(ln_area[bright], predicted[bright])[0]
    print(f"\nd ln EE/d ln r at {r_arcsec}\" = {s_med:.3f}; angular trend {1e3 * trend_ang:.2f} "
          f"+- {1e3 * trend_ang_err:.2f} mmag; pixel-aperture trend {1e3 * trend_pix:.2f} mmag "
          f"(predicted {1e3 * trend_pred:.2f}) over ln A range {np.ptp(ln_area):.3f}")
    assert abs(trend_ang) <= 1e-3, f"angular-aperture trend {1e3 * trend_ang:.2f} mmag"
    assert abs(trend_pix) > 2e-3 and abs(trend_pix) > 3 * abs(trend_ang)
    assert trend_pix == pytest.approx(trend_pred, rel=0.25)


def test_background_on_sb_is_flat_and_on_fluence_keeps_the_area(processed, sim):
    visit = sim.visits[0]
    v = sim.survey.visit(visit)
    sky_sb = sim.survey.sky_rate(visit) * v.exptime  # e-/arcsec², uniform (sky and dome agree)
    for det, p in processed.items():
        model = p["bg"].fill()
        assert np.abs(model / sky_sb - 1).max() <= 1e-3, f"detector {det}"
        # A uniform sky as one constant: exact on SB, the area pattern on fluence.
        sb = p["sb"]
        const_sb = background.estimate(sb, order=0).fill()
        assert np.abs(const_sb / sky_sb - 1).max() <= 1e-3
        fl = sb.to_fluence()
        wrong = background.estimate(fl.replace(kind="SURFACE_BRIGHTNESS", unit="count/arcsec2"), order=0)
        area = fl.pixel_area_image()
        left = (sky_sb * area - wrong.fill()) / (sky_sb * area)  # what subtraction leaves, as sky fraction
        assert np.ptp(left) > 0.03
        assert np.corrcoef(left[::16, ::16].ravel(), area[::16, ::16].ravel())[0, 1] > 0.99


def test_process_detector_writes_a_calibrated_catalog(sim, tmp_path):
    from photocalib.background import BackgroundConfig
    from photocalib.fit import SingleFitConfig, process_detector, read_catalog, write_catalog
    from photocalib.measure import MeasureConfig

    ref = Table({k: np.asarray(sim.refcat[k]) for k in ("star", "ra", "dec", "flux", "flux_err")})
    visit, det = sim.visits[0], sim.detectors[0]
    raw, header = sim.read_raw(visit, det)
    flat, flat_header = sim.read_dome_flat(det)
    out = process_detector(fits.ImageHDU(raw, header), DomeFlat.from_array(flat, header=flat_header), ref,
                           background=BackgroundConfig(mesh_size=128),
                           measure=MeasureConfig(threshold=10.0, min_snr=50.0),
                           single=SingleFitConfig(compare_legacy=False))
    cat = out.catalog
    assert out.exposure.kind.value == "FLUENCE" and out.exposure.photo_calib is out.fit.photo_calib
    for col in ("instflux", "instflux_err", "instflux_nJy", "instflux_nJy_err", "instflux_mag",
                "instflux_mag_err", "flags", "pixel_area", "kind", "ra", "dec", "ref_flux"):
        assert col in cat.colnames, col
    truth = sim.observations.to_pandas()
    truth = truth[(truth.visit == visit) & (truth.detector == det)].set_index("star")
    m = (np.asarray(cat["ref_index"]) >= 0) & (np.asarray(cat["flags"]) == 0)
    star = np.asarray(ref["star"])[np.asarray(cat["ref_index"])[m]]
    true_flux = truth.flux_njy.reindex(star).to_numpy()
    snr = np.asarray(cat["instflux"] / cat["instflux_err"])[m]
    resid = -2.5 * np.log10(np.asarray(cat["instflux_nJy"])[m] / true_flux)
    ok = np.isfinite(resid) & (snr > 500)
    assert ok.sum() > 10 and abs(np.median(resid[ok])) < 2e-3
    write_catalog(cat, tmp_path / "cat.parquet")
    back = read_catalog(tmp_path / "cat.parquet")
    assert back.meta["visit"] == visit and back.meta["detector"] == det and back.meta["kind"] == "FLUENCE"
