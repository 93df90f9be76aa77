"""The modeling stage: interaction matrices, the model families, leave-last-out evaluation, training and search.

Works on the arrays, matrices and datasets it is handed (the registry reads the store for it).
May import ``recommender.data`` (schemas, profiles); never the registry, the online code or ops.
"""
