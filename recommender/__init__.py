"""recsys: an e-commerce recommendation MLOps system, in packages by lifecycle stage.

``data`` (events in, Iceberg) -> ``modeling`` (matrices, models, evaluation) -> ``registry`` (MLflow, the gate,
publishing to Redis) -> ``online`` (what the API process runs) ; ``ops`` (what the DAGs and the CLI run) on top,
``cli`` above it. ``config`` (the one settings object) and ``progress`` serve them all. The layering is a
contract (import-linter, ``make lint``).
"""
