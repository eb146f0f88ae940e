"""project_manager: users, tokens, projects, members, pipeline stages."""

from alembic import op
from sqlalchemy import MetaData

from project_manager.tables import TABLE_FACTORIES

revision = "project_manager_0002"
down_revision = "project_manager_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Built from the definitions as they stand at this revision; later changes get explicit ops.
    metadata = MetaData()
    for make in TABLE_FACTORIES:
        make(metadata)
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    metadata = MetaData()
    for make in TABLE_FACTORIES:
        make(metadata)
    metadata.drop_all(op.get_bind())
