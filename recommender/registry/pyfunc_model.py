"""MLflow "models from code" entry point: MLflow loads this file, it is not imported by the package.

Logging the model as code (instead of a pickled object) keeps the stored model readable
and free of pickle's risks; the logic lives in :mod:`recommender.registry.pyfunc`.
"""

from mlflow.models import set_model

from recommender.registry.pyfunc import RecommenderPyfunc

set_model(RecommenderPyfunc())
