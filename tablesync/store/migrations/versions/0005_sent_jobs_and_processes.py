"""jobs.sent_at and the processes table: a job knows whether a broker ever took its message, and
the store knows which schedulers and workers are alive

- jobs.sent_at: when the job's message was last handed to a broker; NULL while the job waits in
  the store (asked for by a process without a broker, or the broker refused it). Schedulers and
  `tablesync run` send such jobs; `--wait` can say who is missing. Rows of earlier versions were
  sent when they were enqueued.
- processes: one row per live scheduler, worker process and `tablesync run`, beating every few
  seconds: what `--wait` reads to say that no worker listens on a queue of this store.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tablesync.db.types

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('sent_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=True))
    op.execute('UPDATE jobs SET sent_at = enqueued_at')
    op.create_index('ix_jobs_unsent', 'jobs', ['id'], postgresql_where=sa.text("status = 'queued' AND sent_at IS NULL"),
                    sqlite_where=sa.text("status = 'queued' AND sent_at IS NULL"))
    op.create_table(
        'processes',
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('host', sa.String(length=200), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('queue', sa.String(length=100)),
        sa.Column('broker', sa.String(length=300)),
        sa.Column('started_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('seen_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_processes')),
    )


def downgrade() -> None:
    op.drop_table('processes')
    op.drop_index('ix_jobs_unsent', table_name='jobs')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('sent_at')
