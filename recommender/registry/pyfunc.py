"""The MLflow ``pyfunc`` wrapper: ``mlflow.pyfunc.load_model("models:/NAME@production")``.

``predict`` takes a frame with a ``user_id`` column (pseudonymized ids, as stored: call
:func:`recommender.data.privacy.pseudonymize` on raw ids first) and the ``n`` param, and returns
one row per user with ``items``, ``scores`` and ``known`` (False: popular items served).
Loading needs this package installed (``recsys``), as the model's requirements say.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from recommender.modeling.bundle import Bundle

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "user_id")]),
    params=ParamSchema([ParamSpec("n", "long", 10)]),
)


class RecommenderPyfunc(PythonModel):
    """Recommendations for given user ids from a saved :class:`Bundle`."""

    bundle: Bundle

    def load_context(self, context: Any) -> None:
        """Load the bundle from the model's artifacts."""
        self.bundle = Bundle.load(Path(context.artifacts["bundle"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Top-n items per user id."""
        n = int((params or {}).get("n", 10))
        users = [str(u) for u in model_input["user_id"]]
        rows = self.bundle.recommend_ids(users, n)
        return pd.DataFrame(
            {
                "user_id": users,
                "items": [r[0] for r in rows],
                "scores": [r[1] for r in rows],
                "known": [r[2] for r in rows],
            }
        )
