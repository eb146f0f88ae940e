"""deploy_codegen: the packages table."""

from alembic import op
from sqlalchemy import MetaData

from deploy_codegen.records import packages_table

revision = "deploy_codegen_0002"
down_revision = "deploy_codegen_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Created from the table definition as it stands at this revision; a later change to the
    # table comes with its own migration of explicit operations. Column copies keep index=True,
    # so create_table makes the index too.
    table = packages_table(MetaData())
    op.create_table(table.name, *[c.copy() for c in table.columns])


def downgrade() -> None:
    op.drop_table(packages_table(MetaData()).name)
