"""Dagster's default run launcher, plus the health check of run workers it lacks.

Dagster's DefaultRunLauncher starts each run in a process of the code server, and cannot tell the
daemon's run monitoring whether that process still lives. When the worker dies with its code
server (the daemon killed with its process tree, an OOM kill of the server), nobody reports the
run: it stays STARTED, keeps its place in the queue's limits and its pool slots, until its
maximum runtime passes. This launcher answers the health check from the run's own event log:
every run worker records its pid when it starts ("Started process for run", or "Executing steps
in process" for a run executed in the caller's process, as `dagster asset materialize` does),
and a pid that is gone, or reused by a younger process, means the worker died. Run monitoring
then fails the run within one poll (dagster.yaml: poll_interval_seconds), its pool slots are
freed (free_slots_after_run_end_seconds) and Dagster's run retries start it again.

Local only: a pid means something on this host. On Kubernetes use dagster-k8s's K8sRunLauncher,
whose health check asks the cluster about the run's job.
"""
from __future__ import annotations

import psutil
from dagster import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun

# How many engine events to read from the start of a run to find its worker's pid.
ENGINE_EVENTS_SCANNED = 50


class LocalRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose run workers are health-checked by their pid."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        worker = self._worker(run.run_id)
        if worker is None:  # not started far enough to record it: max runtime still applies
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no worker pid recorded yet")
        pid, started_at = worker
        if _alive(pid, started_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"worker pid {pid} alive",
                                        run_worker_id=str(pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"the run's worker process (pid {pid}) is gone: it was killed, or the code server or "
            "daemon that started it died",
            run_worker_id=str(pid),
        )

    def _worker(self, run_id: str) -> tuple[int, float] | None:
        """(pid, timestamp) of the first engine event of the run that names a pid."""
        records = self._instance.get_records_for_run(
            run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=ENGINE_EVENTS_SCANNED).records
        for record in records:
            event = record.event_log_entry.dagster_event
            data = event.engine_event_data if event else None
            pid = data.metadata.get("pid") if data else None
            if pid is not None and str(pid.value).isdigit():
                return int(pid.value), record.event_log_entry.timestamp
        return None


def _alive(pid: int, started_at: float) -> bool:
    """True if process `pid` exists and is not a younger process that reused the pid."""
    try:
        process = psutil.Process(pid)
        return process.create_time() <= started_at + 1 and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
