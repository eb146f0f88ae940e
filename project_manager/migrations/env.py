from alembic import context

from project_manager.runtime import metadata
from tango.db import run_migrations_env

run_migrations_env(context, metadata)
