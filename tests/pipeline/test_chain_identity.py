"""The pipeline's per-detector step is the library's chain: `photocalib run` and a direct call
of :func:`photocalib.fit.process_detector` on the same detector of a simulated survey give the
same catalog and the same single-detector calibrations, value for value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

import photocalib as pc
from photocalib.fit import process_detector
from photocalib.isr import DomeFlat
from photocalib.pipeline import find_inputs, run_pipeline
from photocalib.pipeline.config import Config
from photocalib.pipeline.layout import RunLayout


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    from photocalib.sim.testing import small_survey

    return small_survey(tmp_path_factory.mktemp("sim"), n_visits=2, n_detectors=2, truth_maps_on=False)


def test_pipeline_and_library_chain_agree(survey, tmp_path):
    # Non-default options everywhere, so a knob the pipeline failed to pass on would show.
    config = Config().with_overrides(
        background={"mesh_size": 32, "order": 2},
        measure={"threshold": 6.0, "aperture_arcsec": 1.5, "min_snr": 30.0},
        calibration={"single_order": 1, "joint": False},
        warp={"enabled": False}, report={"enabled": False}, dask={"progress": False})
    run_pipeline(find_inputs(survey.out_dir), tmp_path / "run", config, in_process=True, report=False)
    layout = RunLayout(tmp_path / "run")
    visit, det = survey.visits[1], survey.detectors[1]

    with fits.open(survey.raw_paths[visit]) as hdul:
        hdu = next(h for h in hdul[1:] if h.header.get("DETECTOR") == det)
        flat = DomeFlat.read(survey.dome_flat_paths[det], wcs=pc.SkyWcs.from_header(hdu.header, hdulist=hdul))
        ref = pd.read_parquet(survey.out_dir / "refcat.parquet")
        lib = process_detector(hdu, flat, ref, isr=config.isr, background=config.background,
                               measure=config.measure, single=config.calibration)

    cat = pd.read_parquet(layout.catalog(visit, det))
    assert (cat["visit"] == visit).all() and (cat["detector"] == det).all()
    expected = lib.catalog.to_pandas()
    assert len(expected) >= 15 and (expected["ref_index"] >= 0).sum() >= 10
    pd.testing.assert_frame_equal(cat.drop(columns=["visit", "detector"]), expected, check_exact=True)

    assert sorted(lib.calibrations) == ["jacobian-aware", "legacy"]
    for name, calib in lib.calibrations.items():
        on_disk = pc.PhotoCalib.read(layout.single_calib(visit, det, legacy=(name == "legacy")))
        assert on_disk == calib, name
    assert lib.calibrations["jacobian-aware"].kind is pc.ImageKind.FLUENCE
    assert lib.calibrations["legacy"].kind is pc.ImageKind.SURFACE_BRIGHTNESS

    exp = pc.Exposure.read(layout.exposure(visit, det))
    np.testing.assert_array_equal(exp.image, lib.exposure.image)
    assert exp.kind is lib.exposure.kind is pc.ImageKind.FLUENCE


def test_chain_accepts_an_exposure_that_is_already_flat_fielded(survey):
    # What `photocalib run --processed` feeds it: the flat-fielded image, no ISR.
    visit, det = survey.visits[0], survey.detectors[0]
    with fits.open(survey.raw_paths[visit]) as hdul:
        hdu = next(h for h in hdul[1:] if h.header.get("DETECTOR") == det)
        wcs = pc.SkyWcs.from_header(hdu.header, hdulist=hdul)
        flat = DomeFlat.read(survey.dome_flat_paths[det], wcs=wcs)
        from_raw = process_detector(hdu, flat)
        sb = pc.isr.isr_from_hdu(hdu, flat, wcs=wcs)
    from_sb = process_detector(sb)
    pd.testing.assert_frame_equal(from_sb.catalog.to_pandas(), from_raw.catalog.to_pandas())
    with pytest.raises(pc.InputError, match="already flat-fielded"):
        process_detector(sb, flat)
    with pytest.raises(pc.InputError, match="dome flat"):
        process_detector(hdu)
