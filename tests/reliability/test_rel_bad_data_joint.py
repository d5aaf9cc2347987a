"""Reliability: duplicate (visit, detector, star) rows and conflicting duplicate reference rows
are refused by the joint fit; an unconstrained star flat that goes negative names its detector;
a noiseless constant image has the constant as its background."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import vstack

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_rel_bad_data import (  # noqa: E402
    NX,
    NY,
    _exposure,
    joint_small,  # noqa: F401 - a fixture
    wcs,  # noqa: F401 - a fixture
)

from photocalib.errors import InputError  # noqa: E402
from photocalib.fit import fit_joint  # noqa: E402


def test_joint_duplicate_observations_are_refused_or_excluded(joint_small):  # noqa: F811
    obs, wcs_, truth, ref = joint_small
    dup = vstack([obs, obs[:20]])
    try:
        sol = fit_joint(dup, wcs_, reference=ref, bboxes=truth.bboxes, star_flat_order=1)
    except InputError as exc:
        row = obs[0]
        assert "duplicate" in str(exc) and str(row["star"]) in str(exc)
        return
    assert any("duplicate" in str(r["reason"]) for r in sol.excluded)


def test_joint_conflicting_reference_duplicates_are_refused(joint_small):  # noqa: F811
    obs, wcs_, truth, ref = joint_small
    extra = ref[:3].copy()
    extra["flux"] = 2.0 * extra["flux"]
    with pytest.raises(InputError, match="duplicate") as info:
        fit_joint(obs, wcs_, reference=vstack([ref, extra]), bboxes=truth.bboxes, star_flat_order=1)
    assert str(ref["star"][0]) in str(info.value)


def test_joint_star_flat_beyond_its_stars_is_refused_or_positive(joint_small):  # noqa: F811
    # 30 observations of one detector, all in one corner: an order-3 star flat is unconstrained
    # elsewhere. Either the fit says so, naming the detector, or its calibration is usable.
    obs, wcs_, truth, ref = joint_small
    o = obs[:30]
    v, d = int(o["visit"][0]), int(o["detector"][0])
    try:
        sol = fit_joint(o, wcs_, reference=ref, bboxes=truth.bboxes, star_flat_order=3)
        calib = sol.photo_calib(v, d)
    except InputError as exc:
        assert f"detector {d}" in str(exc) or f"({v}, {d})" in str(exc), str(exc)
        return
    box = truth.bboxes[(v, d)] if (v, d) in truth.bboxes else truth.bboxes[d]
    values = calib.field.fill() if calib.field.bbox is not None else calib.field.evaluate(
        np.array([box.x0, box.x0 + box.width - 1]), np.array([box.y0, box.y0 + box.height - 1]))
    assert np.all(np.isfinite(values)) and np.all(values > 0)




def test_background_of_a_noiseless_constant_image_is_the_constant(wcs):  # noqa: F811
    # Every mesh has zero scatter; the Chebyshev fit gets zero weights and refuses with a message
    # about "matched sources". A flat sky has a flat background.
    from photocalib import background

    exp = _exposure(wcs, np.full((NY, NX), 42.0), variance=np.full((NY, NX), 1.0))
    model = background.estimate(exp, mesh_size=32).fill()
    np.testing.assert_allclose(model, 42.0, rtol=1e-12)
