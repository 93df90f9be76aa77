"""``recsys``: the command-line tool. Thin: each command calls one library function.

Every command prints a human summary, or with ``--json`` exactly one JSON line on
stdout; progress and notices go to stderr. Errors are one line that says what to do,
with a non-zero exit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: implicit warns and slows down otherwise
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stderr for our own progress
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from recommender.config import Settings, get_settings

if TYPE_CHECKING:
    from recommender.demo import DemoResult
    from recommender.lookup import Lookup
    from recommender.stack import StackInfo

app = typer.Typer(help="E-commerce recommendation MLOps system.", no_args_is_help=True, add_completion=False)

err = Console(stderr=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON line.")]


def settings() -> Settings:
    """Load settings, turning a bad configuration into a clear exit."""
    try:
        return get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"configuration error: {first.get('msg')} ({'.'.join(map(str, first.get('loc', ())))})")
        raise  # unreachable


def fail(message: str, code: int = 1) -> None:
    """Print one error line and exit non-zero."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)  # one line, however long
    raise typer.Exit(code)


@contextmanager
def progress_bar(quiet: bool) -> Iterator[object]:
    """A rich progress display on stderr; yields a ``progress(stage, done, total)`` callback."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=quiet,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Folder for events.csv and catalog.csv.")],
    users: Annotated[int, typer.Option(min=1)] = 2_000,
    items: Annotated[int, typer.Option(min=1)] = 500,
    events: Annotated[int, typer.Option(min=1)] = 50_000,
    seed: int = 0,
    days: Annotated[int, typer.Option(min=1)] = 60,
    drift_from: Annotated[int | None, typer.Option(help="Day from which popularity and category mix shift.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a synthetic shop (events.csv, catalog.csv) in the canonical format."""
    from recommender.synthetic import ShopSpec, write_generated

    spec = ShopSpec(users=users, items=items, events=events, seed=seed, days=days, drift_from=drift_from)
    with err.status("generating shop", spinner="dots") if not as_json else _null():
        events_path, catalog_path, written = write_generated(spec, out)
    result = {
        "events": written,
        "items": items,
        "events_path": str(events_path),
        "catalog_path": str(catalog_path),
        "seed": seed,
    }
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(
            f"wrote {result['events']:,} events to {events_path} and {result['items']:,} items to {catalog_path}"
        )


@contextmanager
def _null() -> Iterator[None]:
    yield None


@app.command()
def ingest(
    path: Annotated[
        Path, typer.Argument(help="Events file: canonical CSV/Parquet, Amazon 5-core, or session-rec TSV.")
    ],
    fmt: Annotated[str, typer.Option("--format", help="auto, csv, parquet, amazon-5core, session-rec.")] = "auto",
    catalog: Annotated[
        Path | None, typer.Option(help="Item catalog CSV: item_id,title,category,price,in_stock.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate, pseudonymize, deduplicate and store events as one new table snapshot."""
    from recommender.ingest import ingest_file
    from recommender.readers import FormatError

    cfg = settings()
    try:
        with progress_bar(as_json) as update:
            summary = ingest_file(path, cfg, fmt, catalog=catalog, progress=update)  # type: ignore[arg-type]
    except FormatError as exc:
        fail(f"{exc}. Nothing was stored.")
    if as_json:
        typer.echo(summary.to_json())
        return
    typer.echo(
        f"read {summary.read:,} rows from {path}: stored {summary.stored:,}, "
        f"duplicates {summary.duplicates:,}, quarantined {summary.quarantined:,}"
    )
    for reason, count in sorted(summary.reasons.items(), key=lambda kv: -kv[1]):
        typer.echo(f"  quarantined {count:,} x {reason}")
    if summary.catalog_items is not None:
        typer.echo(f"catalog: {summary.catalog_items:,} items ({summary.catalog_quarantined or 0:,} rows quarantined)")
    typer.echo(f"snapshot {summary.snapshot_id} (was {summary.previous_snapshot_id}) in {summary.seconds:.1f}s")


@app.command()
def drain(as_json: JsonOpt = False) -> None:
    """Store the events the API accepted (the Redis stream) as one snapshot; acknowledge after the commit."""
    from recommender.redis_conn import connect
    from recommender.stream import drain_stream

    cfg = settings()
    with connect(cfg, note) as r, progress_bar(as_json) as update:
        summary = drain_stream(cfg, r, progress=update)  # type: ignore[arg-type]
    if as_json:
        typer.echo(summary.to_json())
        return
    typer.echo(
        f"drained {summary.read:,} events from the stream: stored {summary.stored:,}, "
        f"duplicates {summary.duplicates:,}, quarantined {summary.quarantined:,}; snapshot {summary.snapshot_id}"
    )


@app.command()
def snapshots(as_json: JsonOpt = False) -> None:
    """List the versions of the events table (the ids that training can read)."""
    from recommender.store import Store

    snaps = Store(settings()).snapshots()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "snapshot_id": s.snapshot_id,
                        "committed_at": s.committed_at.isoformat(),
                        "operation": s.operation,
                        **s.properties,
                    }
                    for s in snaps
                ]
            )
        )
        return
    if not snaps:
        typer.echo("no snapshots yet: run `recsys ingest FILE` first")
    for s in snaps:
        p = s.properties
        typer.echo(
            f"{s.snapshot_id}  {s.committed_at:%Y-%m-%d %H:%M:%S}  {s.operation:<9} "
            f"stored={p.get('recsys.stored', '?')} source={p.get('recsys.source', '?')}"
        )


def parse_params(pairs: list[str]) -> dict[str, object]:
    """``key=value`` pairs; values parsed as JSON when they can be (numbers, booleans), else text."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--param takes key=value, not {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def echo_json(data: object) -> None:
    """Print exactly one JSON line."""
    typer.echo(json.dumps(data, default=str, sort_keys=True))


@app.command()
def train(
    model: Annotated[str, typer.Option("--model", help="als, bpr, itemknn, popular, or auto (search).")] = "als",
    param: Annotated[list[str] | None, typer.Option(help="Hyperparameter key=value (repeatable).")] = None,
    snapshot: Annotated[int | None, typer.Option(help="Snapshot id to train on (default: the latest).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default RECSYS_SEED).")] = None,
    half_life_days: Annotated[float | None, typer.Option(help="Time decay of event weights, in days.")] = None,
    bm25: Annotated[bool, typer.Option(help="BM25-weight the confidence matrix.")] = False,
    recency_half_life: Annotated[
        float | None, typer.Option(help="Per-user recency: weight halves every this many of the user's events.")
    ] = None,
    budget_seconds: Annotated[
        float | None, typer.Option(help="--model auto: search time budget (default RECSYS_SEARCH_SECONDS).")
    ] = None,
    trials: Annotated[
        int | None, typer.Option(help="--model auto: most trials (default RECSYS_SEARCH_TRIALS).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train on a snapshot, evaluate against popularity, track in MLflow, register as candidate."""
    from recommender.lifecycle import select_and_register, train_and_register
    from recommender.matrix import Weighting
    from recommender.training import TrainConfig

    cfg = settings()
    weighting = Weighting(
        event_weights=dict(cfg.event_weights),
        half_life_days=half_life_days,
        recency_half_life=recency_half_life,
        bm25=bm25,
    )
    config = TrainConfig(
        family=model,
        params=parse_params(param or []),
        seed=cfg.seed if seed is None else seed,
        snapshot_id=snapshot,
        k=cfg.k,
        weighting=weighting,
    )
    try:
        with err.status("training", spinner="dots") as status:
            if model == "auto":
                out = select_and_register(cfg, snapshot, budget_seconds, trials, step=note)
            else:
                out = train_and_register(cfg, config, step=status.update)
    except (LookupError, ValueError) as exc:
        fail(str(exc))
    k = cfg.k
    summary = {
        "run_id": out.run_id,
        "selection_run_id": out.selection_run_id,
        "model_version": out.model_version,
        "snapshot_id": out.snapshot_id,
        "family": out.family,
        "metrics": out.metrics,
    }
    if as_json:
        echo_json(summary)
        return
    m = out.metrics
    typer.echo(
        f"{out.family} on snapshot {out.snapshot_id}: registered {cfg.model_name} v{out.model_version} "
        f"as candidate (run {out.run_id})"
    )
    for split in ("val", "test"):
        typer.echo(
            f"  {split:<4} HR@{k} {m[f'{split}_hr_at_{k}']:.4f}  NDCG@{k} {m[f'{split}_ndcg_at_{k}']:.4f}  "
            f"(popularity: HR@{k} {m[f'baseline_{split}_hr_at_{k}']:.4f}  "
            f"NDCG@{k} {m[f'baseline_{split}_ndcg_at_{k}']:.4f})  coverage {m[f'{split}_coverage_at_{k}']:.3f}"
        )


@app.command()
def promote(
    to: Annotated[str, typer.Option("--to", help="staging or production.")],
    version: Annotated[str | None, typer.Option(help="Model version (default: staging's, else candidate's).")] = None,
    force: Annotated[bool, typer.Option(help="Override a refused gate (needs --reason).")] = False,
    reason: Annotated[str | None, typer.Option(help="Why; recorded on the model version.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Move a model version to staging or, through the quality gate, to production."""
    from mlflow.exceptions import MlflowException

    from recommender.promotion import promote as do_promote

    try:
        decision = do_promote(settings(), to, version, force, reason)
    except (LookupError, ValueError, MlflowException) as exc:
        fail(str(exc).splitlines()[0])
    if as_json:
        echo_json(decision.to_dict())
        return
    verb = "now holds" if decision.promoted else "REFUSED for"
    typer.echo(f"{decision.to} {verb} v{decision.version} [{decision.decision}]: {decision.reason}")


@app.command()
def publish(
    alias: Annotated[str, typer.Option(help="Registry alias to publish.")] = "production",
    version: Annotated[str | None, typer.Option(help="Publish this model version instead of the alias.")] = None,
    challenger: Annotated[
        bool, typer.Option(help="Serve it to RECSYS_EXPERIMENT_SHARE of the users next to production.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Score all users and write every served list to Redis; flip the active version atomically."""
    from recommender.lifecycle import publish_model

    cfg = settings()
    try:
        with progress_bar(as_json) as update:
            out = publish_model(cfg, alias, version, update, notify=note, challenger=challenger)  # type: ignore[arg-type]
    except LookupError as exc:
        fail(str(exc))
    if as_json:
        echo_json(out.to_dict())
        return
    typer.echo(
        f"published model v{out.model_version} as {out.version}: {out.users:,} users, {out.items:,} items, "
        f"{out.categories} categories in {out.seconds:.1f}s (previous: {out.previous}; "
        f"removed: {', '.join(out.removed) or 'none'})"
    )


@app.command()
def rollback(
    reason: Annotated[str, typer.Option(help="Why; recorded on the model version.")] = "manual rollback",
    as_json: JsonOpt = False,
) -> None:
    """Move production back to the previous production version and serve it again."""
    from recommender.lifecycle import rollback_and_republish

    try:
        with progress_bar(as_json) as update:
            decision, out = rollback_and_republish(settings(), reason, update, notify=note)  # type: ignore[arg-type]
    except LookupError as exc:
        fail(str(exc))
    if as_json:
        echo_json({**decision.to_dict(), "published": out.to_dict()})
        return
    typer.echo(
        f"production rolled back: {decision.reason}; serving {out.version}"
        f"{' (kept copy, instant)' if out.reused else ''}"
    )


@app.command()
def recommend(
    user_id: Annotated[str, typer.Argument(help="Raw user id (hashed as at ingest).")],
    n: Annotated[int, typer.Option("-n", min=1, max=1000)] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Print a user's recommendations from Redis."""
    from recommender.lifecycle import recommend as lookup

    out = lookup(settings(), user_id, n, notify=note)
    _print_lookup(out, f"recommendations for {user_id}", as_json)


@app.command()
def similar(
    item_id: Annotated[str, typer.Argument(help="Item id.")],
    n: Annotated[int, typer.Option("-n", min=1, max=1000)] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Print the items most similar to ITEM_ID from Redis."""
    from recommender.lifecycle import similar as lookup

    out = lookup(settings(), item_id, n, notify=note)
    _print_lookup(out, f"items similar to {item_id}", as_json)


def _print_lookup(out: Lookup, title: str, as_json: bool) -> None:
    if as_json:
        echo_json({"items": out.items, "scores": out.scores, "source": out.source, "version": out.version})
        return
    if out.version is None:
        fail("nothing is published yet: run `recsys publish` first")
    typer.echo(f"{title} [{out.source}, {out.version}]: " + ", ".join(out.items))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default RECSYS_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default RECSYS_API_PORT).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="uvicorn workers (default RECSYS_API_WORKERS).")] = None,
) -> None:
    """Run the recommendation API (and the shop page at /shop/)."""
    from serving.server import serve as run

    cfg = settings()
    run(cfg, host or cfg.api_host, port or cfg.api_port, workers or cfg.api_workers, notify=note)


@app.command()
def explain(
    user_id: Annotated[str, typer.Argument(help="Raw user id (hashed as at ingest).")],
    item_id: Annotated[str, typer.Argument(help="The recommended item to explain.")],
    n: Annotated[int, typer.Option("-n", min=1, max=100, help="Past items to show.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Which of the user's past items contributed most to an item's score (production model)."""
    from recommender.lifecycle import explain as run

    try:
        out = run(settings(), user_id, item_id, n)
    except LookupError as exc:
        fail(str(exc))
    if as_json:
        echo_json(asdict(out))
        return
    typer.echo(f"{item_id} for {user_id}: model v{out.model_version} ({out.family}; {out.method})")
    if not out.known_user:
        typer.echo("  unknown user: they get popular items, nothing of theirs to explain")
    for past, contribution in out.contributions:
        typer.echo(f"  {past:<24} {contribution:+.4f}")


@app.command()
def forget(
    user_id: Annotated[str | None, typer.Argument(help="Raw user id (hashed as at ingest).")] = None,
    pending: Annotated[bool, typer.Option(help="Also complete deletions requested through the API.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Forget a user: Redis at once, a tombstone, their stored events and every older snapshot."""
    from recommender.forget import forget_pending, forget_user

    cfg = settings()
    if user_id is None and not pending:
        fail("give USER_ID, or --pending to complete the API's queued deletions")
    reports = ([forget_user(cfg, user_id)] if user_id else []) + (forget_pending(cfg) if pending else [])
    if as_json:
        echo_json([r.to_dict() for r in reports])
        return
    for r in reports:
        typer.echo(
            f"forgot {r.user_id[:12]}...: {r.redis_lists} Redis lists, {r.stream_entries} stream entries, "
            + ", ".join(f"{k} {v}" for k, v in r.store.items())
        )


@app.command()
def monitor(
    fail_on_drift: Annotated[bool, typer.Option(help="Exit with code 3 when a measure is out of its band.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """What the monitor_recommender DAG does: drift and model health of production, and the experiment report."""
    from recommender.pipeline import experiment
    from recommender.pipeline import monitor as run

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
    from recommender.pipeline import experiment

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
    typer.echo(
        f"p-values (challenger vs production): click-through {out['click_through_p']:.4f} "
        f"({out['tests']['click_through']}), add-to-cart {out['add_to_cart_p']:.4f} ({out['tests']['add_to_cart']}); "
        f"ignored events: {out['ignored']}; promote with the promote_model DAG"
    )


@experiment_app.command("stop")
def experiment_stop(as_json: JsonOpt = False) -> None:
    """Stop serving the challenger."""
    from recommender.pipeline import stop_experiment

    out = stop_experiment(settings())
    echo_json(out) if as_json else typer.echo(f"stopped challenger {out['stopped']}")


def note(message: str) -> None:
    """A notice on stderr."""
    err.print(f"[dim]{message}[/]", highlight=False, soft_wrap=True)


def stack_lines(info: StackInfo) -> list[str]:
    """Where to look, for a person."""
    return [
        f"Airflow UI   {info.airflow}   (login {info.airflow_user} / {info.airflow_password})",
        f"MLflow UI    {info.mlflow}   (login {info.mlflow_user} / {info.mlflow_password})",
        f"shop page    {info.shop}   (API docs {info.api}/docs)",
        f"logs         {info.logs}",
    ]


@app.command()
def up(as_json: JsonOpt = False) -> None:
    """Start the local stack (Redis, MLflow, Airflow, the API) and keep it up until Ctrl-C."""
    from recommender.stack import StackError, interrupt_on_sigterm, local_stack

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
    from recommender.airflow_api import AirflowError
    from recommender.demo import run_demo, stack_for
    from recommender.stack import StackError, interrupt_on_sigterm

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


if __name__ == "__main__":  # pragma: no cover
    app()
