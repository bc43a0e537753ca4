"""run kind: causal or classify

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        # every run recorded before this migration trained a causal LM: classification runs were
        # not recorded at all, so the server default is right for the rows that exist already
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="causal"))
        batch_op.create_index(batch_op.f("ix_runs_kind"), ["kind"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_kind"))
        batch_op.drop_column("kind")
