"""Detached processes with pid files and log files: the small supervisor the stack needs.

Each component runs as its own session (so a terminal's Ctrl-C or the CLI exiting does not take it
down), writes stdout+stderr to $HRDV_HOME/logs/<name>.log and leaves its pid in
$HRDV_HOME/run/<name>.pid. `stop` ends the process and everything it started.
"""
from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from hrdv.settings import Settings

# A process started more than this after its pid file was written cannot be the one we started:
# the pid has been reused (after a reboot, say), so the pid file is stale.
_PID_REUSE_SLACK_S = 2.0


class StackError(RuntimeError):
    """A component failed to start, stop or answer; the message names the log file to read."""


def log_path(name: str, settings: Settings) -> Path:
    return settings.logs / f"{name}.log"


def pid_path(name: str, settings: Settings) -> Path:
    return settings.run_dir / f"{name}.pid"


def log_tail(path: Path, lines: int = 20) -> str:
    """Last lines of a log file, for error messages (empty if there is no log)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _chown_to(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _default_signals() -> None:
    """In the child before exec: SIGTERM and SIGINT do their default again. A parent that ignores
    them (a test suite started in the background: the shell ignores SIGINT, and Dagster's
    interrupt handling then ignores SIGTERM too) would pass that on, and every `stop` of a JVM
    would wait its whole timeout before the SIGKILL."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)


def spawn(
    name: str,
    argv: list[str],
    settings: Settings,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    user: str | None = None,
) -> int:
    """Start argv detached (own session), output appended to logs/<name>.log; returns the pid.

    `user` runs the process as another OS user (needs root); the log file is then theirs too.
    """
    settings.logs.mkdir(parents=True, exist_ok=True)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    log = log_path(name, settings)
    with open(log, "ab") as out:
        if user:
            _chown_to(log, user)
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            user=user,
            group=pwd.getpwnam(user).pw_gid if user else None,
            start_new_session=True,
            preexec_fn=_default_signals,
        )
    pid_path(name, settings).write_text(f"{proc.pid}\n")
    return proc.pid


def _live_process(pid: int, pid_file: Path) -> psutil.Process | None:
    """The process behind a pid file, or None if it is gone, a zombie, or a reused pid."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            proc.wait(0)  # reap it if it is our child, so it does not linger
            return None
        if proc.create_time() > pid_file.stat().st_mtime + _PID_REUSE_SLACK_S:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.TimeoutExpired, FileNotFoundError):
        return None


def pid_of(name: str, settings: Settings) -> int | None:
    """Pid of a running component, or None (a stale pid file is ignored)."""
    pid_file = pid_path(name, settings)
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    proc = _live_process(pid, pid_file)
    return proc.pid if proc else None


def is_running(name: str, settings: Settings) -> bool:
    return pid_of(name, settings) is not None


def stop(name: str, settings: Settings, timeout: float = 30) -> bool:
    """SIGTERM the component and its children, SIGKILL what is left after `timeout` s.

    Returns True if something was running. The pid file is removed either way.
    """
    pid = pid_of(name, settings)
    pid_path(name, settings).unlink(missing_ok=True)
    if pid is None:
        return False
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for proc in procs:
        _signal(proc, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        _signal(proc, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)
    return True


def _signal(proc: psutil.Process, sig: signal.Signals) -> None:
    try:
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        pass


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(
    port: int,
    timeout: float,
    what: str,
    log: Path | None = None,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Wait until 127.0.0.1:port accepts connections.

    On timeout, or as soon as `alive()` says the process died, raise StackError naming `what`
    and the log file, with the log's last lines.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if alive is not None and not alive():
            raise StackError(_failure(f"{what} exited before opening port {port}", log))
        time.sleep(0.1)
    raise StackError(_failure(f"{what} did not open port {port} within {timeout:.0f} s", log))


def _failure(message: str, log: Path | None) -> str:
    if log is None:
        return message
    return f"{message}; see {log}\n--- last lines of {log.name} ---\n{log_tail(log)}"


def tree_rss_mib(pid: int | None) -> float | None:
    """Resident memory of a process and its children, in MiB; None if it does not run."""
    if not pid:
        return None
    try:
        root = psutil.Process(pid)
        total = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    except psutil.Error:
        return None
    return round(total / 2**20, 1)


def daemon_split_mib(pid: int | None) -> dict[str, float | None]:
    """MiB of the Dagster daemon's own process ("main"), of its largest code server ("codesrv") and
    of the rest of its tree ("others": the previous code server, which the daemon replaces every
    60 s, run workers, log tails). The tree's total swings by hundreds of MiB with those
    transient children; a leak shows in main and codesrv."""
    split: dict[str, float | None] = {"main": None, "codesrv": None, "others": None}
    if not pid:
        return split
    try:
        root = psutil.Process(pid)
        split["main"] = root.memory_info().rss / 2**20
        servers, rest = [], 0
        for child in root.children(recursive=True):
            try:
                if "api grpc" in " ".join(child.cmdline()):
                    servers.append(child)
                else:
                    rest += child.memory_info().rss
            except psutil.Error:
                continue
        sizes = sorted(p.memory_info().rss for p in servers)  # the largest: one that has loaded the code
        if sizes:
            split["codesrv"] = sizes[-1] / 2**20
            rest += sum(sizes[:-1])
        split["others"] = rest / 2**20
    except psutil.Error:
        pass
    return split


def rss_mib(name: str, settings: Settings) -> float | None:
    """Resident memory of a component (with its children), in MiB; None if not running."""
    return tree_rss_mib(pid_of(name, settings))
