"""Shared fixtures for the photocalib test suite."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import settings

from wcs_fixtures import AnalyticWcs, sip_header

settings.register_profile("ci", max_examples=40, deadline=None)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261124)


@pytest.fixture
def analytic_wcs() -> AnalyticWcs:
    """A stand-in WCS with an analytic pixel area that counts its area-field requests."""
    return AnalyticWcs()


@pytest.fixture
def sip_wcs():
    """A real TAN-SIP SkyWcs straddling RA = 0 with a few per cent of area variation."""
    import photocalib as pc

    return pc.SkyWcs.from_header(sip_header())
