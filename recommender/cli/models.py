"""Model commands: train (a family, or --model auto), promote through the gate, publish, roll back, explain."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any

import typer

from recommender.cli.common import JsonOpt, app, echo_json, err, fail, note, progress_bar, settings


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


@app.command()
def train(
    model: Annotated[
        str, typer.Option("--model", help="als, bpr, itemknn, sequential, popular, or auto (search and blend).")
    ] = "als",
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
    sequential_seconds: Annotated[
        float | None,
        typer.Option(help="--model auto: the sequential family's budget (default RECSYS_SEARCH_SEQUENTIAL_SECONDS)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train on a snapshot, evaluate against popularity, track in MLflow, register as candidate."""
    from recommender.modeling.matrix import Weighting
    from recommender.modeling.training import TrainConfig
    from recommender.registry.lifecycle import select_and_register, train_and_register

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
                out = select_and_register(
                    cfg, snapshot, budget_seconds, trials, step=note, sequential_seconds=sequential_seconds
                )
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

    from recommender.registry.promotion import promote as do_promote

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
    from recommender.registry.lifecycle import publish_model

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
def export(
    placement: Annotated[
        str, typer.Option(help="A placement that ranks for users (home, new, buy_again, ...).")
    ] = "home",
    n: Annotated[int | None, typer.Option("--n", "-n", help="Items per user (default RECSYS_EXPORT_N, 50).")] = None,
    to: Annotated[
        str | None, typer.Option(help="A path or s3:// URI for files (default: the Iceberg table recommendations).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv, with --to.")] = "parquet",
    force: Annotated[bool, typer.Option(help="Export again a model version already exported.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Every user's top-N of a placement from the served version, as the API serves it, in bulk."""
    from recommender.ops.export import ExportError, export_recommendations

    if fmt not in ("parquet", "csv"):
        fail(f"--format is parquet or csv, not {fmt!r}")
    try:
        with progress_bar(as_json) as update:
            out = export_recommendations(settings(), placement, n, to, fmt, force, update)  # type: ignore[arg-type]
    except (ExportError, LookupError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        echo_json(out)
        return
    if out["skipped"]:
        typer.echo(f"nothing exported: {out['skipped']}")
        return
    typer.echo(
        f"exported {out['rows']:,} rows for {out['users']:,} users of {placement!r} from model "
        f"v{out['model_version']} to {out['target']} in {out['seconds']:.1f}s"
    )


@app.command()
def rollback(
    reason: Annotated[str, typer.Option(help="Why; recorded on the model version.")] = "manual rollback",
    as_json: JsonOpt = False,
) -> None:
    """Move production back to the previous production version and serve it again."""
    from recommender.registry.lifecycle import rollback_and_republish

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
def audience(
    item: Annotated[str | None, typer.Option(help="An item id.")] = None,
    category: Annotated[str | None, typer.Option(help="A catalog category.")] = None,
    attribute: Annotated[str | None, typer.Option(help="A catalog attribute, KEY=VALUE.")] = None,
    top: Annotated[int, typer.Option(min=1, max=10_000_000, help="Users to return.")] = 100,
    include_known: Annotated[bool, typer.Option(help="Keep users who already interacted with the items.")] = False,
    export: Annotated[bool, typer.Option(help="Write it to the Iceberg table audiences.")] = False,
    to: Annotated[str | None, typer.Option(help="Write it as a file under this path or s3:// URI instead.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv, with --to.")] = "parquet",
    refresh: Annotated[
        bool, typer.Option(help="Instead: compute the audiences GET /v1/audiences keeps, for the served version.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The users the production model scores highest for an item, a category or an attribute value."""
    from recommender.ops.export import export_audience
    from recommender.registry.audience import Target, refresh_audiences
    from recommender.registry.audience import audience as run

    if refresh:
        if item or category or attribute or export or to:
            fail("--refresh computes the audiences the API keeps: give it no target, --export or --to")
        with progress_bar(as_json) as update:
            done = refresh_audiences(settings(), update)  # type: ignore[arg-type]
        if as_json:
            echo_json(done)
            return
        if "skipped" in done:
            typer.echo(f"no audiences refreshed: {done['skipped']}")
            return
        typer.echo(
            f"audiences of {done['version']} (model v{done['model_version']}): {len(done['computed'])} computed, "  # type: ignore[arg-type]
            f"{len(done['failed'])} without one, {done['kept']} kept, {len(done['dropped'])} no longer asked for"  # type: ignore[arg-type]
        )
        for label, why in done["failed"].items():  # type: ignore[attr-defined]
            typer.echo(f"  {label}: {why}")
        return
    if attribute is not None and "=" not in attribute:
        fail(f"--attribute is KEY=VALUE, not {attribute!r}")
    if fmt not in ("parquet", "csv"):
        fail(f"--format is parquet or csv, not {fmt!r}")
    cfg = settings()
    try:
        key_value = tuple(attribute.split("=", 1)) if attribute is not None else None
        found = run(cfg, Target(item, category, key_value), top, include_known)  # type: ignore[arg-type]
    except LookupError as exc:
        fail(str(exc))
    out: dict[str, Any] = found.to_dict()
    if export or to:
        try:
            out["exported"] = export_audience(cfg, found, to, fmt)  # type: ignore[arg-type]
        except OSError as exc:  # a path or bucket it cannot write
            fail(f"could not write the audience to {to or 'the audiences table'}: {exc}")
    if as_json:
        echo_json(out)
        return
    typer.echo(
        f"{found.target}: {len(found.users):,} users from model v{found.model_version} ({found.family}, "
        f"{found.items:,} items)" + (f"; written to {out['exported']['target']}" if "exported" in out else "")
    )
    for user, score in list(zip(found.users, found.scores, strict=True))[:20]:
        typer.echo(f"  {user}  {score:+.4f}")


@app.command()
def explain(
    user_id: Annotated[str, typer.Argument(help="Raw user id (hashed as at ingest).")],
    item_id: Annotated[str, typer.Argument(help="The recommended item to explain.")],
    n: Annotated[int, typer.Option("-n", min=1, max=100, help="Past items to show.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Which of the user's past items contributed most to an item's score (production model)."""
    from recommender.registry.lifecycle import explain as run

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
