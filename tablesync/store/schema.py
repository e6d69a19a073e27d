"""The store's tables (SQLAlchemy Core). Alembic migrations in `store/migrations/` create them.

Record keys are kept as strings whatever their type in the apps: one coupling table serves every
mapping, and the CLI/API promise string keys anyway.
"""

from __future__ import annotations

import sqlalchemy as sa

from tablesync.db.types import UTCDateTime

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TS = UTCDateTime()
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# One row per applied version of a mapping; the newest version of a name is the live one.
mappings = sa.Table(
    "mappings",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("definition", sa.JSON, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("applied_at", TS, nullable=False),
    sa.Column("applied_by", sa.String(100)),
    sa.UniqueConstraint("name", "version"),
)

# A coupling links one local key to one integration key. A row whose target key is still NULL, or
# whose state is "pending", is an insert intent written before the target write (crash recovery).
couplings = sa.Table(
    "couplings",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("mapping", sa.String(100), nullable=False),
    sa.Column("local_key", sa.Text),
    sa.Column("integration_key", sa.Text),
    sa.Column("state", sa.String(16), nullable=False, default="synced"),  # pending | synced | uncoupled
    sa.Column("origin", sa.String(16)),  # local | integration: the side a pending insert copies from
    sa.Column("local_hash", sa.String(32)),
    sa.Column("integration_hash", sa.String(32)),
    sa.Column("last_values", sa.JSON),
    sa.Column("local_modified", sa.String(64)),
    sa.Column("integration_modified", sa.String(64)),
    sa.Column("last_result", sa.String(16)),  # success | failure
    sa.Column("failures", sa.Integer, nullable=False, default=0),
    sa.Column("skipped", sa.Boolean, nullable=False, default=False),
    sa.Column("skip_reason", sa.String(32)),
    sa.Column("last_job_id", BigId),
    sa.Column("last_error_id", BigId),
    sa.Column("last_synced_at", TS),
    sa.Column("created_at", TS, nullable=False),
    # The job whose bulk insert created the record: the record log shows that insert from here, so
    # an initial sync writes no record_events row per record (see store.record_log).
    sa.Column("inserted_by_job", BigId),
    sa.UniqueConstraint("mapping", "local_key"),
    sa.UniqueConstraint("mapping", "integration_key"),
    postgresql_with={"fillfactor": 90},  # room on each page for updates that skip the indexes (HOT)
)
sa.Index("ix_couplings_skipped", couplings.c.mapping, postgresql_where=couplings.c.skipped.is_(sa.true()),
         sqlite_where=couplings.c.skipped.is_(sa.true()))
UNFINISHED = sa.and_(couplings.c.skipped.is_(False),
                     sa.or_(couplings.c.state == "pending", couplings.c.last_result.is_distinct_from("success")))
_UNFINISHED_DDL = sa.and_(  # the same predicate with literals: DDL takes no parameters
    couplings.c.skipped.is_(False),
    sa.or_(couplings.c.state == sa.literal_column("'pending'"),
           couplings.c.last_result.is_distinct_from(sa.literal_column("'success'"))))
sa.Index("ix_couplings_unfinished", couplings.c.mapping, postgresql_where=_UNFINISHED_DDL, sqlite_where=_UNFINISHED_DDL)

# Insert intents whose target key is known before the write (the bulk path): one row per batch,
# written before the target rows and deleted, in the transaction that writes the couplings, once
# they landed. Left over after a crash, its records become pending couplings (`promote_intents`) and
# are finished like any other. Keeping them out of `couplings` spares each new record a second
# write of that wide, thrice-indexed row; one row per batch spares a row per record.
insert_intents = sa.Table(
    "insert_intents",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("mapping", sa.String(100), nullable=False),
    sa.Column("origin", sa.String(16), nullable=False),  # the source side
    sa.Column("records", sa.JSON, nullable=False),  # [[coupling id, local key, integration key], ...]
    sa.Column("job_id", BigId, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    # The chunk of a chunked run that staged the batch: a redo of that chunk finishes them
    # (`promote_intents`) while the run's other chunks go on staging their own.
    sa.Column("chunk_id", BigId),
)
sa.Index("ix_insert_intents_mapping", insert_intents.c.mapping)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("mapping", sa.String(100), nullable=False),
    sa.Column("mapping_version", sa.Integer),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("direction", sa.String(20)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("operator", sa.String(100)),
    sa.Column("params", sa.JSON),
    sa.Column("enqueued_at", TS, nullable=False),
    sa.Column("started_at", TS),
    sa.Column("finished_at", TS),
    sa.Column("heartbeat_at", TS),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    # The fencing token: each claim of the job (a worker starting it, the reaper abandoning it)
    # takes a new epoch, and every store write of the job is conditional on the writer's epoch.
    sa.Column("epoch", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("worker", sa.String(200)),
    sa.Column("inserted", sa.Integer, nullable=False, default=0),
    sa.Column("modified", sa.Integer, nullable=False, default=0),
    sa.Column("deleted", sa.Integer, nullable=False, default=0),
    sa.Column("unchanged", sa.Integer, nullable=False, default=0),
    sa.Column("coupled", sa.Integer, nullable=False, default=0),
    sa.Column("uncoupled", sa.Integer, nullable=False, default=0),
    sa.Column("conflicts", sa.Integer, nullable=False, default=0),
    sa.Column("skipped", sa.Integer, nullable=False, default=0),
    sa.Column("failed", sa.Integer, nullable=False, default=0),
    sa.Column("message", sa.Text),
    # When a broker last took the job's message. NULL: the job waits in the store (asked for by a
    # process without a broker, or refused by the broker) until a scheduler or `tablesync run` sends it.
    sa.Column("sent_at", TS),
    # A chunked run's number of key-range chunks (NULL: the job runs in one piece). From the moment
    # it is set, the run's liveness is its chunks' leases (`run_chunks`), not the job's heartbeat.
    sa.Column("chunks", sa.Integer),
)
sa.Index("ix_jobs_mapping_status", jobs.c.mapping, jobs.c.status)
sa.Index("ix_jobs_status_heartbeat", jobs.c.status, jobs.c.heartbeat_at)
_UNSENT_DDL = sa.and_(jobs.c.status == sa.literal_column("'queued'"), jobs.c.sent_at.is_(None))
sa.Index("ix_jobs_unsent", jobs.c.id, postgresql_where=_UNSENT_DDL, sqlite_where=_UNSENT_DDL)

job_errors = sa.Table(
    "job_errors",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("job_id", BigId, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("coupling_id", BigId),
    sa.Column("direction", sa.String(20)),
    sa.Column("source_key", sa.Text),
    sa.Column("destination_key", sa.Text),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("created_at", TS, nullable=False),
)

# The per-record synchronization log, written in bulk per batch.
record_events = sa.Table(
    "record_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("job_id", BigId, nullable=False),  # no foreign key: one check per row of a bulk write; retention deletes by job
    sa.Column("mapping", sa.String(100), nullable=False),
    sa.Column("coupling_id", BigId),
    sa.Column("local_key", sa.Text),
    sa.Column("integration_key", sa.Text),
    sa.Column("direction", sa.String(20)),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("message", sa.Text),
    sa.Column("changes", sa.JSON),
    sa.Column("at", TS, nullable=False),
)
sa.Index("ix_record_events_local", record_events.c.mapping, record_events.c.local_key)
sa.Index("ix_record_events_integration", record_events.c.mapping, record_events.c.integration_key)
sa.Index("ix_record_events_job", record_events.c.job_id)
sa.Index("ix_record_events_coupling", record_events.c.coupling_id)

# Per mapping and side: how far incremental selection has safely read. `value` is a JSON-encoded
# scalar in the app's own clock/number domain.
watermarks = sa.Table(
    "watermarks",
    metadata,
    sa.Column("mapping", sa.String(100), primary_key=True),
    sa.Column("side", sa.String(16), primary_key=True),
    sa.Column("value", sa.JSON),
    sa.Column("updated_at", TS, nullable=False),
)

# One row per (mapping, due tick): the unique key is what makes several scheduler replicas enqueue
# each tick exactly once. `sent_at` NULL means written but not yet handed to the broker.
schedule_ticks = sa.Table(
    "schedule_ticks",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("mapping", sa.String(100), nullable=False),
    sa.Column("tick_at", TS, nullable=False),
    sa.Column("job_id", BigId),
    sa.Column("note", sa.String(200)),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("sent_at", TS),
    sa.UniqueConstraint("mapping", "tick_at"),
)
sa.Index("ix_schedule_ticks_unsent", schedule_ticks.c.sent_at, schedule_ticks.c.job_id)

# The live processes of this store, each beating every few seconds: schedulers, Dramatiq worker
# processes and `tablesync run`. `--wait` reads them to say who is missing when a job sits queued.
processes = sa.Table(
    "processes",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),  # host:pid
    sa.Column("role", sa.String(16), nullable=False),  # scheduler | worker | run
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("queue", sa.String(100)),  # the Dramatiq queue a worker consumes
    sa.Column("broker", sa.String(300)),  # the broker URL without its password, or "in-process"
    sa.Column("started_at", TS, nullable=False),
    sa.Column("seen_at", TS, nullable=False),
)

# A paused mapping: its schedule's ticks are skipped until an operator resumes it. Kept apart from
# the versioned mapping definitions, so a `config apply` neither pauses nor resumes anything.
mapping_pauses = sa.Table(
    "mapping_pauses",
    metadata,
    sa.Column("mapping", sa.String(100), primary_key=True),
    sa.Column("paused_by", sa.String(100)),
    sa.Column("paused_at", TS, nullable=False),
    sa.Column("reason", sa.Text),
)

# The key-range chunks of a chunked run (job `job_id`), each claimed by one worker at a time under
# a lease and an epoch (its fencing token). Number 0 is the run's last step, the finalisation: it
# waits until every range is done. Keys are record keys (`db.keys.encode_key`); a chunk holds the
# keys above `low` (exclusive) up to `high` (inclusive), NULL meaning unbounded.
run_chunks = sa.Table(
    "run_chunks",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("job_id", BigId, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("mapping", sa.String(100), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("low", sa.Text),
    sa.Column("high", sa.Text),
    sa.Column("status", sa.String(16), nullable=False),  # waiting | pending | running | done | failed
    sa.Column("apps", sa.JSON, nullable=False),  # the apps the chunk's worker connects to (max_connections)
    sa.Column("estimate", sa.BigInteger, nullable=False, default=0),  # source rows in the range when planned
    sa.Column("rows", sa.BigInteger, nullable=False, default=0),  # source rows read so far (this attempt)
    sa.Column("counters", sa.JSON),
    sa.Column("state", sa.JSON),  # the finalisation's: the start watermark, --where, max_parallel
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("epoch", sa.Integer, nullable=False, default=0),
    sa.Column("worker", sa.String(200)),
    sa.Column("lease_until", TS),
    sa.Column("started_at", TS),
    sa.Column("finished_at", TS),
    sa.Column("error", sa.Text),
    sa.UniqueConstraint("job_id", "number"),
)
sa.Index("ix_run_chunks_status", run_chunks.c.status, run_chunks.c.lease_until)

# Lease-based mapping lock for stores without advisory locks (SQLite).
mapping_locks = sa.Table(
    "mapping_locks",
    metadata,
    sa.Column("mapping", sa.String(100), primary_key=True),
    sa.Column("owner", sa.String(200)),
    sa.Column("expires_at", TS),
)

# `tablesync listen`: a mapping woken by a change in its source, waiting out the debounce. One row
# per mapping: the first change of a burst sets `due_at` (NULL: no wake-up pending), later ones
# only count; `last_job_at` is when a wake-up last became a job.
wakeups = sa.Table(
    "wakeups",
    metadata,
    sa.Column("mapping", sa.String(100), primary_key=True),
    sa.Column("first_change_at", TS),
    sa.Column("due_at", TS),
    sa.Column("changes", sa.Integer, nullable=False),
    sa.Column("last_job_at", TS),
)

# The change logs `tablesync listen` follows: a PostgreSQL replication slot it made (so that it can
# be dropped when no mapping needs it, even once its app is gone from the config), or a binlog
# position. `url` is the app's URL template (`${VAR}`s unexpanded), never a password.
capture_slots = sa.Table(
    "capture_slots",
    metadata,
    sa.Column("app", sa.String(100), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("slot", sa.String(100), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("position", sa.Text),
    sa.Column("updated_at", TS, nullable=False),
)
