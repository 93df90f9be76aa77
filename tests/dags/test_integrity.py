"""Every DAG file imports cleanly, with the ids, tags, docs, retries and params the operators rely on."""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any

import pytest

from recommender.ops.stack import DAGS

EXPECTED = {
    "ingest_interactions",
    "retrain_recommender",
    "promote_model",
    "forget_user",
    "monitor_recommender",
    "export_recommendations",
    "refresh_audiences",
}
HEAVY = ("implicit", "mlflow", "pandas", "pyarrow", "pyiceberg", "numpy", "scipy", "redis", "recommender.ops.pipeline")


@pytest.fixture(scope="module")
def bag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_every_dag_file_imports_without_errors(bag: Any) -> None:
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == EXPECTED


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_dag_has_docs_tags_no_catchup_and_retries(bag: Any, dag_id: str) -> None:
    dag = bag.dags[dag_id]
    assert "recsys" in dag.tags and len(dag.tags) >= 2
    assert dag.doc_md and len(dag.doc_md) > 200
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    service_tasks = [t for t in dag.tasks if t.task_id in ("drain_event_stream", "publish", "smoke_check", "stage")]
    for task in service_tasks:
        assert task.retries >= 2 and task.retry_exponential_backoff, task.task_id


def test_retrain_form_has_titled_params_and_runs_on_the_interactions_asset(bag: Any) -> None:
    dag = bag.dags["retrain_recommender"]
    params = dag.params.dump()
    for key in ("model", "factors", "event_weights", "half_life_days", "k", "auto_promote", "snapshot_id"):
        assert key in params
        param = dag.params.get_param(key)
        assert param.schema.get("title") and param.description, key
    from recommender.modeling.families import MODELS

    assert set(dag.params.get_param("model").schema["enum"]) == {"auto", *MODELS} - {"blend"}  # blends: from auto
    for key in ("hidden", "blocks", "max_len", "dropout", "epochs", "sequential_seconds"):  # the sequential family
        assert dag.params.get_param(key).schema.get("title"), key
    assert "name='interactions'" in repr(dag.timetable.asset_condition)
    assert dag.timetable.timetable.expression == "0 0 * * 0"  # and weekly
    assert type(bag.dags["promote_model"].timetable).__name__ == "NullTimetable"  # manual only


def test_bad_trigger_conf_is_rejected() -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions.param import ParamValidationError

    params = copy.deepcopy(DagBag(dag_folder=str(DAGS)).dags["retrain_recommender"].params)
    params["factors"] = 32  # a good value passes
    with pytest.raises(ParamValidationError):
        params["model"] = "svd"
    with pytest.raises(ParamValidationError):
        params["factors"] = -3


def test_dag_files_do_not_import_heavy_libraries_at_parse_time() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(DAGS)!r})\n"
        "import ingest_interactions, retrain_recommender, promote_model, forget_user, monitor_recommender\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
