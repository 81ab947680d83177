"""Apache Superset 6.1.0, the dashboards: gunicorn on 127.0.0.1:<superset_port>, beside the Dagster UI.

Superset runs from a virtual environment of its own, $REPO/.superset-venv (SQLAlchemy 1.4; the
pipeline's .venv has 2.x), which `./hrdv.sh up` and `./hrdv.sh test` install from
stack/superset/requirements.txt. Its configuration is stack/superset/superset_config.py, which
reads what differs per stack from the environment built here (environment()). Its metadata (users,
charts, dashboards) is the `superset` database of the stack's PostgreSQL, owned by the login
settings.superset; the dashboards read the marts as settings.reporting (reporting_uri()). It runs
with TZ=Europe/Moscow (the reporting zone), so that its relative time ranges are Moscow's.

start() bootstraps the metadata first when needed (`superset db upgrade`, `superset init`, then
stack/superset/bootstrap.py: the administrator settings.superset_admin with the password of the
secrets file, and the Russian login page). A stamp in $HRDV_HOME/superset/ remembers for which
Superset version, configuration and administrator that was done, so a later start skips it (a new
administrator password re-runs only the last step, about 4 s).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
from filelock import FileLock

from hrdv.settings import REPO_ROOT, Login, Settings
from hrdv.stack import process
from hrdv.stack.process import StackError

NAME = "superset"
VENV = REPO_ROOT / ".superset-venv"
FOLDER = REPO_ROOT / "stack" / "superset"
CONFIG = FOLDER / "superset_config.py"
BOOTSTRAP = FOLDER / "bootstrap.py"
REQUIREMENTS = FOLDER / "requirements.txt"
# gunicorn: 2 worker processes x 4 threads. One worker serves a dashboard's parallel chart requests
# on its threads; the second keeps the UI answering while the first is busy (an import, a slow
# query) or restarting. Each worker is a whole Superset app of its own: measured at rest, 2 workers
# hold about 575 MiB resident (gunicorn 25 + 2 x 275; PSS 470 MiB), 1 worker about 300 MiB.
WORKERS = 2
THREADS = 4
TIMEOUT_S = 120  # gunicorn's --timeout and Superset's SUPERSET_WEBSERVER_TIMEOUT (superset_config.py)
# What Superset stores instead of a password in a database's URI (superset/constants.py); an
# import bundle carries the URI masked and the password beside it.
PASSWORD_MASK = "X" * 10
# Seconds each bootstrap step took when measured, for the progress lines.
_STEPS_S = {"db upgrade": 6, "init": 8, "accounts": 4}


def url(settings: Settings) -> str:
    """Superset's address: http://127.0.0.1:<superset_port>."""
    return settings.superset_url


def admin_login(settings: Settings) -> Login:
    """Superset's administrator (user and password), as the UI and the REST API take it."""
    return settings.superset_admin


def reporting_uri(settings: Settings, masked: bool = True, database: str = "hrdv") -> str:
    """The marts as Superset connects to them (the read-only reporting login), as a SQLAlchemy URI;
    masked (the default) it carries PASSWORD_MASK instead of the password, which is
    settings.reporting.password and is passed at import."""
    return settings.sqlalchemy_uri(database, settings.reporting, PASSWORD_MASK if masked else None)


def _bin(name: str) -> Path:
    return VENV / "bin" / name


def installed_version() -> str | None:
    """apache-superset's version in the Superset venv, None if it is not installed there."""
    found = sorted(VENV.glob("lib/python*/site-packages/apache_superset-*.dist-info"))
    if not found or not _bin("gunicorn").exists():
        return None
    return found[-1].name.removeprefix("apache_superset-").removesuffix(".dist-info")


def ensure_installed() -> str:
    """The installed Superset version; StackError if the venv is missing."""
    version = installed_version()
    if version is None:
        raise StackError(f"superset: its environment {VENV} is missing or incomplete; run "
                         f"`./hrdv.sh up`, which installs it from {REQUIREMENTS.relative_to(REPO_ROOT)}")
    return version


def environment(settings: Settings, admin: bool = False) -> dict[str, str]:
    """Environment of Superset's processes: what superset_config.py reads, and nothing of the
    pipeline's (its venv, PYTHONPATH, passwords); `admin` adds the administrator's login, which
    only bootstrap.py needs."""
    from hrdv.catalog_sql import REPORTING_TZ

    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("HRDV_", "SUPERSET_", "DAGSTER_", "FLASK_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(
        PATH=f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}",
        VIRTUAL_ENV=str(VENV),
        PYTHONUNBUFFERED="1",
        # Superset computes relative time ranges ("today", "now", DATEADD(DATETIME("now"), ...)) with
        # the process's local clock, and the report views give periods in Moscow time (timestamps
        # without a zone): "today" must be Moscow's day, whatever the machine's zone.
        TZ=REPORTING_TZ.key,
        SUPERSET_CONFIG_PATH=str(CONFIG),
        SUPERSET_HOME=str(settings.superset_home),  # instead of ~/.superset
        SUPERSET_SECRET_KEY=settings.superset_secret_key,
        HRDV_SUPERSET_METADATA_URI=settings.superset_metadata_uri,
        HRDV_SUPERSET_PORT=str(settings.superset_port),
        HRDV_SUPERSET_TIMEOUT=str(TIMEOUT_S),
    )
    if admin:
        env.update(HRDV_SUPERSET_ADMIN_USER=settings.superset_admin.user,
                   HRDV_SUPERSET_ADMIN_PASSWORD=settings.superset_admin.password)
    return env


# --- bootstrap -----------------------------------------------------------------------------------
def _stamp(settings: Settings) -> Path:
    return settings.superset_home / "bootstrap.stamp"


def _digest(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _fingerprints(settings: Settings, version: str) -> dict[str, str]:
    """What each part of the bootstrap depends on (hashed: the stamp holds no password):
    metadata (`db upgrade`, `init`): Superset's version, the configuration, the metadata database;
    accounts (bootstrap.py): those, the script and the administrator's login."""
    metadata = _digest(version, CONFIG.read_bytes(), settings.superset_metadata_uri)
    accounts = _digest(metadata, BOOTSTRAP.read_bytes(), settings.superset_admin.user,
                       settings.superset_admin.password)
    return {"superset": version, "metadata": metadata, "accounts": accounts}


def _stamped(settings: Settings) -> dict[str, str]:
    try:
        return json.loads(_stamp(settings).read_text())
    except (OSError, ValueError):
        return {}


def _admin_exists(settings: Settings) -> bool:
    """The administrator is in the metadata database (which may have been wiped since the stamp)."""
    try:
        with psycopg.connect(settings.pg_dsn("superset", settings.superset), connect_timeout=5) as conn:
            return conn.execute("SELECT 1 FROM ab_user WHERE username = %s AND active",
                                [settings.superset_admin.user]).fetchone() is not None
    except psycopg.Error:
        return False


def pending_steps(settings: Settings) -> list[str]:
    """The bootstrap steps the metadata needs: none when the stamp matches this Superset,
    configuration and administrator, and the administrator exists."""
    wanted = _fingerprints(settings, ensure_installed())
    stamped = _stamped(settings)
    if stamped.get("metadata") != wanted["metadata"] or not _admin_exists(settings):
        return ["db upgrade", "init", "accounts"]
    if stamped.get("accounts") != wanted["accounts"]:
        return ["accounts"]
    return []


def _run_step(settings: Settings, step: str, argv: list[str], env: dict[str, str]) -> None:
    began = _progress(f"superset: {step} (about {_STEPS_S[step]} s)")
    log = process.log_path(NAME, settings)
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} bootstrap: {' '.join(argv)}\n".encode())
        out.flush()
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              env=env, cwd=settings.superset_home)
    if done.returncode != 0:
        raise StackError(f"superset: {step} failed (exit {done.returncode}); see {log}\n"
                         f"--- last lines of {log.name} ---\n{process.log_tail(log)}")
    print(f"superset: {step} done in {time.monotonic() - began:.1f} s", flush=True)


def _progress(message: str) -> float:
    print(f"==> {message}", flush=True)
    return time.monotonic()


def bootstrap(settings: Settings, force: bool = False) -> list[str]:
    """Bring Superset's metadata up to date (migrations, roles and permissions, administrator,
    Public's language pack) as far as the stamp says it is not; returns the steps that ran."""
    version = ensure_installed()
    steps = ["db upgrade", "init", "accounts"] if force else pending_steps(settings)
    if not steps:
        return steps
    settings.superset_home.mkdir(parents=True, exist_ok=True)
    settings.logs.mkdir(parents=True, exist_ok=True)
    _stamp(settings).unlink(missing_ok=True)
    superset = str(_bin("superset"))
    commands = {"db upgrade": ([superset, "db", "upgrade"], environment(settings)),
                "init": ([superset, "init"], environment(settings)),
                "accounts": ([str(_bin("python")), str(BOOTSTRAP)], environment(settings, admin=True))}
    for step in steps:
        _run_step(settings, step, *commands[step])
    _stamp(settings).touch(mode=0o600)
    _stamp(settings).write_text(json.dumps(_fingerprints(settings, version)))
    return steps


# --- the process ---------------------------------------------------------------------------------
def _argv(settings: Settings) -> list[str]:
    return [
        str(_bin("gunicorn")),
        "-w", str(WORKERS), "-k", "gthread", "--threads", str(THREADS),
        "--timeout", str(TIMEOUT_S),
        # `hrdv down` waits this long for requests in flight (its stop SIGKILLs after 30 s).
        "--graceful-timeout", "10",
        # Superset's explore URLs carry the chart's form data; no limit on their length (as
        # Superset's own documentation runs gunicorn).
        "--limit-request-line", "0", "--limit-request-field_size", "0",
        # gunicorn 27 otherwise opens a control socket at ~/.gunicorn/gunicorn.ctl, one path for
        # every gunicorn of the user: a second stack's Superset would take over the first's.
        # Nothing here uses it (stop() signals the processes).
        "--no-control-socket",
        "-b", f"127.0.0.1:{settings.superset_port}",
        "superset.app:create_app()",
    ]


def running(settings: Settings) -> bool:
    return process.is_running(NAME, settings)


def start(settings: Settings) -> None:
    """Start Superset if it is down (bootstrapping its metadata first when needed); does not wait
    for it to answer (wait_healthy() does). Needs the stack's PostgreSQL running."""
    if running(settings):
        print(f"superset: already running on {url(settings)}", flush=True)
        return
    ensure_installed()
    settings.superset_home.mkdir(parents=True, exist_ok=True)
    with FileLock(str(settings.superset_home / ".start.lock")):  # two `up`s at once start one
        if running(settings):
            print(f"superset: started meanwhile on {url(settings)}", flush=True)
            return
        if process.port_open(settings.superset_port):
            raise StackError(f"superset: port {settings.superset_port} is taken by another process; "
                             "stop it or set HRDV_SUPERSET_PORT")
        bootstrap(settings)
        process.spawn(NAME, _argv(settings), settings, env=environment(settings),
                      cwd=settings.superset_home)
    print(f"superset: started on {url(settings)} ({WORKERS} workers x {THREADS} threads)", flush=True)


def stop(settings: Settings) -> bool:
    """Stop gunicorn and its workers; True if it was running."""
    return process.stop(NAME, settings)


def _answers(settings: Settings, timeout: float = 3.0) -> tuple[bool, str]:
    """GET /health: Superset answers "OK" once a worker has loaded the app."""
    try:
        with urllib.request.urlopen(f"{url(settings)}/health", timeout=timeout) as response:
            body = response.read(100).decode(errors="replace").strip()
            return (body == "OK", f"/health {response.status} {body!r}")
    except urllib.error.HTTPError as error:
        return False, f"/health HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        return False, f"/health: {getattr(error, 'reason', error)}"


def health(settings: Settings) -> dict[str, Any]:
    """up (gunicorn runs and /health answers OK), url, pid, resident memory of gunicorn and its
    workers (MiB), log, and what failed."""
    pid = process.pid_of(NAME, settings)
    report: dict[str, Any] = {"up": False, "url": url(settings), "pid": pid,
                              "rss_mib": process.rss_mib(NAME, settings),
                              "log": str(process.log_path(NAME, settings))}
    if pid is None:
        report["error"] = f"not running; see {report['log']}"
    elif not process.port_open(settings.superset_port):
        report["error"] = f"pid {pid}, port {settings.superset_port} not open yet"
    else:
        report["up"], detail = _answers(settings)
        if not report["up"]:
            report["error"] = f"pid {pid}, {detail}"
    return report


def wait_healthy(settings: Settings, timeout: float = 120.0) -> None:
    """Wait until /health answers OK; StackError (with the log's tail) on timeout or if gunicorn
    exits."""
    deadline = time.monotonic() + timeout
    log = process.log_path(NAME, settings)
    while True:
        report = health(settings)
        if report["up"]:
            return
        if report["pid"] is None:
            raise StackError(f"superset exited; see {log}\n--- last lines of {log.name} ---\n"
                             f"{process.log_tail(log)}")
        if time.monotonic() > deadline:
            raise StackError(f"superset not healthy within {timeout:.0f} s ({report['error']}); "
                             f"see {log}\n--- last lines of {log.name} ---\n{process.log_tail(log)}")
        time.sleep(0.5)
