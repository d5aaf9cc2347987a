"""A run whose reference is in another photometric system records the colour term it used
(``calib/colour_term/``) and draws it in the report against the measured offsets of its stars.

The image is the real SDSS r frame in tests/data (a processed image with its own calibration).
The reference is a Gaia DR3-format table (Vega G, BP, RP magnitudes) made from that frame's own
calibrated stars: each star gets a BP − RP colour and a G magnitude such that the synthetic
Gaia → SDSS r colour term the pipeline picks carries G back to the star's r. So the stars'
measured offsets r(calibrated) − G must follow that term up to one constant (the calibration's
zero point and the aperture of the reference photometry), which the test checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table
from pipeline_chromium import chromium_path, probe_page

import photocalib as pc
from photocalib.pipeline import find_inputs
from photocalib.pipeline.config import Config
from photocalib.pipeline.layout import RunLayout
from photocalib.pipeline.runner import run_pipeline
from photocalib.refcat import ColourTerm, colour_term_for
from photocalib.refcat.catalogs import GAIA_ZERO_POINTS

SDSS = Path(__file__).resolve().parents[1] / "data" / "sdss" / "frame-r-002583-2-0136.fits.bz2"
CONFIG = Config().with_overrides(dask={"progress": False}, warp={"coadd_size": 128})


def _gaia_like_reference(path: Path, term: ColourTerm) -> None:
    from photocalib.fit import process_detector

    exp = pc.read_exposures(SDSS)[0]
    # The frame's own stars, measured as the pipeline measures them (so galaxies, whose
    # flux depends on the aperture, agree too) and calibrated by the frame's own calibration.
    cfg = Config()
    cat = process_detector(exp, None, None, isr=cfg.isr, background=cfg.background,
                           measure=cfg.measure, single=cfg.calibration).catalog
    ok = (np.asarray(cat["flags"]) == 0) & (np.asarray(cat["snr"]) > 20)
    x, y = np.asarray(cat["x"], float)[ok], np.asarray(cat["y"], float)[ok]
    inst = np.asarray(cat["instflux"], float)[ok]
    r_ab = -2.5 * np.log10(exp.photo_calib.instflux_to_nanojansky(inst, x, y) / 3631e9)
    ra, dec = exp.wcs.pixel_to_sky(x, y)
    lo, hi = term.colour_range
    colour = np.random.default_rng(7).uniform(lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo), x.size)
    g_ab = r_ab - term(colour)             # so that term(colour) = r − G
    rp_ab = g_ab - 0.4                     # any G − RP: the term sees only G and BP − RP
    bp_ab = rp_ab + colour
    zp = GAIA_ZERO_POINTS["gaia-dr3"]
    vega = {b: zp["ab"][b] - zp["vega"][b] for b in ("G", "BP", "RP")}   # AB − Vega
    Table({"source_id": np.arange(x.size, dtype=np.int64) + 1000, "ra": ra, "dec": dec,
           "ref_epoch": np.full(x.size, 2016.0),
           "phot_g_mean_mag": g_ab - vega["G"], "phot_bp_mean_mag": bp_ab - vega["BP"],
           "phot_rp_mean_mag": rp_ab - vega["RP"]}).write(path)


@pytest.fixture(scope="module")
def gaia_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("colour-term-run")
    meta = {"system": "gaia-dr3", "bandpasses": {b: f"gaiadr3-{b}" for b in ("G", "BP", "RP")}}
    term = colour_term_for(meta, pc.instruments.get("SDSS").bandpass("r"), "r")
    ref = tmp / "gaia.fits"
    _gaia_like_reference(ref, term)
    inputs = find_inputs(raw=[str(SDSS)], refcat=ref, processed=True)
    result = run_pipeline(inputs, tmp / "run", CONFIG, in_process=True, report=True)
    return inputs, result, RunLayout(tmp / "run"), term


def test_the_colour_term_used_is_written_and_reads_back(gaia_run):
    inputs, result, run, term = gaia_run
    assert not result.failed
    assert term.method == "synthetic" and term.reference_band == "G"   # Gaia → SDSS r: no published one
    (unit,) = inputs.units
    path = run.colour_term(unit.visit, unit.detector)
    assert path.is_file()
    back = ColourTerm.read(path)
    # Coefficients are a float64 table column (exact); rms is a header card (about 16 digits).
    np.testing.assert_array_equal(back.coefficients, term.coefficients)
    for name in ("reference_band", "target_band", "colour_bands", "colour_range", "n_stars",
                 "n_rejected", "method"):
        assert getattr(back, name) == getattr(term, name), name
    assert back.rms == pytest.approx(term.rms, rel=1e-14)
    assert back.describe() == term.describe()


def test_the_measured_offsets_follow_the_term(gaia_run):
    _, _, run, term = gaia_run
    df = pd.read_parquet(run.tables / "colour_term.parquet")
    assert len(df) > 30 and set(df["band"]) == {"r"}
    resid = df["offset_mag"].to_numpy() - term(df["colour"].to_numpy())
    resid -= np.median(resid)
    # The term changes by tens of mmag over the colours used; the offsets follow it to a few mmag.
    c = df["colour"].to_numpy()
    assert np.ptp(term(c)) > 0.03
    assert 1.4826 * np.median(np.abs(resid)) < 0.003
    slope = np.polyfit(c, df["offset_mag"].to_numpy(), 1)[0]
    expect = np.polyfit(c, term(c), 1)[0]
    assert abs(slope - expect) < 0.2 * abs(expect)


def test_the_report_draws_the_colour_term_panel(gaia_run):
    _, result, run, _ = gaia_run
    html = result.report.read_text()
    assert "Colour-term fit" in html and "src='colour_term.png'" in html
    assert (run.report_dir / "colour_term.png").stat().st_size > 5000
    if chromium_path() is None:
        pytest.skip("Debian's chromium is not installed; the panel's rendering is not checked")
    n_images, n_loaded, dom = probe_page(result.report)
    assert n_images == n_loaded and "colour_term.png" in dom
