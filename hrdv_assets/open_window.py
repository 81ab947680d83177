"""The window still open, and how fresh every stage is.

- mart/kpi_provisional: the catalog's window marts of the windows not yet published, refreshed by
  the sensor provisional_kpi_sensor (hrdv.provisional.refresh) from staging overlaid with the
  changes the ingestor copied from the buffer. Dagster does not materialise it in a run: each
  refresh is reported as a materialisation with its figures (plotted on the asset's page).
- ops/pipeline_health: an observation per tick of pipeline_freshness_sensor with the age of every
  stage (capture, Kafka, buffer, staging, final marts, provisional marts).
- Two freshness checks, evaluated by that sensor (and by "Execute" in the UI):
  mart/kpi_publications:closed_windows_on_time and mart/kpi_provisional:fresh_within_promise. A
  check fails as soon as its promise is broken (severity WARN) and is an ERROR beyond twice the
  promise; its description names the first stage that is behind.
"""

import os
from datetime import datetime, timedelta, timezone

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetSpec,
    FreshnessPolicy,
    MetadataValue,
    multi_asset_check,
)

from hrdv import provisional
from hrdv.provisional import Stage
from hrdv_assets.cdc import OWNERS, STAGED
from hrdv_assets.kpi import CATALOG, FACTS, PUBLICATIONS_KEY
from partitions import WINDOW, key_of, reporting_windows, window_start
from resources.kafka import KafkaResource
from resources.postgres import PostgresResource

PROVISIONAL_KEY = AssetKey(["mart", "kpi_provisional"])
HEALTH_KEY = AssetKey(["ops", "pipeline_health"])
FINAL_CHECK = "closed_windows_on_time"
PROVISIONAL_CHECK = "fresh_within_promise"


def promise_s(variable: str) -> float:
    """A freshness promise in seconds (HRDV_FINAL_PROMISE_S, HRDV_PROVISIONAL_PROMISE_S; default 30:
    the platform's bars for a closed window's marts and for the open window's)."""
    raw = os.environ.get(variable, "30")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{variable} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{variable} must be more than 0 seconds, got {raw!r}")
    return value


provisional_spec = AssetSpec(
    key=PROVISIONAL_KEY,
    deps=[key for name in FACTS for key in (STAGED[name].buffer_key, STAGED[name].staging_key)],
    group_name="open_window",
    owners=OWNERS,
    kinds={"postgres"},
    description=(
        "Предварительные показатели открытого окна / provisional KPI of the window still open (and of one "
        "just closed until its final run publishes it): every family's window marts computed by the same "
        "SQL as the final ones, from staging overlaid with the changes buffered since, into "
        "`mart.kpi_<family>_window_provisional`. Read them through `mart.kpi_<family>_window_live`: each "
        "window once, final when published, else flagged provisional. Refreshed by `provisional_kpi_sensor` "
        "(every 10 s by default); each refresh is reported here as a materialisation."),
    metadata={"tables": MetadataValue.md("\n".join(
        f"- `mart.kpi_{f.name}_window_provisional`, read through `mart.kpi_{f.name}_window_live`"
        for f in CATALOG.families.values()))},
    # The daemon's badge: no refresh for a minute is late, for two a failure (the check names why).
    freshness_policy=FreshnessPolicy.time_window(fail_window=timedelta(minutes=2),
                                                 warn_window=timedelta(minutes=1)),
)

health_spec = AssetSpec(
    key=HEALTH_KEY,
    group_name="open_window",
    owners=OWNERS,
    description=("Свежесть конвейера / how fresh each stage is: the age in seconds of the newest CRM commit "
                 "(or window end) held by capture (Debezium's heartbeat in the CRM), Kafka, the ClickHouse "
                 "buffer, staging, the final marts and the provisional marts. Observed by "
                 "`pipeline_freshness_sensor` every 30 s; the Plots tab charts each stage's age."),
)


# --- verdicts -------------------------------------------------------------------------------------------
def _severity(excess: float, promise: float) -> AssetCheckSeverity:
    return AssetCheckSeverity.WARN if excess <= 2 * promise else AssetCheckSeverity.ERROR


def _behind(found: dict[str, Stage], limit: float, names: list[str]) -> str:
    stage = provisional.first_behind(found, limit, names)
    return f"; first stage behind: {stage.describe()}" if stage else ""


def final_verdict(hrdv_db: PostgresResource, found: dict[str, Stage], now: datetime) -> AssetCheckEvaluation:
    """The newest window due (closed at least a promise ago) must have been published within the promise."""
    promise = promise_s("HRDV_FINAL_PROMISE_S")
    due_end = window_start(now - timedelta(seconds=promise))
    due = due_end - WINDOW
    metadata: dict = {"promise_seconds": promise}
    if due < reporting_windows.start:
        return AssetCheckEvaluation(asset_key=PUBLICATIONS_KEY, check_name=FINAL_CHECK, passed=True,
                                    description="no window has been due yet", metadata=metadata)
    with hrdv_db.connect() as conn:
        row = conn.execute("SELECT published_at FROM mart.kpi_publications WHERE window_start = %s",
                           [due]).fetchone()
    published = row[0] if row else None
    lag = ((published or now) - due_end).total_seconds()
    metadata |= {"window": key_of(due), "lag_seconds": round(lag, 1), "published": published is not None}
    passed = published is not None and lag <= promise
    if published is not None:
        text = f"window {key_of(due)} published {lag:.0f} s after it closed (promise {promise:.0f} s)"
    else:
        text = (f"window {key_of(due)} not published {lag:.0f} s after it closed (promise {promise:.0f} s)"
                + why_unpublished(found, promise, due_end))
    return AssetCheckEvaluation(asset_key=PUBLICATIONS_KEY, check_name=FINAL_CHECK, passed=passed,
                                severity=_severity(lag, promise), description=text, metadata=metadata)


def why_unpublished(found: dict[str, Stage], promise: float, due_end: datetime) -> str:
    """The first stage that holds back a window due: upstream, staging, or the marts' run."""
    staged = found["staging"].newest
    return _behind(found, promise, ["capture", "kafka", "buffer"]) or (
        "; first stage behind: staging (nothing staged yet)" if staged is None
        else f"; first stage behind: staging (staged until {staged:%H:%M:%S} UTC)" if staged < due_end
        else "; staged, not yet published: the marts' run is late or failed")


def provisional_verdict(found: dict[str, Stage]) -> AssetCheckEvaluation:
    """The open window's marts must reflect the CRM as of at most a promise ago."""
    promise = promise_s("HRDV_PROVISIONAL_PROMISE_S")
    stage = found["provisional"]
    age = stage.age_s
    metadata: dict = {"promise_seconds": promise}
    if age is None:
        passed, text, excess = False, "no provisional refresh yet", 3 * promise
    else:
        passed, excess = age <= promise, age
        metadata["staleness_seconds"] = age
        text = (f"the provisional marts reflect the CRM as of {age:.0f} s ago (promise {promise:.0f} s, "
                f"refreshed at {stage.at:%H:%M:%S} UTC)")
    if not passed:
        text += _behind(found, promise, ["capture", "kafka", "buffer"]) or (
            "; first stage behind: provisional refresh (is provisional_kpi_sensor running?)")
    return AssetCheckEvaluation(asset_key=PROVISIONAL_KEY, check_name=PROVISIONAL_CHECK, passed=passed,
                                severity=_severity(excess, promise), description=text, metadata=metadata)


def measure(hrdv_db: PostgresResource, source_db: PostgresResource, kafka: KafkaResource,
            now: datetime | None = None) -> dict[str, Stage]:
    now = now or datetime.now(timezone.utc)
    with source_db.connect() as conn:
        row = conn.execute("SELECT max(ts) FROM public.debezium_heartbeat").fetchone()
    with hrdv_db.connect() as conn:
        return provisional.stages(conn, row[0] if row else None, kafka.latest_heartbeat(), now)


def health_metadata(found: dict[str, Stage]) -> dict:
    metadata: dict = {f"{name}_age_seconds": stage.age_s for name, stage in found.items() if stage.age_s is not None}
    metadata["stages"] = MetadataValue.md("\n".join(
        f"- **{name}** ({provisional.STAGES[name]}): {stage.describe()}" for name, stage in found.items()))
    return metadata


@multi_asset_check(
    specs=[AssetCheckSpec(FINAL_CHECK, asset=PUBLICATIONS_KEY,
                          description="The newest closed window's marts were published within the promise "
                                      "(HRDV_FINAL_PROMISE_S, 30 s) after it closed; WARN past it, ERROR past "
                                      "twice it. Evaluated every 30 s by pipeline_freshness_sensor."),
           AssetCheckSpec(PROVISIONAL_CHECK, asset=PROVISIONAL_KEY,
                          description="The provisional marts reflect the CRM as of at most the promise "
                                      "(HRDV_PROVISIONAL_PROMISE_S, 30 s) ago; WARN past it, ERROR past twice "
                                      "it. Evaluated every 30 s by pipeline_freshness_sensor.")],
    name="freshness_checks",
    can_subset=True,
)
def freshness_checks(context: AssetCheckExecutionContext, hrdv_db: PostgresResource,
                     source_db: PostgresResource, kafka: KafkaResource):
    now = datetime.now(timezone.utc)
    found = measure(hrdv_db, source_db, kafka, now)
    for verdict in (final_verdict(hrdv_db, found, now), provisional_verdict(found)):
        if verdict.asset_check_key in context.selected_asset_check_keys:
            yield AssetCheckResult(asset_key=verdict.asset_key, check_name=verdict.check_name,
                                   passed=verdict.passed, severity=verdict.severity,
                                   description=verdict.description, metadata=verdict.metadata)


open_window_assets = [provisional_spec, health_spec]
