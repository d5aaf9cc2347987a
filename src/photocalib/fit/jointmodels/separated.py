"""``separated`` (meas_mosaic-like): pixel area × star flat per detector and epoch × grey per visit.

``c = A(x, y) · S_{e,d}(x, y) · G_v(ξ, η)``: the Jacobian ``A`` is known from the WCS (for fluxes
measured on surface-brightness images), so only the fluence-to-fluence mapping is fitted.
Reference fluxes are measurements of their stars in χ².
"""

from __future__ import annotations

import numpy as np

from ._base import JointModel, mean_of_groups, register


@register
class Separated(JointModel):
    """Star flat ``S_{e,d}`` (order ``star_flat_order``) × grey ``G_v`` (constant, or a plane in
    the visit's tangent plane with ``grey_gradient``).

    Constraints: for each epoch, the mean over its detectors of each star flat's mean is 1 (star
    flats are relative; grey carries the level); with ``grey_gradient``, the visits' gradients
    rotated into the camera frame sum to zero per epoch (a gradient common to the epoch's visits
    in the camera frame is a star-flat term).
    """

    name = "separated"
    detector_block = "starflat"
    detector_group = "epoch_detector"
    visit_block = "grey"

    def validate(self) -> None:
        from ...errors import InputError

        if self.config.chromatic_order is not None:
            raise InputError("chromatic_order is only available for model='reference-free'")

    def blocks(self, n_epdet, n_det, n_visit, has_colour):
        cfg = self.config
        return self.stack(("starflat", "pixel", cfg.star_flat_order, "epoch_detector", 0.0, n_epdet),
                          ("grey", "tangent", 1 if cfg.grey_gradient else 0, "visit", 0.0, n_visit))

    def constraints(self, prob):
        rows, targets = [], []
        bl = {b.name: b for b in prob.blocks}
        sf = bl["starflat"]
        n_ep = int(prob.epdet_pairs[:, 0].max()) + 1
        for e in range(n_ep):
            rows.append(mean_of_groups(prob.n_p, sf, np.nonzero(prob.epdet_pairs[:, 0] == e)[0]))
            targets.append(1.0)
        gr = bl["grey"]
        if gr.order >= 1:
            c, s_ = np.cos(prob.visit_rotation), np.sin(prob.visit_rotation)
            for e in range(n_ep):
                vs = np.nonzero(prob.visit_epoch == e)[0]
                for row_c in ((c, s_), (-s_, c)):
                    r = np.zeros(prob.n_p)
                    r[gr.offset + vs * gr.n_basis + 1] = row_c[0][vs]
                    r[gr.offset + vs * gr.n_basis + 2] = row_c[1][vs]
                    rows.append(r)
                    targets.append(0.0)
        return rows, targets
