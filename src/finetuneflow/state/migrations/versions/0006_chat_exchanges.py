"""chat exchanges: every question and answer of a chat, with its memories, rating and correction

Revision ID: 0006_chat_exchanges
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_chat_exchanges"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chat_exchanges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("session", sa.String(length=32), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("retrieved", sa.JSON(), nullable=False),
        sa.Column("sampling", sa.JSON(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("correction", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("chat_exchanges", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_chat_exchanges_project_id"), ["project_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_chat_exchanges_session"), ["session"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("chat_exchanges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_chat_exchanges_session"))
        batch_op.drop_index(batch_op.f("ix_chat_exchanges_project_id"))
    op.drop_table("chat_exchanges")
