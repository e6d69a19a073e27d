"""a partial index on unfinished couplings: every job's retry query reads only those

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# Exactly as SQLAlchemy compiles store.schema.UNFINISHED, so the planner can match the queries to it.
WHERE = "skipped IS false AND (state = 'pending' OR last_result IS DISTINCT FROM 'success')"


def upgrade() -> None:
    op.create_index('ix_couplings_unfinished', 'couplings', ['mapping'],
                    postgresql_where=sa.text(WHERE), sqlite_where=sa.text(WHERE.replace("IS DISTINCT FROM", "IS NOT").replace("IS false", "IS 0")))


def downgrade() -> None:
    op.drop_index('ix_couplings_unfinished', table_name='couplings')
