"""autonn: the uniform Job table."""

from alembic import op

from tango.jobs import create_jobs_table, drop_jobs_table

revision = "autonn_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_jobs_table(op, "autonn")


def downgrade() -> None:
    drop_jobs_table(op, "autonn")
