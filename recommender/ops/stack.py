"""The local stack (``recsys up``): Redis-protocol server, MLflow server, Airflow 3 and the API on one machine.

No Docker: each part is a child process in its own session (so stopping it stops all its
children), logging to ``RECSYS_HOME/logs``. Airflow's home is ``RECSYS_HOME/airflow``; its
tasks get the stack's Redis, MLflow and API URLs in their environment. Leaving the context
stops everything it started, newest first, and waits until each process group is gone.
A ``stack.json`` in ``RECSYS_HOME`` tells other commands (``recsys demo``) a stack is up.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from recommender.config import WRITER_POOL, WRITER_POOL_DOC, Settings
from recommender.online.redis_conn import embedded_server
from recommender.ops.airflow_api import AirflowClient
from recommender.progress import StepFn, silent

STATE_FILE = "stack.json"
AIRFLOW_USER = "admin"
DAGS = Path(__file__).resolve().parents[2] / "dags"
AIRFLOW_SETTINGS = DAGS.parent / "infra" / "airflow"
"""Holds ``airflow_local_settings.py``: the scheduler preloads the pipeline library its tasks fork from."""


class StackError(RuntimeError):
    """A part of the stack could not start."""


@dataclass(frozen=True)
class StackInfo:
    """Where the parts of a running stack answer."""

    api: str
    mlflow: str
    airflow: str
    redis: str
    airflow_user: str
    airflow_password: str
    mlflow_user: str
    mlflow_password: str
    logs: str
    pid: int = field(default_factory=os.getpid)

    @property
    def shop(self) -> str:
        """The shop page."""
        return f"{self.api}/shop/"


def _bin(name: str) -> str:
    """A console script of this environment (``airflow``, ``mlflow``, ``recsys``)."""
    return str(Path(sys.executable).with_name(name))


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def interrupt_on_sigterm() -> None:
    """Treat SIGTERM (and SIGINT, even where a shell ignored it) as Ctrl-C, so stopping stops all."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def state_path(settings: Settings) -> Path:
    """Where a running stack records its URLs."""
    return settings.home_abs / STATE_FILE


def running_stack(settings: Settings) -> StackInfo | None:
    """The stack already up for this ``RECSYS_HOME``, if any."""
    path = state_path(settings)
    if not path.is_file():
        return None
    try:
        info = StackInfo(**json.loads(path.read_text()))
        os.kill(info.pid, 0)
        httpx.get(f"{info.api}/healthz", timeout=2).raise_for_status()
    except (ValueError, TypeError, OSError, httpx.HTTPError):
        return None
    return info


def airflow_env(settings: Settings, base: dict[str, str]) -> dict[str, str]:
    """Airflow 3 configured for this machine: SQLite under ``RECSYS_HOME``, this repo's DAGs, 4 slots."""
    port = settings.airflow_port
    return {
        **base,
        "AIRFLOW_HOME": str(settings.home_abs / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": str(settings.airflow_parallelism),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        # tasks reach the scheduler through the API server: it must follow the port
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USER}:admin",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(AIRFLOW_SETTINGS), base.get("PYTHONPATH")])),
    }


MLFLOW_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
"""The job runner's consumers cost about 230 MB each and nothing here uses them."""
MLFLOW_USER = "admin"
AUTH_INI = """[mlflow]
default_permission = READ
database_uri = sqlite:///{db}
admin_username = {user}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
"""
"""``auth_cache_ttl_seconds``: a password check is a slow PBKDF2 hash by design; without the cache every
request (each artifact file of a model download) pays it."""


@dataclass(frozen=True)
class MlflowAuth:
    """The MLflow server's basic-auth set-up under one home: what the server and its clients need."""

    user: str
    password: str
    server_env: dict[str, str]

    @property
    def client_env(self) -> dict[str, str]:
        """What an MLflow client (Airflow's tasks, the tests) sends to log in."""
        return {"MLFLOW_TRACKING_USERNAME": self.user, "MLFLOW_TRACKING_PASSWORD": self.password}


def mlflow_auth(home: Path) -> MlflowAuth:
    """Credentials of the local MLflow server: made once (random, readable only by this user), then reused."""
    folder = home / "mlflow-auth"
    folder.mkdir(parents=True, exist_ok=True)
    secrets_file = folder / "admin.json"
    if not secrets_file.is_file():
        secrets_file.touch(mode=0o600)
        values = {"password": secrets.token_urlsafe(24), "flask_secret": secrets.token_hex(32)}
        secrets_file.write_text(json.dumps(values))
    values = json.loads(secrets_file.read_text())
    ini = folder / "basic_auth.ini"
    ini.write_text(AUTH_INI.format(db=folder / "basic_auth.db", user=MLFLOW_USER))
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": values["password"],  # used once, to create the admin user
        "MLFLOW_FLASK_SERVER_SECRET_KEY": values["flask_secret"],
    }
    return MlflowAuth(MLFLOW_USER, values["password"], env)


def mlflow_command(home: Path, port: int) -> list[str]:
    """``mlflow server`` for one machine, behind MLflow's basic-auth app (credentials: :func:`mlflow_auth`):
    SQLite registry and proxied artifacts under ``home``, one worker, loopback only."""
    return [
        *(_bin("mlflow"), "server", "--app-name", "basic-auth"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        *(
            "--backend-store-uri",
            f"sqlite:///{home / 'mlflow.db'}",
            "--artifacts-destination",
            str(home / "mlartifacts"),
        ),
    ]


def spawn(name: str, cmd: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session (so its whole group can be stopped), logging to ``logs/{name}.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``timeout``; waits until it is gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(proc.pid):
            proc.poll()
            time.sleep(0.2)
        if not _group_alive(proc.pid):
            break
    proc.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_healthy(name: str, url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll ``url`` until it answers 2xx (Airflow: every component healthy); fail if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{name} exited with code {proc.returncode}; see {log}")
        try:
            response = httpx.get(url, timeout=3)
            if response.is_success and _components_healthy(response):
                return
            last = f"HTTP {response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = str(exc) or type(exc).__name__
        time.sleep(1.0)
    raise StackError(f"{name} not healthy after {timeout:.0f} s ({last}); see {log}")


def _components_healthy(response: httpx.Response) -> bool:
    """Airflow's health answer lists its components; anything else counts as healthy when 2xx."""
    try:
        body = response.json()
    except ValueError:
        return True
    if not isinstance(body, dict):
        return True
    states = [v.get("status") for v in body.values() if isinstance(v, dict) and "status" in v]
    return all(s == "healthy" for s in states)


def airflow_password(settings: Settings) -> str:
    """The admin password ``airflow standalone`` generated (readable once Airflow is up)."""
    path = settings.home_abs / "airflow" / "simple_auth_manager_passwords.json.generated"
    return str(json.loads(path.read_text())[AIRFLOW_USER])


@dataclass
class Running:
    """A started stack: its URLs and its processes."""

    info: StackInfo
    procs: dict[str, subprocess.Popen[bytes]]

    def wait(self) -> str:
        """Block until a part exits; returns which (Ctrl-C raises KeyboardInterrupt as usual)."""
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    return f"{name} exited with code {proc.returncode}; see {self.info.logs}/{name}.log"
            time.sleep(1.0)


@contextmanager
def local_stack(settings: Settings, notify: StepFn = silent) -> Iterator[Running]:
    """Start the whole stack; yields it running; stops all of it on exit."""
    running = running_stack(settings)
    if running is not None:
        raise StackError(f"a stack is already up for this RECSYS_HOME (pid {running.pid}); stop it first")
    ports = {"RECSYS_API_PORT": settings.api_port, "RECSYS_MLFLOW_PORT": settings.mlflow_port}
    ports["RECSYS_AIRFLOW_PORT"] = settings.airflow_port
    busy = [f"{port} ({name})" for name, port in ports.items() if not port_free(port)]
    if busy:
        raise StackError(f"port(s) in use: {', '.join(busy)}; stop what uses them or set those settings")
    logs = settings.home_abs / "logs"
    with ExitStack() as stack:
        redis = settings.redis_url or stack.enter_context(embedded_server(settings))
        notify(f"redis: {redis}" + ("" if settings.redis_url else " (embedded Valkey, data in RECSYS_HOME/redis)"))
        api = f"http://127.0.0.1:{settings.api_port}"
        mlflow = f"http://127.0.0.1:{settings.mlflow_port}"
        airflow = f"http://127.0.0.1:{settings.airflow_port}"
        bin_dir = str(Path(sys.executable).parent)
        settings.home_abs.mkdir(parents=True, exist_ok=True)
        auth = mlflow_auth(settings.home_abs)
        env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # airflow standalone spawns `airflow`
            "RECSYS_HOME": str(settings.home_abs),
            "RECSYS_REDIS_URL": redis,
            "MLFLOW_TRACKING_URI": mlflow,
            **auth.client_env,
            "RECSYS_API_URL": api,
            "OPENBLAS_NUM_THREADS": "1",
        }
        procs: dict[str, subprocess.Popen[bytes]] = {}

        def start(name: str, cmd: list[str], child_env: dict[str, str]) -> subprocess.Popen[bytes]:
            proc = spawn(name, cmd, child_env, logs)
            procs[name] = proc
            stack.callback(stop_process, proc)
            return proc

        notify("starting MLflow and Airflow (about a minute on 2 cores)")
        ml_env = {**env, **MLFLOW_ENV, **auth.server_env}
        ml = start("mlflow", mlflow_command(settings.home_abs, settings.mlflow_port), ml_env)
        af = start("airflow", [_bin("airflow"), "standalone"], airflow_env(settings, env))
        wait_healthy("MLflow", f"{mlflow}/health", ml, logs / "mlflow.log", 180)
        notify(f"mlflow: {mlflow} (login {auth.user}, password in {settings.home_abs / 'mlflow-auth'})")
        wait_healthy("Airflow", f"{airflow}/api/v2/monitor/health", af, logs / "airflow.log", 300)
        password = airflow_password(settings)
        AirflowClient(airflow, AIRFLOW_USER, password).ensure_pool(WRITER_POOL, 1, WRITER_POOL_DOC)
        notify(f"airflow: {airflow} (pool {WRITER_POOL}: one Iceberg writer at a time)")
        serve_cmd = [_bin("recsys"), "serve", "--host", "127.0.0.1", "--port", str(settings.api_port)]
        srv = start("api", serve_cmd, env)
        wait_healthy("API", f"{api}/healthz", srv, logs / "api.log", 120)
        notify(f"api: {api}")
        info = StackInfo(api, mlflow, airflow, redis, AIRFLOW_USER, password, auth.user, auth.password, str(logs))
        state_path(settings).write_text(json.dumps(asdict(info)))
        stack.callback(state_path(settings).unlink, missing_ok=True)
        yield Running(info, procs)
