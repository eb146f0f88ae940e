"""project_manager: device profiles, their profiling agents, measurement tasks."""

from alembic import op
from sqlalchemy import MetaData

from project_manager.device_tables import DEVICE_TABLE_FACTORIES

revision = "project_manager_0003"
down_revision = "project_manager_0002"
branch_labels = None
depends_on = None


def _metadata() -> MetaData:
    # Built from the definitions as they stand at this revision; later changes get explicit ops.
    # The seed profiles are not data of this migration: project_manager upserts them on first use,
    # so a newer Tango refreshes them (and the host's detected facts) without a migration.
    metadata = MetaData()
    for make in DEVICE_TABLE_FACTORIES:
        make(metadata)
    return metadata


def upgrade() -> None:
    _metadata().create_all(op.get_bind())


def downgrade() -> None:
    _metadata().drop_all(op.get_bind())
