"""What the API process runs: the Redis key schema and connections, lookups, the per-request service, sessions,
experiment assignment and signed ids, the immediate part of forgetting.

Imports only what the slim API image holds: ``recommender.config``, ``recommender.data``'s events and privacy,
pandas, pyarrow, redis; never implicit, scipy, mlflow, airflow, pyiceberg or optuna.
"""
