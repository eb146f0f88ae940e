from alembic import context

from deploy_codegen.runtime import metadata
from tango.db import run_migrations_env

run_migrations_env(context, metadata)
