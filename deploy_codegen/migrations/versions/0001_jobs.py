"""deploy_codegen: the uniform Job table."""

from alembic import op

from tango.jobs import create_jobs_table, drop_jobs_table

revision = "deploy_codegen_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_jobs_table(op, "deploy_codegen")


def downgrade() -> None:
    drop_jobs_table(op, "deploy_codegen")
