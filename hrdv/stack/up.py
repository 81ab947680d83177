"""`hrdv up`: start every component that is down, then wait until all are healthy, and report
each one's state.

Two phases, so that one slow component never keeps the others down:
1. start: each component in dependency order; a failure is recorded (with its reason) and only
   the components that need the failed one are skipped. Nothing here waits for the connector.
2. verify: poll every component's health together until all are healthy or the deadline passes.
   A connector or task found FAILED is restarted through Connect's REST API; one UNASSIGNED for
   a while gets its Connect worker restarted (see ConnectorDoctor).
The caller prints the table and exits non-zero when something is still not healthy.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hrdv.settings import Settings
from hrdv.stack import connect, kafka, postgres, process, superset

# A connector is UNASSIGNED for a moment after every (re)registration and worker start; only one
# that stays so is stuck (a lost assignment waiting for scheduled.rebalance.max.delay.ms).
UNASSIGNED_GRACE_S = 20.0
RESTART_EVERY_S = 20.0  # between two REST restarts of the connector: each one is a rebalance
POLL_S = 1.0


@dataclass
class Outcome:
    """One component's state, as the final table shows it."""

    component: str
    state: str            # started, running, FAILED, skipped, healthy, NOT HEALTHY
    detail: str = ""
    ok: bool = True


@dataclass
class Component:
    """A component `up` manages: how to start it and how to tell that it is healthy."""

    name: str
    start: Callable[[], str]                  # starts it if down; returns "started" or "running"
    healthy: Callable[[], tuple[bool, str]]   # a quick probe (the connector's may restart Connect once)
    needs: tuple[str, ...] = ()


@dataclass
class Plan:
    """What one `up` does, and what it found."""

    components: list[Component]
    started: dict[str, Outcome] = field(default_factory=dict)
    since: Any = None  # database time before the connector's PUT (proof of a fresh heartbeat)
    # The PUT's outcome: tables new to the capture wait there for their incremental snapshot.
    registration: connect.Registration | None = None


def _short(error: BaseException) -> str:
    """The first line of an error, for the table; the full message is printed when it happens."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:160]


def start_all(plan: Plan) -> None:
    """Phase 1: start each component; a failure skips only the components that need it."""
    for component in plan.components:
        missing = [need for need in component.needs
                   if need in plan.started and not plan.started[need].ok]
        if missing:
            plan.started[component.name] = Outcome(component.name, "skipped",
                                                   f"needs {', '.join(missing)}", ok=False)
            print(f"{component.name}: skipped, {', '.join(missing)} did not start", flush=True)
            continue
        try:
            state = component.start()
            plan.started[component.name] = Outcome(component.name, state)
        except Exception as error:  # noqa: BLE001 - reported in the table; the others go on
            print(f"{component.name}: FAILED to start: {error}", flush=True)
            plan.started[component.name] = Outcome(component.name, "FAILED", _short(error), ok=False)


def verify_all(plan: Plan, timeout: float) -> list[Outcome]:
    """Phase 2: poll every started component until all are healthy or `timeout` s pass."""
    deadline = time.monotonic() + timeout
    pending = [c for c in plan.components if plan.started[c.name].ok]
    done: dict[str, Outcome] = {}
    last_report = 0.0
    while pending:
        still = []
        for component in pending:
            ok, detail = _probe(component)
            if ok:
                done[component.name] = Outcome(component.name, "healthy",
                                               f"{plan.started[component.name].state}; {detail}")
                print(f"{component.name}: healthy ({detail})", flush=True)
            else:
                still.append((component, detail))
        pending = [component for component, _ in still]
        if not pending or time.monotonic() > deadline:
            for component, detail in still:
                done[component.name] = Outcome(component.name, "NOT HEALTHY", detail, ok=False)
            break
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            waiting = ", ".join(f"{c.name} ({d})" for c, d in still)
            print(f"==> waiting for {waiting}; {deadline - time.monotonic():.0f} s left", flush=True)
        time.sleep(POLL_S)
    return [done.get(c.name) or plan.started[c.name] for c in plan.components]


def _probe(component: Component) -> tuple[bool, str]:
    try:
        return component.healthy()
    except Exception as error:  # noqa: BLE001 - a probe that fails says "not yet"
        return False, _short(error)


# --- probes ----------------------------------------------------------------------------------------
def _postgres_healthy(settings: Settings) -> tuple[bool, str]:
    health = postgres.health(settings)
    return (True, f"port {settings.pg_port}") if health["up"] else (False, health.get("error", "down"))


def _broker_healthy(settings: Settings) -> tuple[bool, str]:
    health = kafka.health(settings)["broker"]
    if health["up"]:
        return True, f"{settings.kafka_bootstrap}, {health['topics']} topics"
    return False, health.get("error", "down")


def _connect_healthy(settings: Settings) -> tuple[bool, str]:
    health = kafka.health(settings)["connect"]
    return (True, settings.connect_url) if health["up"] else (False, health.get("error", "down"))


def _process_healthy(settings: Settings, name: str) -> tuple[bool, str]:
    pid = process.pid_of(name, settings)
    if pid is None:
        return False, f"not running; see {process.log_path(name, settings)}"
    return True, f"pid {pid}"


def _webserver_healthy(settings: Settings) -> tuple[bool, str]:
    running, detail = _process_healthy(settings, "dagster-webserver")
    if running and not process.port_open(settings.dagster_port):
        return False, f"{detail}, port {settings.dagster_port} not open yet"
    return running, f"{detail}, http://127.0.0.1:{settings.dagster_port}"


def _superset_healthy(settings: Settings) -> tuple[bool, str]:
    """gunicorn runs, its port is open and /health answers OK."""
    health = superset.health(settings)
    if not health["up"]:
        return False, health["error"]
    return True, f"pid {health['pid']}, {health['url']}"


class ConnectorDoctor:
    """Probes the connector and heals it when it is stuck; each action is printed.

    FAILED (the connector or a task): restart the failed parts through the REST API, at most
    every RESTART_EVERY_S. UNASSIGNED for UNASSIGNED_GRACE_S: the worker keeps the work of a
    group member it lost for scheduled.rebalance.max.delay.ms, and a REST restart does not
    reassign it (measured: HTTP 202, still UNASSIGNED); a new worker process has no memory of the
    lost member and assigns it at once, so restart the Connect worker, once. With HRDV's delay of
    0 that never happens, but a worker started with an older config (or a changed one) needs it.
    """

    def __init__(self, settings: Settings, plan: Plan) -> None:
        self.settings, self.plan = settings, plan
        self.unassigned_since: float | None = None
        self.last_restart = 0.0
        self.actions: list[str] = []

    def __call__(self) -> tuple[bool, str]:
        status = connect.connector_health(self.settings)
        ok, detail = connect.streaming_state(self.settings, self.plan.since, status)
        if ok and self.plan.registration is not None \
                and not connect.request_snapshots(self.settings, self.plan.registration):
            return False, "RUNNING, waiting for the task with the new config to stream"
        if ok:
            return True, detail + (f" after {', '.join(self.actions)}" if self.actions else "")
        self._heal(connect.states(status))
        return False, detail

    def _heal(self, found: list[str]) -> None:
        now = time.monotonic()
        if "UNASSIGNED" not in found:
            self.unassigned_since = None
        elif self.unassigned_since is None:
            self.unassigned_since = now
        elif now - self.unassigned_since >= UNASSIGNED_GRACE_S and "worker restart" not in self.actions:
            self._restart_worker(now - self.unassigned_since)
            return
        if "FAILED" in found and now - self.last_restart >= RESTART_EVERY_S:
            code = connect.restart_connector(self.settings, only_failed=True)
            self.last_restart = now
            self.actions.append("REST restart")
            print(f"connector: {'/'.join(found)}; restart of the failed parts requested through "
                  f"the REST API: HTTP {code}", flush=True)

    def _restart_worker(self, stuck_s: float) -> None:
        print(f"connector: UNASSIGNED for {stuck_s:.0f} s (Connect holds the work of a lost group "
              "member for scheduled.rebalance.max.delay.ms); restarting the Connect worker",
              flush=True)
        self.actions.append("worker restart")
        kafka.stop_connect(self.settings)
        kafka.start_connect(self.settings)
        self.unassigned_since = None


# --- the plan --------------------------------------------------------------------------------------
def _already(check: Callable[[], bool], start: Callable[[], None]) -> str:
    """Run `start` (every start function is idempotent); say whether it was already running."""
    was = check()
    start()
    return "running" if was else "started"


# What each service started as a detached process needs, and its probe if not just "it runs".
SERVICE_NEEDS = {"generator": ("stores",), "dagster-daemon": ("postgres",),
                 "dagster-webserver": ("postgres",)}


def plan_for(settings: Settings, *, init_stores: Callable[[], None],
             spawn: Callable[[str], None], services: list[str], with_superset: bool = False) -> Plan:
    """The components of `up` in start order, with their probes. `spawn(name)` starts the
    detached service `name` (one of `services`: ingestor, generator, dagster-*) if it is down.
    `with_superset` adds Superset (the dashboards) last: its first start bootstraps its metadata
    for about 20 s, which should not hold up the pipeline's services."""
    plan = Plan([])

    def put_connector() -> str:
        plan.registration = connect.put_connector(settings)
        plan.since = plan.registration.since
        return plan.registration.verb

    def service(name: str) -> Component:
        probe = ((lambda: _webserver_healthy(settings)) if name == "dagster-webserver"
                 else (lambda: _process_healthy(settings, name)))
        return Component(name, lambda: _already(lambda: process.is_running(name, settings),
                                                lambda: spawn(name)),
                         probe, needs=SERVICE_NEEDS.get(name, ()))

    plan.components += [
        Component("postgres", lambda: _already(lambda: postgres.running(settings),
                                               lambda: postgres.start(settings)),
                  lambda: _postgres_healthy(settings)),
        Component("kafka", lambda: _already(lambda: process.is_running(kafka.BROKER, settings),
                                            lambda: kafka.start_broker(settings)),
                  lambda: _broker_healthy(settings)),
        Component("connect", lambda: _already(lambda: process.is_running(kafka.CONNECT, settings),
                                              lambda: kafka.start_connect(settings)),
                  lambda: _connect_healthy(settings), needs=("kafka",)),
        # Schemas and the initial load come before the connector, so its snapshot carries them.
        Component("stores", lambda: (init_stores(), "ready")[1], lambda: (True, "schemas applied"),
                  needs=("postgres",)),
        Component("connector", put_connector, ConnectorDoctor(settings, plan),
                  needs=("connect", "stores")),
        *(service(name) for name in services),
    ]
    if with_superset:
        plan.components.append(
            Component("superset", lambda: _already(lambda: superset.running(settings),
                                                   lambda: superset.start(settings)),
                      lambda: _superset_healthy(settings), needs=("postgres",)))
    return plan


def table(outcomes: list[Outcome]) -> str:
    """component | state | detail, one line each."""
    width = max(len(o.component) for o in outcomes) + 2
    lines = [f"{'component':{width}} {'state':12} detail"]
    lines += [f"{o.component:{width}} {o.state:12} {o.detail}" for o in outcomes]
    return "\n".join(lines)
