"""A sequential model fitted once per test session on the planted-order shop (JAX compiles take seconds)."""

from __future__ import annotations

import pytest

from recommender.modeling.families import make_model
from recommender.modeling.models import Model
from tests.modeling.test_sequential import TINY, planted


@pytest.fixture(scope="session")
def fitted() -> Model:
    seqs, matrix = planted()
    model = make_model("sequential", TINY, seed=1)
    model.fit(matrix, sequences=seqs)
    return model
