"""The simulator's decam-like (2 amplifiers) and hsc-like (4) raws, each amplifier with its own
overscan, gain, read noise, bias drift and saturation, through multi-amplifier ISR and the
pipeline: the flat-fielded image must not show the amplifiers."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from photocalib.isr import DomeFlat, isr_from_hdu
from photocalib.sim import simulate
from photocalib.sim.camera import PRESET_AMPLIFIERS, Camera


def _survey(out, preset, n_amp):
    return simulate(out, preset=preset, n_visits=1, detector_shape=(96, 128), n_detectors=1,
                    star_density=3e5, star_mag_range=(17.0, 21.0), truth_maps_on=False,
                    camera_options={"n_amplifiers": n_amp})


def _isr(res, out, visit, det):
    with fits.open(out / "raw" / f"visit-{visit:06d}.fits") as h:
        hdu = h[f"DET{det:03d}"]
        hdu = fits.ImageHDU(hdu.data.copy(), header=hdu.header.copy())
    flat = DomeFlat.read(out / "flats" / f"dome-r-{det:03d}.fits")
    return hdu.header, isr_from_hdu(hdu, flat)


@pytest.mark.parametrize("preset", ["decam-like", "hsc-like"])
def test_amplifiers_vanish_after_isr(tmp_path, preset):
    n_amp = PRESET_AMPLIFIERS[preset]
    assert Camera.preset(preset, detector_shape=(96, 128), n_detectors=2,
                         amplifiers=True).config.n_amplifiers == n_amp
    multi = _survey(tmp_path / "multi", preset, n_amp)
    single = _survey(tmp_path / "single", preset, 1)
    visit = multi.visits[0]
    header, exp = _isr(multi, tmp_path / "multi", visit, 0)
    _, ref = _isr(single, tmp_path / "single", visit, 0)
    assert header["NAXIS1"] == 128 + n_amp * 16 and exp.shape == (96, 128)
    gains = [header[f"GAIN{L}"] for L in "ABCD"[:n_amp]]
    assert max(gains) / min(gains) > 1.03  # the amplifiers really differ
    w = 128 // n_amp
    # Same electrons, independent noise: per amplifier, the sky level of the flat-fielded image
    # agrees with the one-amplifier raw's to its noise, and the variance plane is the scatter.
    for k in range(n_amp):
        cols = slice(k * w, (k + 1) * w)
        a, b = exp.image[:, cols], ref.image[:, cols]
        sky = np.median(a) / np.median(b)
        sigma = np.sqrt(np.median(exp.variance[:, cols]))
        assert abs(sky - 1) < 5 * sigma / np.median(a) / np.sqrt(a.size / 4)
        diff = (a - b)[exp.mask[:, cols] == 0]
        mad = 1.4826 * np.median(np.abs(diff - np.median(diff))) / np.sqrt(2)
        assert mad / sigma == pytest.approx(1.0, abs=0.1)


@pytest.mark.slow
def test_pipeline_on_two_amplifier_raws(tmp_path):
    """`photocalib run` on a decam-like survey read through two amplifiers: the joint
    calibration matches the one of the same survey read through one amplifier."""
    import pandas as pd

    from photocalib.pipeline import find_inputs
    from photocalib.pipeline.config import Config
    from photocalib.pipeline.runner import run_pipeline

    cfg = Config().with_overrides(dask={"progress": False}, report={"enabled": False})
    mags = {}
    for n_amp in (1, 2):
        out = tmp_path / f"amp{n_amp}"
        simulate(out / "survey", preset="decam-like", n_visits=3, detector_shape=(256, 256),
                 n_detectors=2, star_density=2e5, star_mag_range=(16.0, 21.0),
                 truth_maps_on=False, camera_options={"n_amplifiers": n_amp})
        result = run_pipeline(find_inputs(out / "survey"), out / "run", cfg, in_process=True)
        assert not result.failed and "joint" not in result.skipped
        cats = [pd.read_parquet(p) for p in sorted((out / "run" / "catalogs").rglob("*.calibrated.parquet"))]
        cat = pd.concat(cats)
        cat = cat[(cat["flags"] == 0) & (cat["snr"] > 100)]
        mags[n_amp] = float(np.median(cat["mag"] - cat["ref_mag"])) if "ref_mag" in cat else \
            float(np.median(-2.5 * np.log10(cat["flux_nJy"] / cat["ref_flux"])))
    assert abs(mags[2] - mags[1]) < 0.005
