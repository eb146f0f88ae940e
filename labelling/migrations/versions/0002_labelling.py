"""labelling: datasets, classes, images, labels, label history, suggestions, selections, imports,
versions."""

from alembic import op
from sqlalchemy import MetaData

from labelling.records import define_tables

revision = "labelling_0002"
down_revision = "labelling_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Created from the table definitions as they stand at this revision (a MetaData of their
    # own, so foreign keys and unique constraints come along); a later change to a table comes
    # with its own migration of explicit operations.
    metadata = MetaData()
    define_tables(metadata)
    metadata.create_all(bind=op.get_bind())


def downgrade() -> None:
    metadata = MetaData()
    define_tables(metadata)
    metadata.drop_all(bind=op.get_bind())
