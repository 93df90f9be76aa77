"""The registry stage: MLflow tracking, the quality gate and aliases, and publishing a version to Redis.

Turns a trained bundle into a tracked, registered, promoted version and its served lists.
May import data, modeling and online (the Redis key schema and connections); never ops.
"""
