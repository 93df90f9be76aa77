"""The data stage: shop files and events in, validated, pseudonymized, deduplicated and versioned in Iceberg.

Readers and validation, the Iceberg store (staged files, one snapshot per ingest, maintenance), ingest,
the landing folder, the item catalog, pseudonymization, data profiles, the synthetic shop.
Imports only ``recommender.config`` and ``recommender.progress``: no model, registry, serving or ops code.
"""
