"""jobs.epoch: the fencing token of a job

Each claim of a job (a worker marking it running, the reaper abandoning it) increments its
epoch; every store write of the job (counters, couplings, its end) checks the writer's epoch,
so a worker that was frozen past the heartbeat timeout and wakes up after its job was redone can
no longer write anything: it stops at its next batch. Existing jobs start at 0.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('epoch', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('epoch')
