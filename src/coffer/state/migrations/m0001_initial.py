"""The first catalog schema: operations, drills and the check coverage ledger."""

VERSION = 1

STATEMENTS = [
    # Every run, backup, copy, forget, check and drill: one row, written when it starts (result
    # "running") and completed when it ends, so a crash leaves visible evidence.
    """
    CREATE TABLE operations (
        id INTEGER PRIMARY KEY,
        parent_id INTEGER REFERENCES operations(id),
        kind VARCHAR(16) NOT NULL,
        dataset VARCHAR(64),
        repository VARCHAR(64),
        started DOUBLE PRECISION NOT NULL,
        finished DOUBLE PRECISION,
        result VARCHAR(16) NOT NULL,
        bytes BIGINT NOT NULL DEFAULT 0,
        files BIGINT NOT NULL DEFAULT 0,
        snapshot_ids TEXT NOT NULL DEFAULT '[]',
        errors TEXT NOT NULL DEFAULT '[]',
        details TEXT NOT NULL DEFAULT '{}'
    )
    """,
    "CREATE INDEX operations_by_kind ON operations (kind, dataset, started)",
    "CREATE INDEX operations_by_parent ON operations (parent_id)",
    # What a drill measured, one row per drill operation.
    """
    CREATE TABLE drills (
        operation_id INTEGER PRIMARY KEY REFERENCES operations(id),
        dataset VARCHAR(64) NOT NULL,
        repository VARCHAR(64) NOT NULL,
        started DOUBLE PRECISION NOT NULL,
        ok INTEGER NOT NULL,
        snapshot_id VARCHAR(64),
        snapshot_time DOUBLE PRECISION,
        snapshot_age DOUBLE PRECISION,
        selection TEXT NOT NULL DEFAULT '',
        bytes BIGINT NOT NULL DEFAULT 0,
        files BIGINT NOT NULL DEFAULT 0,
        restore_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
        throughput DOUBLE PRECISION NOT NULL DEFAULT 0,
        ready_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
        full_bytes BIGINT NOT NULL DEFAULT 0,
        extrapolated_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
        rto_seconds DOUBLE PRECISION,
        rto_met INTEGER,
        checks TEXT NOT NULL DEFAULT '[]',
        issues TEXT NOT NULL DEFAULT '[]'
    )
    """,
    "CREATE INDEX drills_by_dataset ON drills (dataset, started)",
    # The coverage ledger: when each pack of each repository (by its config ID, which survives a
    # rename in the plan) was first seen and last read in full.
    """
    CREATE TABLE pack_coverage (
        repository_id VARCHAR(64) NOT NULL,
        pack_id VARCHAR(64) NOT NULL,
        size BIGINT NOT NULL,
        first_seen DOUBLE PRECISION NOT NULL,
        last_read DOUBLE PRECISION,
        last_ok INTEGER,
        PRIMARY KEY (repository_id, pack_id)
    )
    """,
]
