"""The Dagster code location: assets, checks, the window job and its Kafka-lag sensor."""
from __future__ import annotations

from dagster import AssetSelection, Definitions, EnvVar, define_asset_job, in_process_executor

from hrdv.settings import load
from hrdv_assets.interactions import INTERACTIONS, MART_KEY, interaction_assets
from resources.clickhouse import ClickHouseResource
from resources.kafka import KafkaResource
from resources.postgres import PostgresResource
from sensors.kafka_lag import build_window_sensor
from sensors.late_changes import build_late_change_sensor

_settings = load()

# Runs that open chDB take turns (one process per data path); dagster.yaml limits this tag to 1.
CLICKHOUSE_TAGS = {"hrdv/clickhouse": "chdb"} if _settings.clickhouse_dsn.startswith("chdb") else {}
# A window's run takes seconds; one still STARTED after this is dead or stuck, and the daemon's
# run monitoring fails it (dagster.yaml) so that it stops holding the chDB slot.
MAX_RUNTIME = {"dagster/max_runtime": "600"}

interactions_windows = define_asset_job(
    name="interactions_windows",
    description="Staging and KPI mart of customer interactions for one reporting window.",
    selection=AssetSelection.groups("interactions"),
    # One process: a window's run is seconds of work, the multiprocess executor adds ~1.4 s a step.
    executor_def=in_process_executor,
    tags={**CLICKHOUSE_TAGS, **MAX_RUNTIME},
)

# Recomputes the mart alone (no ClickHouse): for windows that later changes altered.
interaction_kpi_recompute = define_asset_job(
    name="interaction_kpi_recompute",
    description="The interaction KPI mart of windows that changes staged later altered.",
    selection=AssetSelection.assets(MART_KEY),
    executor_def=in_process_executor,
    tags=MAX_RUNTIME,
)

defs = Definitions(
    assets=interaction_assets,
    jobs=[interactions_windows, interaction_kpi_recompute],
    sensors=[
        build_window_sensor(
            interactions_windows, [INTERACTIONS.topic], name="interactions_kafka_lag_sensor"
        ),
        build_late_change_sensor(
            interaction_kpi_recompute, INTERACTIONS.staging_key, name="interactions_late_change_sensor"
        ),
    ],
    resources={
        "clickhouse": ClickHouseResource(dsn=EnvVar("HRDV_CLICKHOUSE_DSN")),
        "hrdv_db": PostgresResource(dsn=EnvVar("HRDV_DSN")),
        "kafka": KafkaResource(
            bootstrap_servers=EnvVar("HRDV_KAFKA_BOOTSTRAP"),
            consumer_group=EnvVar("HRDV_CONSUMER_GROUP"),
            heartbeat_topic=_settings.topic("debezium_heartbeat"),
        ),
    },
)
