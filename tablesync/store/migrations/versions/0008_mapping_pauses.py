"""mapping_pauses: mappings an operator paused (`tablesync pause`), with who, when and why

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tablesync.db.types

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'mapping_pauses',
        sa.Column('mapping', sa.String(length=100), nullable=False),
        sa.Column('paused_by', sa.String(length=100), nullable=True),
        sa.Column('paused_at', tablesync.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('mapping', name=op.f('pk_mapping_pauses')),
    )


def downgrade() -> None:
    op.drop_table('mapping_pauses')
