"""add_miner_fields: what push and legacy miners both need

Revision 0001 already records a miner's kind (push: a Celery worker; legacy:
polls /get_work). This step adds the software version and host a miner reports
when it registers, and makes the key hash unique and indexed: a legacy miner
identifies itself by its key alone, so the key must find exactly one miner fast.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot add a constraint in place, so Alembic copies the table.
    with op.batch_alter_table("miners") as batch:
        batch.add_column(sa.Column("version", sa.String(64), nullable=True))
        batch.add_column(sa.Column("hostname", sa.String(255), nullable=True))
        batch.create_index("ix_miners_key_hash", ["key_hash"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("miners") as batch:
        batch.drop_index("ix_miners_key_hash")
        batch.drop_column("hostname")
        batch.drop_column("version")
