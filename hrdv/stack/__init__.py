"""The local stack as real processes: PostgreSQL (postgres.py), the Kafka broker and Kafka Connect
(kafka.py), the Debezium connector (connect.py), on top of a small supervisor (process.py).

Every function takes hrdv.settings.Settings, so a second stack with another HRDV_HOME and
HRDV_PORT_BASE runs beside the first.
"""
