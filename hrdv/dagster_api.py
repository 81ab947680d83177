"""The routes a data engineer takes into Dagster, for tests and benches: its GraphQL API (what the
UI sends when one launches a backfill) and the instance the stack's daemon uses."""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from dagster import AssetKey, DagsterInstance

from hrdv.settings import REPO_ROOT, Settings

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidSubsetError { message }
  }
}"""
BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
}"""
SENSOR_CURSOR = """
query($sensor: SensorSelector!) {
  sensorOrError(sensorSelector: $sensor) {
    ... on Sensor { sensorState { typeSpecificData { ... on SensorData { lastCursor } } } }
  }
}"""
REPOSITORY = {"repositoryName": "__repository__", "repositoryLocationName": "hrdv"}
DONE = ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")


@dataclass(frozen=True)
class DagsterApi:
    settings: Settings

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.dagster_port}/graphql"

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.settings.dagster_home))

    def graphql(self, query: str, variables: dict) -> dict:
        response = requests.post(self.url, json={"query": query, "variables": variables}, timeout=60)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def asset_backfill(self, keys: list[str], assets: list[AssetKey]) -> str:
        """What the UI's 'Materialize' on selected assets and partitions launches."""
        return self._launch({"partitionNames": keys, "assetSelection": [{"path": a.path} for a in assets]})

    def job_backfill(self, keys: list[str], job: str) -> str:
        """What the UI's backfill of a job's partitions launches."""
        return self._launch({"partitionNames": keys, "selector": {
            "partitionSetName": f"{job}_partition_set",
            "repositorySelector": REPOSITORY}})

    def _launch(self, params: dict) -> str:
        result = self.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"backfill not launched: {result}")
        return result["backfillId"]

    def backfill_status(self, backfill_id: str) -> str:
        return self.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]["status"]

    def wait_backfill(self, backfill_id: str, timeout: float) -> str:
        """The backfill's final status (raises TimeoutError after `timeout` s)."""
        deadline = time.monotonic() + timeout
        while (status := self.backfill_status(backfill_id)) not in DONE:
            if time.monotonic() > deadline:
                raise TimeoutError(f"backfill {backfill_id} still {status} after {timeout:.0f} s")
            time.sleep(0.5)
        return status

    def sensor_cursor(self, name: str) -> str | None:
        """The cursor the sensor's ticks left, None before its first."""
        data = self.graphql(SENSOR_CURSOR, {"sensor": {**REPOSITORY, "sensorName": name}})
        state = data["sensorOrError"].get("sensorState") or {}
        return (state.get("typeSpecificData") or {}).get("lastCursor")

    def set_sensor(self, name: str, running: bool) -> None:
        """Start or stop a sensor, as the UI's toggle does (through Dagster's CLI)."""
        argv = [str(Path(sys.executable).parent / "dagster"), "sensor", "start" if running else "stop",
                name, "-w", str(REPO_ROOT / "workspace.yaml")]
        subprocess.run(argv, cwd=REPO_ROOT, env=self.settings.child_env(), check=True,
                       capture_output=True, timeout=120)
