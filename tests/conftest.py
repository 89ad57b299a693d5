"""Shared fixtures: a seeded numpy generator and float64 tensor factories."""

from __future__ import annotations

import numpy as np
import pytest

import pyrt


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seed_pyrt() -> None:
    pyrt.manual_seed(0)
