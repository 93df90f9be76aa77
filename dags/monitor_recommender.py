"""Monitoring: data drift against the production model's training data, model health, retrain on breach."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from recsys_common import SERVICE_RETRIES, settings

DOC = """
### Monitor the recommender
Daily, and on demand.

1. **measure_drift**: compares the last `RECSYS_DRIFT_WINDOW_DAYS` (14) of the newest snapshot
   with the same window of the production model's training snapshot: item-popularity PSI,
   event-type PSI, shares of events by unknown users and items, volume ratio; plus the age of
   the published lists. The report is logged as a run of the `shop-recommender-monitoring`
   MLflow experiment (metrics + `monitoring/drift_report.json`). Skipped while nothing is in
   production.
2. **data_within_thresholds**: **fails** when a measure leaves its band (`RECSYS_DRIFT_*`
   settings), naming each breach, so Airflow's failure alerts and callbacks fire.
4. **experiment_report**: while a challenger is published, click-through and add-to-cart per
   variant with Wilson 95% intervals and p-values, logged to the `shop-recommender-experiments`
   MLflow experiment. Promoting the challenger is a person's call (`promote_model`).
3. **retrain_wanted** / **trigger_retrain**: on drift (and when the `trigger_retrain` param is
   on) start `retrain_recommender`; skipped otherwise.
"""


@dag(
    schedule="@daily",
    catchup=False,
    max_active_runs=1,
    tags=["recsys", "monitoring"],
    doc_md=DOC,
    params={
        "trigger_retrain": Param(
            True, type="boolean", title="Retrain on drift", description="Start retrain_recommender on a breach."
        )
    },
    default_args=SERVICE_RETRIES,
)
def monitor_recommender() -> None:
    """Drift checks with named failures."""

    @task
    def measure_drift() -> dict[str, Any]:
        """Measure drift and log the report to MLflow."""
        from recommender.ops.pipeline import monitor

        report = monitor(settings())
        if "skipped" in report:
            raise AirflowSkipException(str(report["skipped"]))
        return report

    @task(retries=0)
    def data_within_thresholds(report: dict[str, Any]) -> None:
        """Fail, naming every breached measure, when the data drifted."""
        if report["drifted"]:
            bands = report["thresholds"]
            breaches = [f"{m} = {report['measures'][m]:.3f} outside {bands[m]}" for m in report["breached"]]
            raise AirflowFailException("data drift: " + "; ".join(breaches))

    @task.short_circuit
    def retrain_wanted(report: dict[str, Any], params: dict[str, Any] | None = None) -> bool:
        """Go on to the retrain only on drift, and when the param allows it."""
        return bool(report["drifted"]) and bool((params or {}).get("trigger_retrain", True))

    @task
    def experiment_report() -> dict[str, Any]:
        """Champion/challenger rates with intervals, logged to MLflow (skipped when no experiment runs)."""
        from recommender.ops.pipeline import experiment

        out = experiment(settings())
        if "skipped" in out:
            raise AirflowSkipException(str(out["skipped"]))
        return out

    experiment_report()
    report = measure_drift()
    data_within_thresholds(report)  # a leaf: its failure fails the run too
    retrain_wanted(report) >> TriggerDagRunOperator(task_id="trigger_retrain", trigger_dag_id="retrain_recommender")


monitor_recommender()
