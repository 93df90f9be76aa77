"""The local stack: `recsys up` and the main job, `recsys demo`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from recommender.cli.common import JsonOpt, app, echo_json, fail, note, settings
from recommender.config import Settings

if TYPE_CHECKING:
    from recommender.ops.demo import DemoResult
    from recommender.ops.stack import StackInfo


def stack_lines(info: StackInfo) -> list[str]:
    """Where to look, for a person."""
    return [
        f"Airflow UI   {info.airflow}   (login {info.airflow_user} / {info.airflow_password})",
        f"MLflow UI    {info.mlflow}   (login {info.mlflow_user} / {info.mlflow_password})",
        f"shop page    {info.shop}   (API docs {info.api}/docs)",
        f"console      {info.api}/console/   (an admin key of RECSYS_API_KEYS)",
        f"logs         {info.logs}",
    ]


@app.command()
def up(as_json: JsonOpt = False) -> None:
    """Start the local stack (Redis, MLflow, Airflow, the API) and keep it up until Ctrl-C."""
    from recommender.ops.stack import StackError, interrupt_on_sigterm, local_stack

    cfg = settings()
    interrupt_on_sigterm()
    try:
        with local_stack(cfg, notify=note) as running:
            if as_json:
                echo_json(asdict(running.info))
            else:
                typer.echo("\n".join(["stack up, Ctrl-C stops all of it:", *stack_lines(running.info)]))
            fail(running.wait())
    except StackError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        note("stopped everything the stack started")


@app.command()
def demo(
    serve_api: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Keep the stack up afterwards until Ctrl-C.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """The main job: the stack up, a synthetic shop ingested and a model trained through Airflow, served."""
    from recommender.ops.airflow_api import AirflowError
    from recommender.ops.demo import run_demo, stack_for
    from recommender.ops.stack import StackError, interrupt_on_sigterm

    cfg = settings()
    interrupt_on_sigterm()
    try:
        with stack_for(cfg, notify=note) as (info, running):
            result = run_demo(cfg, info, step=lambda d: note(f"-> {d}"))
            if as_json:
                echo_json(
                    {
                        "stack": asdict(info),
                        "ingest_run": asdict(result.ingest),
                        "retrain_run": asdict(result.retrain),
                        "retrain_trigger": result.retrain_trigger,
                        "trained": result.trained,
                        "decision": result.decision,
                        "recommendations": result.recommendations,
                        "similar": result.similar,
                        "mlflow_run_url": result.mlflow_run_url,
                    }
                )
            else:
                typer.echo("\n".join(demo_lines(cfg, result)))
            if serve_api and running is not None:
                note("the stack stays up until Ctrl-C")
                fail(running.wait())
    except (StackError, AirflowError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        note("stopped everything the stack started")


def demo_lines(cfg: Settings, result: DemoResult) -> list[str]:
    """The demo's report, for a person."""
    t, k = result.trained, cfg.k
    m = t["metrics"]
    lines = [
        f"RECSYS_HOME = {cfg.home_abs}",
        f"landed: {', '.join(Path(p).name for p in result.landed)}",
        f"ingest_interactions run {result.ingest.run_id}: {result.ingest.state}",
        f"retrain_recommender run {result.retrain.run_id} (started by {result.retrain_trigger}): "
        f"{result.retrain.state}",
        f"  {t['family']} on snapshot {t['snapshot_id']} -> {cfg.model_name} v{t['model_version']}: test NDCG@{k} "
        f"{m.get(f'test_ndcg_at_{k}', float('nan')):.4f} vs popularity {m.get(f'baseline_test_ndcg_at_{k}', 0):.4f}",
        f"  gate: {result.decision['decision']}: {result.decision['reason']}",
    ]
    for user, body in result.recommendations.items():
        items = ", ".join(i["item_id"] for i in body["items"])
        lines.append(f"  GET /v1/users/{user}/recommendations [{body['source']}, v{body['model_version']}]: {items}")
    lines.append(f"  GET /v1/items/i1/similar: {', '.join(i['item_id'] for i in result.similar['items'])}")
    lines.append(f"MLflow run   {result.mlflow_run_url}")
    return lines + stack_lines(result.stack)
