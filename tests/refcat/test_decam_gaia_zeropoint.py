"""The DECam comparison of examples/decam_gaia_zeropoint.py on the real legacypipe testcase6
cutouts: Gaia DR2 chunk + Gaia → DECam colour term against the Legacy Surveys' ccdzpt.

Each 101×101 cutout holds exactly one Gaia star, a G = 10.5 star that saturates DECam (its core
and bleed trail are flagged in the ood quality map), so no star is usable and the comparison
has no zero point: the example says so instead of inventing one. The test checks that reading,
epoch propagation, matching, masks and the colour term agree with that, and that the survey's
own zero point, with the Gaia magnitude carried into DECam, predicts the saturation."""

from __future__ import annotations

import glob
import math
import runpy
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

ROOT = Path(__file__).parents[1] / "data" / "decam-cp" / "testcase6"
EXAMPLE = Path(__file__).parents[2] / "examples" / "decam_gaia_zeropoint.py"


@pytest.fixture(scope="module")
def results():
    compare = runpy.run_path(str(EXAMPLE))["compare"]
    ccds = Table.read(ROOT / "survey-ccds-1.fits.gz")
    gaia = sorted(glob.glob(str(ROOT / "gaia" / "chunk-*.fits")))
    images = sorted(glob.glob(str(ROOT / "images" / "**" / "*ooi*.fits"), recursive=True))
    assert len(images) == 6
    return [(path, compare(path, gaia, ccds)) for path in images]


def test_each_cutout_holds_one_saturated_gaia_star_and_no_zero_point_is_made(results):
    for _, r in results:
        assert r["n_gaia"] == 1, r
        assert r["n_used"] == 0 and math.isnan(r["zp"]) and r["expected"] == math.inf
        assert r["masked_fraction"][0] >= 0.9          # core and bleed trail flagged by the CP
        assert 10.3 < r["ref_mag"][0] < 10.9           # G = 10.52 carried into g, r, z
        assert r["colour_term"].startswith(f"decam_{r['band']} − G")


def test_the_survey_zero_point_predicts_the_saturation(results):
    ccds = Table.read(ROOT / "survey-ccds-1.fits.gz")
    for path, r in results:
        row = ccds[[Path(str(f).strip()).name == Path(path).name for f in ccds["image_filename"]]][0]
        total = r["exptime"] * 10 ** (0.4 * (r["ccdzpt"] - r["ref_mag"][0]))   # counts
        fwhm = float(row["fwhm"])                                              # pixels
        peak = total * 4 * math.log(2) / (math.pi * fwhm**2)
        saturate = fits.getheader(path, 1)["SATURATE"]
        assert peak > 10 * saturate, (r["file"], peak, saturate)


def test_the_star_lands_where_the_image_has_it(results):
    """Gaia positions moved to the exposure epoch fall on the saturated core (the mask's centroid)."""
    for path, r in results:
        mask = fits.getdata(path.replace("_ooi_", "_ood_"), 1)
        x, y = r["xy"][0]
        yy, xx = np.nonzero(mask == 3)   # CP code 3: saturated
        near = np.hypot(xx - x, yy - y) < 15
        assert near.sum() > 20
        assert np.hypot(np.median(xx[near]) - x, np.median(yy[near]) - y) < 3.0
