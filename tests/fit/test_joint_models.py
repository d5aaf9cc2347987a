"""Joint models as classes: the registry, and a new model added from outside the package."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from photocalib.errors import InputError
from photocalib.fit import jointmodels
from photocalib.fit.joint import MODELS, fit_joint
from photocalib.fit.jointmodels._base import _REGISTRY
from photocalib.sim.camera import Camera
from photocalib.sim.catalog import observations_from_truth
from photocalib.sim.survey import make_survey


def test_registry_lists_the_three_families():
    assert MODELS == ("separated", "monolithic", "reference-free")
    assert jointmodels.get("monolithic").pixel_area is False
    assert jointmodels.get("reference-free").needs_reference is False
    with pytest.raises(InputError, match="unknown joint model 'nope'.*separated"):
        jointmodels.get("nope")


def test_a_new_model_is_one_class():
    """A grey-only model (a constant star flat per detector) registered here, not in the package,
    fits through fit_joint and equals the separated model of order 0."""
    from photocalib.fit.jointmodels.separated import Separated

    @jointmodels.register
    class GreyOnly(Separated):
        name = "grey-only"

        def blocks(self, n_epdet, n_det, n_visit, has_colour):
            return self.stack(("starflat", "pixel", 0, "epoch_detector", 0.0, n_epdet),
                              ("grey", "tangent", 0, "visit", 0.0, n_visit))

    try:
        camera = Camera.preset("hsc-like", n_detectors=4)
        survey = make_survey(camera, n_visits=4, seed=4)
        obs, wcs, truth = observations_from_truth(camera, survey, density=4e3, seed=6)
        flux = np.asarray(truth.stars["flux"])
        ref = Table({"star": truth.stars["star"], "flux": flux, "flux_err": 0.01 * flux})
        kw = dict(reference=ref, bboxes=truth.bboxes, n_sigma=None)
        new = fit_joint(obs, wcs, model="grey-only", **kw)
        old = fit_joint(obs, wcs, model="separated", star_flat_order=0, **kw)
        assert new.model == "grey-only"
        np.testing.assert_allclose(new.parameters, old.parameters, rtol=1e-10)
        v, d = new.visits[1], new.detectors[2]
        x, y = np.array([10.0, 1500.0]), np.array([20.0, 3000.0])
        np.testing.assert_allclose(new.photo_calib(v, d).field.evaluate(x, y),
                                   old.photo_calib(v, d).field.evaluate(x, y), rtol=1e-10)
    finally:
        _REGISTRY.pop("grey-only", None)
