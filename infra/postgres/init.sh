#!/usr/bin/env bash
# One database (and owner) each for Airflow, MLflow and the Iceberg SQL catalog; runs once, on an empty volume.
set -euo pipefail
for db in airflow mlflow recsys; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" <<SQL
CREATE USER ${db} WITH PASSWORD '${APP_DB_PASSWORD}';
CREATE DATABASE ${db} OWNER ${db};
SQL
done
