"""Fixtures for the warp tests."""

from __future__ import annotations

import pytest
from warp_scenes import Scene


@pytest.fixture(scope="module")
def scene() -> Scene:
    return Scene()
