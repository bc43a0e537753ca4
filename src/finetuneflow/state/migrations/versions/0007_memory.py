"""memory: the items of a project's memory (chunks, facts, interactions, corrections), and the ids of
the items each chat exchange was given

Revision ID: 0007_memory
Revises: 0006_chat_exchanges
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_memory"
down_revision = "0006_chat_exchanges"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memory_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("importance", sa.Float(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("chunk_id", sa.Integer(), nullable=True),
        sa.Column("exchange_id", sa.Integer(), nullable=True),
        sa.Column("corrects", sa.Integer(), nullable=True),
        sa.Column("superseded_by", sa.Integer(), nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("embedder", sa.String(length=128), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("forgotten_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["chunk_id"], ["chunks.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["exchange_id"], ["chat_exchanges.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("memory_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_memory_items_project_id"), ["project_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_memory_items_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_memory_items_chunk_id"), ["chunk_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_memory_items_forgotten_at"), ["forgotten_at"], unique=False)
    with op.batch_alter_table("chat_exchanges", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retrieved_ids", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("chat_exchanges", schema=None) as batch_op:
        batch_op.drop_column("retrieved_ids")
    with op.batch_alter_table("memory_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_memory_items_forgotten_at"))
        batch_op.drop_index(batch_op.f("ix_memory_items_chunk_id"))
        batch_op.drop_index(batch_op.f("ix_memory_items_kind"))
        batch_op.drop_index(batch_op.f("ix_memory_items_project_id"))
    op.drop_table("memory_items")
