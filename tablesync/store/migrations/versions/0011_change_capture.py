"""wakeups and capture_slots: `tablesync listen` wakes mappings on a change and keeps the change
logs it follows (replication slots, binlog positions)

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tablesync.db.types

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'wakeups',
        sa.Column('mapping', sa.String(length=100), nullable=False),
        sa.Column('first_change_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column('due_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column('changes', sa.Integer(), nullable=False),
        sa.Column('last_job_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('mapping', name=op.f('pk_wakeups')),
    )
    op.create_table(
        'capture_slots',
        sa.Column('app', sa.String(length=100), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('slot', sa.String(length=100), nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('position', sa.Text(), nullable=True),
        sa.Column('updated_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('app', name=op.f('pk_capture_slots')),
    )


def downgrade() -> None:
    op.drop_table('capture_slots')
    op.drop_table('wakeups')
