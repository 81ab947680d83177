"""Superset's REST API as the dashboards need it: log in, import an asset bundle, find and delete
what the files no longer hold.

One requests.Session carries the login token and the CSRF token (bound to the session cookie):
Superset checks CSRF on every write of /api/v1, the import included.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import requests
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from hrdv.dashboards.assets import DATABASE_FILE, SLUG_PREFIX, Bundle

TIMEOUT_S = 120


class SupersetError(RuntimeError):
    """Superset refused or failed; the message says what was asked and what it answered."""


def _check(response: requests.Response, what: str) -> dict:
    if response.status_code >= 400:
        raise SupersetError(f"{what}: HTTP {response.status_code}: {response.text[:2000]}")
    return response.json() if response.content else {}


class Superset:
    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url.rstrip("/")
        self.http = requests.Session()
        self._login(user, password)

    def _login(self, user: str, password: str) -> None:
        try:
            self._login_once(user, password)
        except requests.ConnectionError:
            raise SupersetError(f"Superset does not answer at {self.url}: is it running? "
                                "(`./hrdv.sh up` starts it; `./hrdv.sh status` shows it)") from None

    @retry(retry=retry_if_exception_type(requests.ConnectionError), stop=stop_after_delay(20), wait=wait_fixed(2),
           reraise=True)  # a Superset just started may refuse for a moment
    def _login_once(self, user: str, password: str) -> None:
        token = _check(self.http.post(f"{self.url}/api/v1/security/login", timeout=TIMEOUT_S,
                                      json={"username": user, "password": password, "provider": "db",
                                            "refresh": True}), f"logging in to {self.url} as {user}")
        self.http.headers["Authorization"] = f"Bearer {token['access_token']}"
        csrf = _check(self.http.get(f"{self.url}/api/v1/security/csrf_token/", timeout=TIMEOUT_S), "CSRF token")
        self.http.headers.update({"X-CSRFToken": csrf["result"], "Referer": self.url})

    def import_bundle(self, bundle: Bundle, database_password: str) -> None:
        response = self.http.post(
            f"{self.url}/api/v1/assets/import/", timeout=TIMEOUT_S,
            files={"bundle": ("hrdv_dashboards.zip", bundle.zip(), "application/zip")},
            data={"passwords": json.dumps({DATABASE_FILE: database_password})})
        _check(response, "importing the dashboards' bundle")

    def list(self, kind: str, columns: list[str]) -> list[dict]:
        """Every object of `kind` (chart, dataset, dashboard), page by page."""
        found, page = [], 0
        while True:
            q = json.dumps({"columns": columns, "page": page, "page_size": 100})
            result = _check(self.http.get(f"{self.url}/api/v1/{kind}/", params={"q": q}, timeout=TIMEOUT_S),
                            f"listing {kind}s")["result"]
            found += result
            if len(result) < 100:
                return found
            page += 1

    def delete(self, kind: str, object_id: int) -> None:
        _check(self.http.delete(f"{self.url}/api/v1/{kind}/{object_id}", timeout=TIMEOUT_S),
               f"deleting {kind} {object_id}")


@dataclass
class Applied:
    charts: int
    datasets: int
    dashboards: int
    deleted: list[str] = field(default_factory=list)


def stale(superset: Superset, bundle: Bundle, database_uuid: str) -> dict[str, list[dict]]:
    """What Superset holds of HRDV's that the bundle no longer does: charts and dashboards managed
    externally, datasets of HRDV's database over its report views."""
    charts = [c for c in superset.list("chart", ["id", "uuid", "slice_name", "is_managed_externally"])
              if c["is_managed_externally"] and c["uuid"] not in bundle.uuids("charts")]
    dashboards = [d for d in superset.list("dashboard", ["id", "uuid", "slug", "dashboard_title", "is_managed_externally"])
                  if d["is_managed_externally"] and (d.get("slug") or "").startswith(SLUG_PREFIX)
                  and d["uuid"] not in bundle.uuids("dashboards")]
    datasets = [d for d in superset.list("dataset", ["id", "uuid", "table_name", "database.uuid"])
                if d["database"]["uuid"] == database_uuid and d["table_name"].startswith("report_")
                and d["uuid"] not in bundle.uuids("datasets")]
    return {"chart": charts, "dashboard": dashboards, "dataset": datasets}


def apply(superset: Superset, bundle: Bundle, database_uuid: str, database_password: str) -> Applied:
    """Import the bundle (creating or updating every object in place), then delete HRDV's objects
    the bundle no longer holds: dashboards and charts first, then their datasets."""
    superset.import_bundle(bundle, database_password)
    applied = Applied(len(bundle.uuids("charts")), len(bundle.uuids("datasets")), len(bundle.uuids("dashboards")))
    leftovers = stale(superset, bundle, database_uuid)
    for kind in ("dashboard", "chart", "dataset"):
        for item in leftovers[kind]:
            superset.delete(kind, item["id"])
            name = item.get("slice_name") or item.get("dashboard_title") or item.get("table_name")
            applied.deleted.append(f"{kind} {name!r} ({item['uuid']})")
    return applied
