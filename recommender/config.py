"""One settings object for the whole system (prefix ``RECSYS_``).

Nothing here touches the disk or the network: paths are derived, never created,
so importing this module (or building ``Settings``) has no side effects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-insecure-change-me"
"""Default HMAC secret: fine on a laptop, refused in production mode."""

ROLES = ("read", "events", "write", "admin")
"""API roles, each allowed what the ones before it are: ``read`` the shop's lists, ``events`` also posts
events (a browser key), ``write`` also changes the catalog (the shop's backend), ``admin`` everything."""
PLACEHOLDER = "change-me"
"""What every secret in ``.env.example`` contains: refused in production."""
MIN_SECRET_BYTES = 32
WRITER_POOL = "iceberg_writers"
WRITER_POOL_DOC = "One slot: the tasks that write the Iceberg tables (drain, landing ingest, forget) run one at a time."
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {"view": 1.0, "add_to_cart": 4.0, "purchase": 8.0}


class Settings(BaseSettings):
    """Every knob of the system; read from ``RECSYS_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", env_file=None, extra="ignore", hide_input_in_errors=True)

    env: Literal["development", "production"] = "development"
    home: Path = Field(default=Path(".recsys"), description="All local state lives here.")

    # privacy
    hmac_secret: SecretStr = SecretStr(DEV_SECRET)
    user_signing_secret: SecretStr | None = Field(
        default=None, description="Key of the user-id signatures the shop's backend gives its pages (HMAC-SHA256)."
    )
    forget_model_retention_days: int = Field(
        default=30,
        ge=0,
        le=3650,
        description="Registered versions holding a forgotten user are deleted once this old (not production "
        "nor the rollback target).",
    )
    user_signature_max_age: int = Field(
        default=86_400,
        ge=60,
        le=30 * 86_400,
        description="Seconds an X-User-Signature holds after its time t (a leaked one stops working).",
    )
    require_user_signature: bool = Field(
        default=False, description="Events and personalized reads below the write role need X-User-Signature."
    )

    # events
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    max_future_seconds: int = Field(default=86_400, ge=0, description="Clock skew tolerated.")
    min_timestamp: str = "1995-01-01T00:00:00Z"
    max_field_length: int = Field(default=256, ge=8)
    max_quantity: int = Field(default=10_000, ge=1)
    max_price: float = Field(default=1_000_000.0, gt=0)

    # Iceberg
    catalog_name: str = "recsys"
    catalog_uri: str | None = None
    warehouse: str | None = None
    namespace: str = "recsys"
    ingest_file_rows: int = Field(
        default=500_000, ge=1, description="Rows an ingest buffers (Arrow) before writing them as data files."
    )
    orphan_min_age_hours: float = Field(
        default=24.0, ge=0, description="Unreferenced data files younger than this survive a purge (in-flight writes)."
    )

    # training and evaluation
    k: int = Field(default=10, ge=1, le=1000, description="Cut-off of the reported metrics.")
    seed: int = 0
    train_threads: int = Field(default=0, ge=0, description="implicit threads (0: all cores).")
    content_model: bool = Field(
        default=True, description="Train the content model for new items (from catalog attributes) with every version."
    )
    new_item_max_users: int = Field(
        default=2, ge=0, description="Items with at most this many users in the training data count as new."
    )
    new_item_slot: int = Field(
        default=2, ge=0, le=1000, description="A new item enters a similar list after this many of its items."
    )
    new_items_per_list: int = Field(default=2, ge=0, le=100, description="New items at most in one similar list.")
    new_items_max: int = Field(
        default=10_000,
        ge=0,
        description="New items a publish gives lists and places, the most recently changed first (cost: this many "
        "times the catalog); the others wait for a live change or a later publish.",
    )
    search_seconds: float = Field(default=420.0, gt=0, description="Time budget of `--model auto`'s search.")
    search_trials: int = Field(default=300, ge=1, description="Most trials `--model auto` runs.")
    search_sequential_seconds: float = Field(
        default=900.0, ge=0, description="Time budget of the sequential family's trials in `--model auto` (0: none)."
    )

    # MLflow
    mlflow_password: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_PASSWORD"),
        description="Read by MLflow's client itself; here only so that production refuses a placeholder.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "RECSYS_MLFLOW_TRACKING_URI")
    )
    experiment: str = "shop-recommender"
    model_name: str = "shop-recommender"

    # promotion gate
    gate_metric: str = "ndcg_at_10"
    gate_tolerance: float = Field(default=0.05, ge=0.0, le=1.0, description="Relative drop vs production allowed.")

    # publishing and Redis
    redis_url: str | None = None
    redis_cluster: bool = Field(
        default=False, description="RECSYS_REDIS_URL names a node of a Redis Cluster (redis-py's cluster client)."
    )
    redis_prefix: str = "recsys"
    top_n: int = Field(
        default=200, ge=1, le=1000, description="Candidates published per user: more than shown, so rules have room."
    )
    similar_n: int = Field(default=20, ge=1, le=1000)
    keep_versions: int = Field(default=2, ge=2, description="Published versions kept (active + previous ...).")
    publish_batch: int = Field(default=5_000, ge=1)
    publish_lease_seconds: int = Field(
        default=6 * 3600, ge=60, description="How long an unfinished publish is protected from cleanups."
    )
    publish_shards: int = Field(
        default=1, ge=1, le=1024, description="Parts the user and similar lists are scored in (DAG: parallel tasks)."
    )

    # the API
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_workers: int = Field(default=1, ge=1, le=64)
    api_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated key:role or key:role:name; roles: read, events, write, admin.",
    )
    open_reads: bool | None = Field(
        default=None, description="Shop reads without a key (default: only in development with no keys set)."
    )
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Largest request body accepted (413 beyond).")
    client_rate_limit: str = Field(
        default="50/second",
        description="Requests per client address for the public roles (no key, read, events); empty: none.",
    )
    client_event_limit: str = Field(
        default="600/minute", description="Events per client address for the public roles; empty: none."
    )
    key_rate_limits: dict[str, str] = Field(
        default_factory=dict, description='Requests per key, by key name: {"shop-page": "5000/second"} (JSON).'
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="Proxies whose X-Forwarded-For names the client (uvicorn's forwarded_allow_ips); empty: none.",
    )
    redis_timeout: float = Field(default=0.25, gt=0, description="Seconds per Redis call in the API.")
    redis_retry_after: float = Field(default=1.0, ge=0, description="Seconds the API serves fallback before retrying.")
    fallback_refresh_seconds: float = Field(default=30.0, gt=0)
    active_cache_seconds: float = Field(default=1.0, ge=0, description="How long the API trusts its active version.")
    item_cache_size: int = Field(default=100_000, ge=0, description="Catalog items each API worker keeps in memory.")
    max_n: int = Field(default=100, ge=1, le=1000)
    max_events_per_request: int = Field(default=1000, ge=1)
    event_backlog_limit: int = Field(
        default=1_000_000, ge=1000, description="Undrained events beyond which POST /v1/events answers 503."
    )
    experiment_share: float = Field(default=0.1, ge=0, le=1, description="Users on the challenger, if one is live.")
    session_items: int = Field(default=5, ge=0, le=50, description="Recent items blended in (0: off).")
    reasons: bool = Field(
        default=True,
        description="Each item of an answer carries its reason (off: none; publishing stores them either way).",
    )
    export_placement: str | None = Field(
        default=None, description="A placement the retrain DAG exports for every user after publishing (none: off)."
    )
    export_n: int = Field(default=50, ge=1, le=1000, description="Items per user in a bulk export.")
    export_to: str | None = Field(
        default=None, description="Where exports go: a path or s3:// URI for files (none: the recommendations table)."
    )
    export_format: Literal["parquet", "csv"] = Field(default="parquet", description="The files' format.")
    audience_max_targets: int = Field(
        default=1000, ge=1, description="Audiences GET /v1/audiences keeps current (each refreshed per version)."
    )
    audience_keep_days: float = Field(
        default=30.0, gt=0, description="An audience nobody asked for in this long is no longer refreshed."
    )
    session_ttl_seconds: int = Field(default=1800, ge=1, description="A session ends after this long quiet.")
    session_weight: float = Field(default=1.0, ge=0, description="Weight of the session lists in the blend.")
    placements_file: Path | None = Field(default=None, description="JSON placements config (default: built in).")
    live_poll_seconds: float = Field(
        default=0.1, ge=0, description="How often each API worker checks for live catalog and rules changes."
    )
    cursor_ttl_seconds: int = Field(default=1800, ge=60, description="How long a pagination cursor remembers.")
    cursors_per_owner: int = Field(
        default=20, ge=1, le=10_000, description="Open cursors per user (or anonymous address); the oldest go first."
    )
    event_backlog_reserve: float = Field(
        default=0.1, ge=0, lt=1, description="Share of the event backlog only keys of the write role may fill."
    )
    fallback_unready_seconds: float = Field(
        default=30.0, gt=0, description="A worker answering only from its fallback this long while Redis answers: 503."
    )
    live_stale_seconds: float = Field(
        default=10.0, gt=0, description="A worker whose live catalog and rules are older than this: /readyz 503."
    )
    live_changes_retention_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="How long stored catalog changes stay in the stream: API workers read it to follow the catalog.",
    )

    # monitoring (the monitor_recommender DAG): bands outside which the data counts as drifted
    drift_window_days: float = Field(default=14.0, gt=0, description="Window compared on each side.")
    drift_popularity_psi: float = Field(default=0.5, gt=0, description="PSI of item popularity (top 50 + rest).")
    drift_event_type_psi: float = Field(default=0.1, gt=0, description="PSI of the event-type mix.")
    drift_unknown_user_share: float = Field(default=0.8, ge=0, le=1, description="New users' share of events.")
    drift_unknown_item_share: float = Field(default=0.5, ge=0, le=1, description="New items' share of events.")
    drift_volume_low: float = Field(default=0.5, ge=0, description="Events per window, current / reference.")
    drift_volume_high: float = Field(default=2.0, gt=0)

    # orchestration and the local stack (`recsys up`)
    landing_dir: Path | None = Field(default=None, description="Folder the ingest DAG picks files up from.")
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    airflow_port: int = Field(default=8080, ge=1, le=65535)
    airflow_parallelism: int = Field(default=4, ge=1, le=64, description="Airflow task slots (4 suits 2 cores).")
    api_url: str | None = Field(default=None, description="The API the retrain's smoke check asks (None: skip).")
    smoke_users: int = Field(default=5, ge=1, le=1000, description="Users the smoke check reads back.")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        keys = self.parsed_api_keys()  # fail early on a malformed RECSYS_API_KEYS
        if self.env == "production":
            secrets = {"RECSYS_HMAC_SECRET": self.hmac_secret.get_secret_value()}
            if self.user_signing_secret is not None:
                secrets["RECSYS_USER_SIGNING_SECRET"] = self.user_signing_secret.get_secret_value()
            secrets |= {f"RECSYS_API_KEYS entry {n} ({k.role})": key for n, (key, k) in enumerate(keys.items(), 1)}
            for name, value in secrets.items():
                refuse_weak_secret(name, value)
            urls = {"RECSYS_REDIS_URL": self.redis_url, "RECSYS_CATALOG_URI": self.catalog_uri}
            urls["MLFLOW_TRACKING_URI"] = self.mlflow_tracking_uri
            if self.mlflow_password is not None:
                urls["MLFLOW_TRACKING_PASSWORD"] = self.mlflow_password.get_secret_value()
            for name in placeholders({k: v for k, v in urls.items() if v is not None}):  # the passwords in them
                raise ValueError(f"RECSYS_ENV=production: {name} holds a placeholder password; set a random one.")
        if self.require_user_signature and self.user_signing_secret is None:
            raise ValueError("RECSYS_REQUIRE_USER_SIGNATURE=true needs RECSYS_USER_SIGNING_SECRET.")
        if self.redis_cluster and not self.redis_url:
            raise ValueError("RECSYS_REDIS_CLUSTER=true needs RECSYS_REDIS_URL: the URL of any node of the cluster.")
        if not self.event_weights:
            raise ValueError("RECSYS_EVENT_WEIGHTS must name at least one event type.")
        rate_limit_items(self)  # fail early on a limit that does not parse
        return self

    def parsed_api_keys(self) -> Mapping[str, ApiKey]:
        """``RECSYS_API_KEYS`` as {key: (role, name)} (parsed once; the API asks on every request)."""
        return parse_api_keys(self.api_keys.get_secret_value())

    @property
    def keyless(self) -> bool:
        """Development without any API key: the shop's routes (not admin's) answer anyone."""
        return self.env == "development" and not self.parsed_api_keys()

    @property
    def reads_open(self) -> bool:
        """Whether shop reads answer without a key (never by default in production)."""
        return self.keyless if self.open_reads is None else self.open_reads

    @property
    def home_abs(self) -> Path:
        """Absolute ``RECSYS_HOME``."""
        return self.home.expanduser().resolve()

    @property
    def event_types(self) -> tuple[str, ...]:
        """The accepted event types, in configuration order."""
        return tuple(self.event_weights)

    @property
    def iceberg_catalog_uri(self) -> str:
        """SQL catalog URI; SQLite under ``RECSYS_HOME`` unless set."""
        return self.catalog_uri or f"sqlite:///{self.home_abs / 'catalog.db'}"

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI: ``MLFLOW_TRACKING_URI`` when set, else SQLite under ``RECSYS_HOME``."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home_abs / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        """Where a local tracking store keeps artifacts."""
        return self.home_abs / "mlartifacts"

    @property
    def landing(self) -> Path:
        """The landing folder (``RECSYS_HOME/landing`` unless set)."""
        return (self.landing_dir or self.home_abs / "landing").expanduser().resolve()

    @property
    def iceberg_warehouse(self) -> str:
        """Warehouse location; a local folder under ``RECSYS_HOME`` unless set."""
        return self.warehouse or (self.home_abs / "warehouse").as_uri()


def is_placeholder(value: str) -> bool:
    """Whether ``value`` still holds ``.env.example``'s placeholder (or the development secret)."""
    return value == DEV_SECRET or PLACEHOLDER in value


def placeholders(env: Mapping[str, str]) -> list[str]:
    """The names in ``env`` whose values are placeholders (compose's start-up check: whichever service reads
    them, PostgreSQL's and Grafana's passwords included)."""
    return sorted(name for name, value in env.items() if is_placeholder(value))


def refuse_weak_secret(name: str, value: str) -> None:
    """Production refuses ``.env.example``'s placeholders and secrets under 32 bytes (never echoing them)."""
    if is_placeholder(value):
        raise ValueError(
            f"RECSYS_ENV=production: {name} is a placeholder; set a random value (`openssl rand -hex 32`)."
        )
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"RECSYS_ENV=production: {name} is shorter than {MIN_SECRET_BYTES} bytes; use `openssl rand -hex 32`."
        )


class ApiKey(NamedTuple):
    """What a configured key may do, and the name it is recorded under (rules history)."""

    role: str
    name: str


@lru_cache(maxsize=8)
def parse_api_keys(text: str) -> Mapping[str, ApiKey]:
    """Comma-separated ``key:role`` or ``key:role:name`` entries as a read-only {key: ApiKey}.

    A key without a name is recorded as ``key<position>``. A malformed entry is named by its
    position, never by its text: it may be a key.
    """
    keys: dict[str, ApiKey] = {}
    for n, entry in enumerate(filter(None, (p.strip() for p in text.split(","))), 1):
        key, sep, role = entry.rpartition(":")
        name = f"key{n}"
        if role not in ROLES and sep:  # key:role:name
            named = key.rpartition(":")
            if named[1] and named[2] in ROLES and _NAME.fullmatch(role):
                key, role, name = named[0], named[2], role
        if not sep or not key or role not in ROLES:
            raise ValueError(
                f"RECSYS_API_KEYS: entry {n} is not key:role or key:role:name with a role in {', '.join(ROLES)} "
                "and a name of letters, digits, '-' or '_' (keys are not shown)"
            )
        keys[key] = ApiKey(role, name)
    return MappingProxyType(keys)


_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def rate_limit_items(settings: Settings) -> dict[str, Any]:
    """The configured limits, parsed (limits' notation: "50/second", "600/minute", "10 per 5 seconds")."""
    from limits import parse

    named = {
        "RECSYS_CLIENT_RATE_LIMIT": settings.client_rate_limit,
        "RECSYS_CLIENT_EVENT_LIMIT": settings.client_event_limit,
        **{f"RECSYS_KEY_RATE_LIMITS[{k}]": v for k, v in settings.key_rate_limits.items()},
    }
    parsed = {}
    for name, text in named.items():
        if not text:
            continue
        try:
            parsed[name] = parse(text)
        except ValueError as exc:
            raise ValueError(f"{name}: {text!r} is not a rate limit (e.g. 50/second, 600/minute)") from exc
    return parsed


def role_allows(role: str | None, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may (roles are ordered, see :data:`ROLES`)."""
    return role is not None and ROLES.index(role) >= ROLES.index(needed)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()
