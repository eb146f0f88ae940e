"""deploy_codegen's Celery worker: `celery -A deploy_codegen.tasks:celery_app worker -Q codegen`.

Every job kind runs through the one task registered by the runtime (see tango.queue); the
kinds themselves are listed in deploy_codegen.runtime.
"""

from deploy_codegen.runtime import build_runtime

runtime = build_runtime()
celery_app = runtime.celery_app
