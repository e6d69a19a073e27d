"""the bulk insert path: insert intents in their own table, lighter indexes on couplings and events

- insert_intents: batches of pending inserts whose target keys are known in advance (see store.schema).
- couplings.inserted_by_job: the record log's "inserted" entry of a bulk insert.
- couplings: fillfactor 90 on PostgreSQL, so that a sync's update of a coupling stays on its page
  and skips its indexes (HOT): 1,000 updated couplings among 1M measured 3× faster.
- couplings: ix_couplings_retry (superseded by the partial ix_couplings_unfinished) gives way to a
  partial index on skipped couplings, the errors list's query.
- record_events: no foreign key to jobs, a trigger call per row of a bulk write (retention
  deletes a job's events itself).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tablesync.db.types

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'insert_intents',
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.Column('mapping', sa.String(length=100), nullable=False),
        sa.Column('origin', sa.String(length=16), nullable=False),
        sa.Column('records', sa.JSON(), nullable=False),
        sa.Column('job_id', BigId, nullable=False),
        sa.Column('created_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_insert_intents')),
    )
    op.create_index('ix_insert_intents_mapping', 'insert_intents', ['mapping'])
    with op.batch_alter_table('couplings') as batch:
        batch.add_column(sa.Column('inserted_by_job', BigId, nullable=True))
    op.drop_index('ix_couplings_retry', table_name='couplings')
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE couplings SET (fillfactor = 90)')
    op.create_index('ix_couplings_skipped', 'couplings', ['mapping'],
                    postgresql_where=sa.text('skipped IS true'), sqlite_where=sa.text('skipped IS 1'))
    with op.batch_alter_table('record_events') as batch:
        batch.drop_constraint('fk_record_events_job_id_jobs', type_='foreignkey')


def downgrade() -> None:
    with op.batch_alter_table('record_events') as batch:
        batch.create_foreign_key('fk_record_events_job_id_jobs', 'jobs', ['job_id'], ['id'], ondelete='CASCADE')
    op.drop_index('ix_couplings_skipped', table_name='couplings')
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE couplings RESET (fillfactor)')
    op.create_index('ix_couplings_retry', 'couplings', ['mapping', 'last_result', 'skipped'])
    with op.batch_alter_table('couplings') as batch:
        batch.drop_column('inserted_by_job')
    op.drop_index('ix_insert_intents_mapping', table_name='insert_intents')
    op.drop_table('insert_intents')
