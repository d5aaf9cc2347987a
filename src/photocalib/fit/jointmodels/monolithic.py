"""``monolithic`` (jointcal-like): a polynomial per detector × a polynomial per visit.

``c = P_d(x, y) · V_v(ξ, η)``; the Jacobian is not given but absorbed by the fit (the visit
polynomial, of order ``visit_order``, 7 by default, carries the optical distortion).
"""

from __future__ import annotations

from ...errors import InputError
from ._base import JointModel, mean_of_groups, register


@register
class Monolithic(JointModel):
    """``P_d`` (order ``detector_order``, 0 by default as in jointcal's constrained model) ×
    ``V_v`` in the visit's tangent-plane coordinates.

    Constraint: the mean over detectors of ``P_d``'s mean is 1 (``P → kP, V → V/k``).
    """

    name = "monolithic"
    detector_block = "detector"
    detector_group = "detector"
    visit_block = "visit"
    pixel_area = False

    def validate(self) -> None:
        if self.config.chromatic_order is not None:
            raise InputError("chromatic_order is only available for model='reference-free'")

    def blocks(self, n_epdet, n_det, n_visit, has_colour):
        cfg = self.config
        return self.stack(("detector", "pixel", cfg.detector_order, "detector", 0.0, n_det),
                          ("visit", "tangent", cfg.visit_order, "visit", 0.0, n_visit))

    def constraints(self, prob):
        b = next(b for b in prob.blocks if b.name == "detector")
        return [mean_of_groups(prob.n_p, b, range(b.n_groups))], [1.0]
