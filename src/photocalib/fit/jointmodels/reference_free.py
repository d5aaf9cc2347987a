"""``reference-free`` (FGCM-like): the separated factors, optionally a chromatic term, no reference.

``c = A · S_{e,d} · G_v · (1 + colour · K_d)``. The overall zero point is a degeneracy fixed by
a constraint (mean grey 1); standards, when given, fix one number after the fit (they do not
pull the relative calibration).
"""

from __future__ import annotations

import numpy as np

from ...errors import InputError
from ._base import mean_of_groups, register
from .separated import Separated


@register
class ReferenceFree(Separated):
    """Separated factors plus an optional chromatic field ``K_d`` (``chromatic_order``; needs a
    ``colour`` column).

    Extra constraints: the mean over visits of the grey constant is 1 (the zero point); the mean
    over detectors of ``K_d``'s mean is 0 (a constant ``K`` is absorbed by the star magnitudes).
    """

    name = "reference-free"
    needs_reference = False
    reference_in_chi2 = False

    def validate(self) -> None:
        pass

    def blocks(self, n_epdet, n_det, n_visit, has_colour):
        cfg = self.config
        specs = [("starflat", "pixel", cfg.star_flat_order, "epoch_detector", 0.0, n_epdet),
                 ("grey", "tangent", 1 if cfg.grey_gradient else 0, "visit", 0.0, n_visit)]
        if cfg.chromatic_order is not None:
            if not has_colour:
                raise InputError("chromatic_order needs a 'colour' column in the observations")
            specs.append(("chromatic", "pixel", cfg.chromatic_order, "detector", 1.0, n_det))
        return self.stack(*specs)

    def constraints(self, prob):
        rows, targets = super().constraints(prob)
        gr = next(b for b in prob.blocks if b.name == "grey")
        r = np.zeros(prob.n_p)
        r[gr.offset + np.arange(gr.n_groups) * gr.n_basis] = 1.0 / gr.n_groups
        # keep the documented order: star flats, zero point, gradients, chromatic
        n_ep = int(prob.epdet_pairs[:, 0].max()) + 1
        rows.insert(n_ep, r)
        targets.insert(n_ep, 1.0)
        chrom = next((b for b in prob.blocks if b.name == "chromatic"), None)
        if chrom is not None:
            rows.append(mean_of_groups(prob.n_p, chrom, range(chrom.n_groups)))
            targets.append(0.0)
        return rows, targets

    def initial_levels(self, grey):
        return grey / grey.mean()  # the zero-point constraint: mean grey = 1
