"""autonn: supernets, latency tables, models."""

from alembic import op
from sqlalchemy import MetaData

from autonn.records import latency_tables_table, models_table, supernets_table

revision = "autonn_0002"
down_revision = "autonn_0001"
branch_labels = None
depends_on = None

# Created from the table definitions as they stand at this revision; a later change to a table
# comes with its own migration of explicit operations.
TABLES = (supernets_table, latency_tables_table, models_table)


def upgrade() -> None:
    for make in TABLES:
        table = make(MetaData())
        # Column copies keep index=True, so create_table makes the indexes too.
        op.create_table(table.name, *[c.copy() for c in table.columns])


def downgrade() -> None:
    for make in reversed(TABLES):
        op.drop_table(make(MetaData()).name)
