"""The Kafka broker (single-node KRaft) and Kafka Connect (distributed mode) as plain JVMs.

No Kafka distribution or shell scripts: stack/pom.xml has Maven copy the jars into settings.jars
(lib/ for both JVMs, plugins/debezium-connector-postgres/ for the connector) and we run
`java -cp lib/*` with the flags kafka-run-class.sh would use. Rendered configs go to
$HRDV_HOME/conf, broker data to $HRDV_HOME/kafka, logs to $HRDV_HOME/logs/{kafka,connect}.log.
"""
from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from filelock import FileLock
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from hrdv.settings import KAFKA_SASL_MECHANISM, REPO_ROOT, Login, Settings
from hrdv.stack import kafka_access, process, tls
from hrdv.stack.process import StackError

STACK_DIR = REPO_ROOT / "stack"
POM = STACK_DIR / "pom.xml"
LOG4J = STACK_DIR / "log4j2.properties"
CONNECTOR_DIR = "debezium-connector-postgres"
BROKER, CONNECT = "kafka", "connect"
SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"

# What kafka-run-class.sh / kafka-server-start.sh pass, with a smaller heap for a laptop.
JVM_FLAGS = [
    "-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15", "-Djava.awt.headless=true",
]


# --- jars ----------------------------------------------------------------------------------------
def _lib(settings: Settings) -> Path:
    return settings.jars / "lib"


def plugin_path(settings: Settings) -> Path:
    return settings.jars / "plugins"


def _marker(settings: Settings) -> Path:
    return settings.jars / ".complete"


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()[:16]


def _complete(marker: Path) -> bool:
    """The jars for this very pom are all there (the marker is written last)."""
    return marker.exists() and marker.read_text().strip() == _pom_digest()


def ensure_jars(settings: Settings) -> None:
    """Resolve the jars with Maven unless a complete copy for this pom is already there.

    A marker with the pom's digest is written last, so an interrupted copy or an edited pom
    triggers a fresh resolution instead of a half-filled classpath.
    """
    if shutil.which("java") is None:
        raise StackError("java not found: the broker and Connect need Java 17 "
                         "(apt-get install -y openjdk-17-jre-headless)")
    marker = _marker(settings)
    if _complete(marker):
        return
    settings.jars.mkdir(parents=True, exist_ok=True)
    # Two stacks starting at once on a fresh clone (the suite's two workers, two `up`s) resolve
    # once: the second waits, then finds the marker. Without the lock it started while the first
    # was copying, and its Kafka found no jars.
    with FileLock(settings.jars / ".resolving.lock"):
        if not _complete(marker):
            _resolve_jars(settings, marker)


def _resolve_jars(settings: Settings, marker: Path) -> None:
    began = time.monotonic()
    # Start clean: jars left from another pom version would sit twice on the classpath.
    for folder in (_lib(settings), plugin_path(settings) / CONNECTOR_DIR):
        shutil.rmtree(folder, ignore_errors=True)
    print(f"jars: resolving Kafka + Debezium with Maven into {settings.jars} ...", flush=True)
    for profile in ("runtime", "connector"):
        argv = ["mvn", "-q", "-B", "-f", str(POM), f"-P{profile}", f"-Dhrdv.jars={settings.jars}",
                "package"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True)
        except FileNotFoundError:
            raise StackError("jars: `mvn` not found; install Maven (apt-get install -y maven)") from None
        if done.returncode != 0:
            raise StackError(f"jars: {' '.join(argv)} failed (exit {done.returncode}):\n"
                             f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
    marker.write_text(_pom_digest() + "\n")
    count = len(list(_lib(settings).glob("*.jar")))
    print(f"jars: {count} runtime jars ready in {time.monotonic() - began:.1f} s", flush=True)


def _java(settings: Settings, main_class: str, *args: str) -> list[str]:
    return ["java", *JVM_FLAGS, f"-Dlog4j2.configurationFile={LOG4J}",
            "-cp", f"{_lib(settings)}/*", main_class, *args]


# --- configs -------------------------------------------------------------------------------------
def _conf_dir(settings: Settings) -> Path:
    path = settings.home / "conf"
    path.mkdir(parents=True, exist_ok=True)
    return path


def kafka_data(settings: Settings) -> Path:
    return settings.home / "kafka"


def _properties_value(text: str) -> str:
    return text.replace("\\", "\\\\")  # java.util.Properties reads a backslash as an escape


def _jaas(module: str, login: Login, **options: str) -> str:
    """A sasl.jaas.config value; quoted JAAS strings take backslash escapes."""
    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    pairs = {"username": login.user, "password": login.password, **options}
    body = " ".join(f"{key}={quoted(value)}" for key, value in pairs.items())
    return _properties_value(f"{module} required {body};")


def _client_security(settings: Settings, principal: str) -> str:
    """The security lines of a Java client (Connect's worker and the clients it creates)."""
    lines = [f"security.protocol={settings.kafka_security_protocol}",
             f"sasl.mechanism={KAFKA_SASL_MECHANISM}",
             f"sasl.jaas.config={_jaas(SCRAM_MODULE, settings.kafka_login(principal))}"]
    if settings.kafka_security_protocol == "SASL_SSL":
        lines += ["ssl.truststore.type=PEM",
                  f"ssl.truststore.location={_properties_value(tls.ca_file(settings))}"]
    return "\n".join(f"{prefix}{line}" for prefix in ("", "producer.", "consumer.", "admin.")
                     for line in lines)


def _render(template: str, target: Path, settings: Settings) -> Path:
    """Render a config; 0600, since it holds passwords."""
    admin, controller = settings.kafka_login("admin"), settings.kafka_login("controller")
    values = {
        "kafka_port": settings.kafka_port,
        "kafka_controller_port": settings.kafka_controller_port,
        "connect_port": settings.connect_port,
        "connector_name": settings.connector_name,
        "kafka_data": kafka_data(settings),
        "plugin_path": plugin_path(settings),
        "kafka_security_protocol": settings.kafka_security_protocol,
        "admin_user": admin.user,
        "admin_jaas": _jaas(SCRAM_MODULE, admin),
        "controller_user": controller.user,
        "controller_jaas": _jaas(PLAIN_MODULE, controller,
                                 **{f"user_{controller.user}": controller.password}),
        "tls_settings": tls.broker_settings(settings),
        "client_security": _client_security(settings, "connect"),
    }
    target.touch(mode=0o600)
    target.chmod(0o600)
    target.write_text((STACK_DIR / template).read_text().format_map(values))
    return target


def _kafka_uuid() -> str:
    """A cluster id as Kafka's Uuid.randomUuid() makes it (url-safe base64, no padding, never
    starting with '-'), without spending a JVM start on `StorageTool random-uuid`."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _format_storage(settings: Settings, config: Path) -> None:
    """Format the KRaft log dir once; meta.properties marks a formatted dir."""
    if (kafka_data(settings) / "meta.properties").exists():
        return
    kafka_data(settings).mkdir(parents=True, exist_ok=True)
    argv = _java(settings, "kafka.tools.StorageTool", "format", "-t", _kafka_uuid(),
                 "-c", str(config), "--add-scram", _admin_scram(settings))
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise StackError(f"kafka: storage format failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def _admin_scram(settings: Settings) -> str:
    """--add-scram's argument for the admin: the one principal that must exist before the broker
    runs (inter-broker login, and it creates the others through the Admin API)."""
    admin = settings.kafka_login("admin")
    # StorageTool parses [name=...,password=...] with no escapes: these characters would break it.
    bad = set(',"[]=') & set(admin.user + admin.password)
    if bad:
        raise StackError(f"kafka: the admin user name or password contains {''.join(sorted(bad))}, "
                         f"which `StorageTool format --add-scram` cannot take; choose another in "
                         f"{settings.kafka_password_source('admin')}")
    return (f"{KAFKA_SASL_MECHANISM}=[name={admin.user},password={admin.password},"
            f"iterations={kafka_access.SCRAM_ITERATIONS}]")


# --- JVM services ---------------------------------------------------------------------------------
def _start_jvm(settings: Settings, name: str, port: int, template: str, main_class: str,
               prepare: Callable[[Path], None] | None = None) -> float | None:
    """Render NAME's config, spawn its JVM and wait for PORT; None when it already ran."""
    if process.is_running(name, settings):
        print(f"{name}: already running on port {port}", flush=True)
        return None
    _require_free_port(port, name)
    ensure_jars(settings)
    began = time.monotonic()
    config = _render(template, _conf_dir(settings) / template.removesuffix(".tmpl"), settings)
    if prepare:
        prepare(config)
    process.spawn(name, _java(settings, main_class, str(config)), settings)
    process.wait_for_port(port, 60, name, log=process.log_path(name, settings),
                          alive=lambda: process.is_running(name, settings))
    return began


# --- broker --------------------------------------------------------------------------------------
def start_broker(settings: Settings) -> None:
    """Start the KRaft broker unless it runs; returns when its client port accepts connections."""
    began = _start_jvm(settings, BROKER, settings.kafka_port, "kafka-server.properties.tmpl",
                       "kafka.Kafka", prepare=lambda config: _format_storage(settings, config))
    access_s = kafka_access.ensure_access(settings)
    if began is not None:
        print(f"kafka: started on {settings.kafka_bootstrap} ({settings.kafka_security_protocol}, "
              f"principals and ACLs in {access_s:.1f} s) in {time.monotonic() - began:.1f} s",
              flush=True)


def stop_broker(settings: Settings) -> None:
    # Controlled shutdown of a single node takes a few seconds; give it time before SIGKILL.
    stopped = process.stop(BROKER, settings, timeout=60)
    print("kafka: stopped" if stopped else "kafka: not running", flush=True)


# --- Connect -------------------------------------------------------------------------------------
def start_connect(settings: Settings, timeout: float = 90) -> None:
    """Start the Connect worker unless it runs; returns when its REST API serves requests."""
    began = _start_jvm(settings, CONNECT, settings.connect_port,
                       "connect-distributed.properties.tmpl",
                       "org.apache.kafka.connect.cli.ConnectDistributed")
    if began is None:
        return
    _wait_for_herder(settings, timeout, process.log_path(CONNECT, settings),
                     lambda: process.is_running(CONNECT, settings))
    print(f"connect: started on {settings.connect_url} in {time.monotonic() - began:.1f} s",
          flush=True)


class _NotReady(Exception):
    pass


def _wait_for_herder(settings: Settings, timeout: float, log: Path,
                     alive: Callable[[], bool]) -> None:
    """The REST port opens before the worker has joined its group and read the config topic;
    until then /connectors answers 503 or hangs. Wait for a 200, failing fast if the JVM died."""

    @retry(stop=stop_after_delay(timeout), wait=wait_fixed(0.25),
           retry=retry_if_exception_type(_NotReady), reraise=True)
    def ready() -> None:
        if not alive():
            raise StackError(f"kafka connect exited during start-up; see {log}\n"
                             f"{process.log_tail(log)}")
        try:
            if requests.get(f"{settings.connect_url}/connectors", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        raise _NotReady

    try:
        ready()
    except _NotReady:
        raise StackError(f"kafka connect did not become ready within {timeout:.0f} s; see {log}\n"
                         f"{process.log_tail(log)}") from None


def stop_connect(settings: Settings) -> None:
    # Graceful stop lets the task commit its last source offsets (fewer duplicates on restart).
    stopped = process.stop(CONNECT, settings, timeout=60)
    print("connect: stopped" if stopped else "connect: not running", flush=True)


def _require_free_port(port: int, what: str) -> None:
    if process.port_open(port):
        raise StackError(f"{what}: port 127.0.0.1:{port} is already in use by another process "
                         f"(no {what} pid file in this HRDV_HOME); stop it or choose another "
                         f"HRDV_PORT_BASE")


# --- health --------------------------------------------------------------------------------------
def health(settings: Settings) -> dict[str, Any]:
    """Broker: pid, port, topic count; Connect: pid, version, connectors. Never raises."""
    return {"broker": _broker_health(settings), "connect": _connect_health(settings)}


def _broker_health(settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {
        "up": False, "pid": process.pid_of(BROKER, settings), "bootstrap": settings.kafka_bootstrap,
        "rss_mib": process.rss_mib(BROKER, settings), "log": str(process.log_path(BROKER, settings)),
    }
    if not process.port_open(settings.kafka_port):
        report["error"] = f"nothing listens on {settings.kafka_bootstrap}"
        return report  # an admin client would log connection failures for seconds
    try:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(settings.kafka_client("reader"))
        topics = admin.list_topics(timeout=3).topics
        report.update(up=True, topics=len(topics))
    except Exception as exc:  # noqa: BLE001 - health reports, it does not fail
        report["error"] = str(exc)
    return report


def _connect_health(settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {
        "up": False, "pid": process.pid_of(CONNECT, settings), "url": settings.connect_url,
        "rss_mib": process.rss_mib(CONNECT, settings),
        "log": str(process.log_path(CONNECT, settings)),
    }
    try:
        root = requests.get(settings.connect_url, timeout=3).json()
        connectors = requests.get(f"{settings.connect_url}/connectors", timeout=5)
        connectors.raise_for_status()
        report.update(up=True, version=root.get("version"), connectors=connectors.json())
    except (requests.RequestException, ValueError) as exc:
        report["error"] = str(exc)
    return report
