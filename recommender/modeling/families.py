"""Every model family by name: make a new one, or load a saved one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recommender.modeling.blend import BlendModel
from recommender.modeling.models import ALSModel, BPRModel, ItemKNNModel, Model, PopularModel
from recommender.modeling.sequential import SequentialModel

MODELS: dict[str, type[Model]] = {
    m.family: m for m in (ALSModel, BPRModel, ItemKNNModel, PopularModel, SequentialModel, BlendModel)
}
FAMILIES = tuple(MODELS)


def make_model(family: str, params: dict[str, Any] | None = None, seed: int = 0) -> Model:
    """A new, unfitted model of ``family`` with ``params`` over its defaults."""
    if family not in MODELS:
        raise ValueError(f"unknown model {family!r}; choose one of {', '.join(FAMILIES)}")
    return MODELS[family](seed=seed, **(params or {}))


def load_model(folder: Path) -> Model:
    """Read a model written by :meth:`Model.save`."""
    meta = json.loads((folder / "meta.json").read_text())
    model = make_model(meta["family"], meta["params"], meta["seed"])
    model._load_state(folder)
    return model
