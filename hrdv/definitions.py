"""The Dagster code location: assets, checks, the window and recompute jobs, their sensors.

Every route into the windowed assets (a sensor's run, the UI's Materialize button, an asset or job
backfill, GraphQL, `dagster asset materialize`) meets the same guards, because they sit on the
assets themselves, not on a job: the window check in each asset (hrdv_assets/windows.py), the
pools (one chDB opener, one mart writer at a time), the retry policy of passing failures, and
the in-process executor set here for every job, the implicit asset job of backfills included.
"""
from __future__ import annotations

from dagster import AssetSelection, Definitions, EnvVar, define_asset_job, in_process_executor, job

from hrdv.settings import load
from hrdv_assets.cdc import STAGED, build_cdc_assets
from hrdv_assets.kpi import FACTS, MART_KEYS, PUBLICATIONS_KEY, kpi_assets, recompute_kpi_marts
from hrdv_assets.open_window import freshness_checks, open_window_assets
from hrdv_assets.interactions import (
    INTERACTIONS,
    MART_KEY,
    interaction_assets,
    recompute_interaction_kpi,
)
from resources.clickhouse import ClickHouseResource
from resources.kafka import KafkaResource
from resources.postgres import PostgresResource
from sensors.kafka_lag import ObservedTopic, build_window_sensor
from sensors.late_changes import build_late_change_sensor
from sensors.open_window import pipeline_freshness_sensor, provisional_kpi_sensor

_settings = load()

# A window's run takes seconds: one still STARTED after this is stuck, and the daemon's run
# monitoring fails it (a dead worker is failed within seconds by hrdv.run_launcher's health check).
WINDOW_RUN_TAGS = {"dagster/max_runtime": "600"}

# Every asset: topic, buffer and staging of each CRM entity (hrdv/entities.py), and the marts.
ASSETS = [*build_cdc_assets(STAGED.values()), *interaction_assets, *kpi_assets, *open_window_assets]
# Every windowed asset: the staging (and history) of every CRM entity, and the marts.
WINDOWED = [key for staged in STAGED.values() for key in (staged.staging_key, staged.history_key) if key]
KPI_KEYS = [*MART_KEYS, PUBLICATIONS_KEY]  # the catalog's marts, published together

crm_windows = define_asset_job(
    name="crm_windows",
    description=("Staging of every CRM entity (one ClickHouse session, one transaction) and the KPI "
                 "marts, for a reporting window or a range."),
    # The freshness checks of mart/kpi_publications judge these runs; the sensor evaluates them.
    selection=AssetSelection.assets(*WINDOWED, MART_KEY, *KPI_KEYS) - AssetSelection.checks(freshness_checks),
    tags=WINDOW_RUN_TAGS,
)


@job(
    name="interaction_kpi_recompute",
    description="The interaction KPI mart of exactly the windows that changes staged later altered.",
    tags=WINDOW_RUN_TAGS,
)
def interaction_kpi_recompute() -> None:
    recompute_interaction_kpi()


@job(
    name="kpi_marts_recompute",
    description=("Every KPI mart of exactly the windows that changes of any fact entity staged later "
                 "altered, with the hours and days holding them."),
    tags=WINDOW_RUN_TAGS,
)
def kpi_marts_recompute() -> None:
    recompute_kpi_marts()


defs = Definitions(
    assets=ASSETS,
    asset_checks=[freshness_checks],
    jobs=[crm_windows, interaction_kpi_recompute, kpi_marts_recompute],
    sensors=[
        build_window_sensor(
            crm_windows, [ObservedTopic(s.topic, s.topic_key, s.buffer_key) for s in STAGED.values()],
            published_by=[*WINDOWED, MART_KEY, *KPI_KEYS], name="crm_kafka_lag_sensor",
        ),
        build_late_change_sensor(
            interaction_kpi_recompute, "recompute_interaction_kpi", [INTERACTIONS.staging_key],
            name="interactions_late_change_sensor",
        ),
        build_late_change_sensor(
            kpi_marts_recompute, "recompute_kpi_marts", [STAGED[name].staging_key for name in FACTS],
            name="kpi_late_change_sensor", metadata_key="kpi_late_windows",
        ),
        provisional_kpi_sensor,
        pipeline_freshness_sensor,
    ],
    # One process per run, whatever job runs it: a window's run is seconds of work, and the
    # multiprocess executor spends ~1.4 s starting each step's process.
    executor=in_process_executor,
    resources={
        "clickhouse": ClickHouseResource(dsn=EnvVar("HRDV_CLICKHOUSE_DSN")),
        "hrdv_db": PostgresResource(dsn=EnvVar("HRDV_DSN")),
        # The CRM read-only (source reader login), for the drift check.
        "source_db": PostgresResource(dsn=EnvVar("HRDV_SOURCE_DSN")),
        "kafka": KafkaResource(
            bootstrap_servers=EnvVar("HRDV_KAFKA_BOOTSTRAP"),
            consumer_group=EnvVar("HRDV_CONSUMER_GROUP"),
            heartbeat_topic=_settings.topic("debezium_heartbeat"),
            sasl_username=EnvVar("HRDV_KAFKA_READER_USER"),
            sasl_password=EnvVar("HRDV_KAFKA_READER_PASSWORD"),
            security_protocol=EnvVar("HRDV_KAFKA_SECURITY_PROTOCOL"),
            ca_file=_settings.kafka_ca_file,
        ),
    },
)
