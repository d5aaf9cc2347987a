"""Small, fast simulations for the tests of every layer.

``small_survey(tmp_dir)`` renders a few small detectors and visits in a few seconds; call it
from a session-scoped fixture (``tmp_path_factory.mktemp("sim")``) in your own conftest.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["SMALL_SURVEY", "small_survey"]

#: The small configuration: hsc-like, 4 detectors of 256 x 256, 4 visits, a dense star field.
SMALL_SURVEY: dict[str, Any] = dict(
    preset="hsc-like",
    n_visits=4,
    detector_shape=(256, 256),
    n_detectors=4,
    seed=42,
    star_density=3.0e5,
    star_mag_range=(17.0, 23.0),
    refcat_mag_max=22.0,
    scheduler="threads",
)


def small_survey(tmp_dir: str | os.PathLike, **overrides: Any):
    """Run :func:`photocalib.sim.simulate` with :data:`SMALL_SURVEY` (plus ``overrides``).

    Parameters
    ----------
    tmp_dir : path
        Output directory (created).
    **overrides
        Any :func:`~photocalib.sim.simulate` argument, e.g. ``preset="megacam-like"``,
        ``tree_rings=True``, ``survey_options={"grey_gradient_mag": 0.02}``.

    Returns
    -------
    SimulationResult

    Examples
    --------
    In a ``conftest.py``::

        @pytest.fixture(scope="session")
        def small_sim(tmp_path_factory):
            from photocalib.sim.testing import small_survey
            return small_survey(tmp_path_factory.mktemp("sim"))
    """
    from .runner import simulate

    kw = dict(SMALL_SURVEY)
    kw.update(overrides)
    return simulate(tmp_dir, **kw)
