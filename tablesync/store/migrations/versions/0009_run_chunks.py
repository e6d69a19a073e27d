"""run_chunks: key-range chunks of a chunked run; jobs.chunks; insert_intents.chunk_id

A large first run or full resync is split into key ranges that workers on any machine claim
under a lease (`store.chunks`). The job row says how many (`jobs.chunks`); a staged insert batch
names the chunk that staged it, so a redo of that chunk finishes exactly its batches.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tablesync.db.types

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('chunks', sa.Integer(), nullable=True))
    with op.batch_alter_table('insert_intents') as batch:
        batch.add_column(sa.Column('chunk_id', BigId, nullable=True))
    op.create_table(
        'run_chunks',
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.Column('job_id', BigId, nullable=False),
        sa.Column('mapping', sa.String(length=100), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('low', sa.Text(), nullable=True),
        sa.Column('high', sa.Text(), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('apps', sa.JSON(), nullable=False),
        sa.Column('estimate', sa.BigInteger(), nullable=False),
        sa.Column('rows', sa.BigInteger(), nullable=False),
        sa.Column('counters', sa.JSON(), nullable=True),
        sa.Column('state', sa.JSON(), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('epoch', sa.Integer(), nullable=False),
        sa.Column('worker', sa.String(length=200), nullable=True),
        sa.Column('lease_until', tablesync.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column('started_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column('finished_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_run_chunks_job_id_jobs'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_run_chunks')),
        sa.UniqueConstraint('job_id', 'number', name=op.f('uq_run_chunks_job_id_number')),
    )
    op.create_index('ix_run_chunks_status_lease_until', 'run_chunks', ['status', 'lease_until'])


def downgrade() -> None:
    op.drop_index('ix_run_chunks_status_lease_until', table_name='run_chunks')
    op.drop_table('run_chunks')
    with op.batch_alter_table('insert_intents') as batch:
        batch.drop_column('chunk_id')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('chunks')
