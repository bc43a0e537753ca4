"""indexes on the foreign keys that are set to NULL when their row goes (examples.chunk_id,
llm_calls.chunk_id, memory_items.exchange_id): without them, deleting a project scanned each child
table once per deleted chunk or exchange (15 s at 8,000 chunks on SQLite, holding its write lock)

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEXES = [("examples", "chunk_id"), ("llm_calls", "chunk_id"), ("memory_items", "exchange_id")]


def upgrade() -> None:
    for table, column in INDEXES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(batch_op.f(f"ix_{table}_{column}"), [column], unique=False)


def downgrade() -> None:
    for table, column in INDEXES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_{column}"))
