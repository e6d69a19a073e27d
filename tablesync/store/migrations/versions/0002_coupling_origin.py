"""couplings.origin: the side a record was first created on; record events by coupling

A bidirectional mapping inserts in both directions, so an unfinished insert intent must say which
side is the source to be copied; one-way mappings fill it too, for the record log.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('couplings') as batch:
        batch.add_column(sa.Column('origin', sa.String(length=16), nullable=True))
    op.create_index('ix_record_events_coupling', 'record_events', ['coupling_id'])


def downgrade() -> None:
    op.drop_index('ix_record_events_coupling', table_name='record_events')
    with op.batch_alter_table('couplings') as batch:
        batch.drop_column('origin')
