"""Monitoring commands: what the monitor_recommender DAG does, and the champion/challenger experiment."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from recommender.cli.common import JsonOpt, app, echo_json, fail, settings


@app.command()
def monitor(
    fail_on_drift: Annotated[bool, typer.Option(help="Exit with code 3 when a measure is out of its band.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """What the monitor_recommender DAG does: drift and model health of production, and the experiment report."""
    from recommender.ops.pipeline import experiment
    from recommender.ops.pipeline import monitor as run

    cfg = settings()
    try:
        report = run(cfg)
        report["experiment"] = experiment(cfg)
    except LookupError as exc:
        fail(str(exc))
    if as_json:
        echo_json(report)
    elif "skipped" in report:
        typer.echo(f"monitoring skipped: {report['skipped']}")
    else:
        typer.echo("\n".join(monitor_lines(report)))
    if fail_on_drift and report.get("drifted"):
        raise typer.Exit(3)


def monitor_lines(report: dict[str, Any]) -> list[str]:
    """The monitoring report, for a person."""
    measures, bands = report["measures"], report["thresholds"]
    lines = [
        f"current snapshot {report['current_snapshot']} against the production model's reference "
        f"(snapshot {report['reference_snapshot']}), last {report['window_days']:g} days on each side:"
    ]
    for name, value in measures.items():
        band = bands.get(name)
        flag = "  OUT OF BAND" if name in report["breached"] else ""
        lines.append(f"  {name:<26} {value:>10.4f}" + (f"  band [{band[0]:g}, {band[1]:g}]{flag}" if band else ""))
    verdict = "DRIFTED: retrain (`recsys train --model auto`)" if report["drifted"] else "within every band"
    lines.append(f"{verdict}; logged as MLflow run {report['mlflow_run_id']}")
    experiment = report.get("experiment", {})
    lines.append(
        f"experiment: {experiment['skipped']}"
        if "skipped" in experiment
        else "experiment: see `recsys experiment report`"
    )
    return lines


experiment_app = typer.Typer(help="Champion/challenger experiments.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("report")
def experiment_report(as_json: JsonOpt = False) -> None:
    """Click-through and add-to-cart per variant with 95% intervals; logged to MLflow."""
    from recommender.ops.pipeline import experiment

    out = experiment(settings())
    if as_json:
        echo_json(out)
        return
    if "skipped" in out:
        typer.echo(str(out["skipped"]))
        return
    typer.echo(f"experiment {out['experiment_id']} since {out['started_at']}, per user:")
    for name in ("production", "challenger"):
        v: dict[str, Any] = out[name]
        ctr, cart = v["click_through"], v["add_to_cart"]
        typer.echo(
            f"{name:<10} v{v['model_version']}: {v['users']:,} users ({v['served_lists']:,} lists), "
            f"clicked {ctr['rate']:.4f} [{ctr['low']:.4f}, {ctr['high']:.4f}], "
            f"added to cart {cart['rate']:.4f} [{cart['low']:.4f}, {cart['high']:.4f}]"
        )
        news = v["new_items"]
        typer.echo(
            f"{'':<10} new items: {news['impressions']:,} shown ({news['items']:,} distinct), "
            f"{news['clicks']:,} clicked ({news['click_rate']:.4f} per impression)"
        )
        money = v["revenue"]
        typer.echo(
            f"{'':<10} revenue: {money['per_user']:,.2f} per user, {money['total']:,.2f} in all from "
            f"{money['buyers']:,} buyers ({money['attributed']:,.2f} from purchases carrying its lists' ids)"
        )
    lift = out["revenue_per_user_lift"]
    interval = (
        f"[{lift['low']:,.2f}, {lift['high']:,.2f}] ({lift['method']} bootstrap)" if lift["low"] is not None else ""
    )
    typer.echo(f"revenue per user, challenger - production: {lift['difference']:,.2f} {interval}".rstrip())
    typer.echo(
        f"p-values (challenger vs production): click-through {out['click_through_p']:.4f} "
        f"({out['tests']['click_through']}), add-to-cart {out['add_to_cart_p']:.4f} ({out['tests']['add_to_cart']}); "
        f"ignored events: {out['ignored']}; promote with the promote_model DAG"
    )


@experiment_app.command("stop")
def experiment_stop(as_json: JsonOpt = False) -> None:
    """Stop serving the challenger."""
    from recommender.ops.pipeline import stop_experiment

    out = stop_experiment(settings())
    echo_json(out) if as_json else typer.echo(f"stopped challenger {out['stopped']}")
