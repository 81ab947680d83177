-- The source position (LSN) of a Debezium change event: `source.lsn`, or, for a row read by an
-- incremental snapshot (source.snapshot = 'incremental': `hrdv up` requests one for tables added
-- to the capture list, see hrdv/stack/connect.py), which carries no LSN, the stream position at
-- the moment it was read: the second element of `source.sequence` (a JSON array of LSN strings).
-- That position comes after the row's last change before the read and before any change after
-- it, so the read orders right against the row's streamed versions. NULL when neither is there.
CREATE OR REPLACE FUNCTION dbz_lsn AS (message) -> multiIf(
    JSONType(message, 'source', 'lsn') IN ('Int64', 'UInt64'), JSONExtractUInt(message, 'source', 'lsn'),
    JSONExtractString(message, 'source', 'snapshot') = 'incremental',
        toUInt64OrNull(JSONExtractString(JSONExtractString(message, 'source', 'sequence'), 2)),
    NULL
)
