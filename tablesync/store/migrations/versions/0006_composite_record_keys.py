"""Record keys as text of any length: composite keys

A composite record key is the JSON array of its values as text (`["1","23"]`, SPEC §3), which can
outgrow the 255 characters the key columns had. The key columns of couplings, job errors and
record events become TEXT. Existing keys are kept as they are: a key of one column was its
value as text, and still is, so no coupling changes (on PostgreSQL, varchar → text rewrites
nothing, and the unique indexes stay valid).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

COLUMNS = {
    "couplings": ("local_key", "integration_key"),
    "job_errors": ("source_key", "destination_key"),
    "record_events": ("local_key", "integration_key"),
}


def upgrade() -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.alter_column(column, type_=sa.Text(), existing_type=sa.String(255), existing_nullable=True)


def downgrade() -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.alter_column(column, type_=sa.String(255), existing_type=sa.Text(), existing_nullable=True)
