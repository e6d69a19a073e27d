"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 23:22:46.828191
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tablesync.db.types

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('couplings',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('mapping', sa.String(length=100), nullable=False),
    sa.Column('local_key', sa.String(length=255), nullable=True),
    sa.Column('integration_key', sa.String(length=255), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('local_hash', sa.String(length=32), nullable=True),
    sa.Column('integration_hash', sa.String(length=32), nullable=True),
    sa.Column('last_values', sa.JSON(), nullable=True),
    sa.Column('local_modified', sa.String(length=64), nullable=True),
    sa.Column('integration_modified', sa.String(length=64), nullable=True),
    sa.Column('last_result', sa.String(length=16), nullable=True),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('skipped', sa.Boolean(), nullable=False),
    sa.Column('skip_reason', sa.String(length=32), nullable=True),
    sa.Column('last_job_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('last_error_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('last_synced_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_couplings')),
    sa.UniqueConstraint('mapping', 'integration_key', name=op.f('uq_couplings_mapping_integration_key')),
    sa.UniqueConstraint('mapping', 'local_key', name=op.f('uq_couplings_mapping_local_key'))
    )
    with op.batch_alter_table('couplings', schema=None) as batch_op:
        batch_op.create_index('ix_couplings_retry', ['mapping', 'last_result', 'skipped'], unique=False)

    op.create_table('jobs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('mapping', sa.String(length=100), nullable=False),
    sa.Column('mapping_version', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('direction', sa.String(length=20), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('operator', sa.String(length=100), nullable=True),
    sa.Column('params', sa.JSON(), nullable=True),
    sa.Column('enqueued_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('started_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('inserted', sa.Integer(), nullable=False),
    sa.Column('modified', sa.Integer(), nullable=False),
    sa.Column('deleted', sa.Integer(), nullable=False),
    sa.Column('unchanged', sa.Integer(), nullable=False),
    sa.Column('coupled', sa.Integer(), nullable=False),
    sa.Column('uncoupled', sa.Integer(), nullable=False),
    sa.Column('conflicts', sa.Integer(), nullable=False),
    sa.Column('skipped', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_mapping_status', ['mapping', 'status'], unique=False)
        batch_op.create_index('ix_jobs_status_heartbeat', ['status', 'heartbeat_at'], unique=False)

    op.create_table('mapping_locks',
    sa.Column('mapping', sa.String(length=100), nullable=False),
    sa.Column('owner', sa.String(length=200), nullable=True),
    sa.Column('expires_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('mapping', name=op.f('pk_mapping_locks'))
    )
    op.create_table('mappings',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('definition', sa.JSON(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('applied_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('applied_by', sa.String(length=100), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mappings')),
    sa.UniqueConstraint('name', 'version', name=op.f('uq_mappings_name_version'))
    )
    op.create_table('schedule_ticks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('mapping', sa.String(length=100), nullable=False),
    sa.Column('tick_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('job_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('note', sa.String(length=200), nullable=True),
    sa.Column('created_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schedule_ticks')),
    sa.UniqueConstraint('mapping', 'tick_at', name=op.f('uq_schedule_ticks_mapping_tick_at'))
    )
    with op.batch_alter_table('schedule_ticks', schema=None) as batch_op:
        batch_op.create_index('ix_schedule_ticks_unsent', ['sent_at', 'job_id'], unique=False)

    op.create_table('watermarks',
    sa.Column('mapping', sa.String(length=100), nullable=False),
    sa.Column('side', sa.String(length=16), nullable=False),
    sa.Column('value', sa.JSON(), nullable=True),
    sa.Column('updated_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('mapping', 'side', name=op.f('pk_watermarks'))
    )
    op.create_table('job_errors',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('coupling_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('direction', sa.String(length=20), nullable=True),
    sa.Column('source_key', sa.String(length=255), nullable=True),
    sa.Column('destination_key', sa.String(length=255), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('created_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_errors_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_errors'))
    )
    with op.batch_alter_table('job_errors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_job_errors_job_id'), ['job_id'], unique=False)

    op.create_table('record_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('mapping', sa.String(length=100), nullable=False),
    sa.Column('coupling_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('local_key', sa.String(length=255), nullable=True),
    sa.Column('integration_key', sa.String(length=255), nullable=True),
    sa.Column('direction', sa.String(length=20), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('changes', sa.JSON(), nullable=True),
    sa.Column('at', tablesync.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_record_events_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_record_events'))
    )
    with op.batch_alter_table('record_events', schema=None) as batch_op:
        batch_op.create_index('ix_record_events_integration', ['mapping', 'integration_key'], unique=False)
        batch_op.create_index('ix_record_events_job', ['job_id'], unique=False)
        batch_op.create_index('ix_record_events_local', ['mapping', 'local_key'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('record_events', schema=None) as batch_op:
        batch_op.drop_index('ix_record_events_local')
        batch_op.drop_index('ix_record_events_job')
        batch_op.drop_index('ix_record_events_integration')

    op.drop_table('record_events')
    with op.batch_alter_table('job_errors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_errors_job_id'))

    op.drop_table('job_errors')
    op.drop_table('watermarks')
    with op.batch_alter_table('schedule_ticks', schema=None) as batch_op:
        batch_op.drop_index('ix_schedule_ticks_unsent')

    op.drop_table('schedule_ticks')
    op.drop_table('mappings')
    op.drop_table('mapping_locks')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_status_heartbeat')
        batch_op.drop_index('ix_jobs_mapping_status')

    op.drop_table('jobs')
    with op.batch_alter_table('couplings', schema=None) as batch_op:
        batch_op.drop_index('ix_couplings_retry')

    op.drop_table('couplings')
