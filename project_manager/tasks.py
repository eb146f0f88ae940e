"""project_manager's Celery worker: `celery -A project_manager.tasks:celery_app worker -Q pipeline`.

Every job kind runs through the one task registered by the runtime (see tango.queue); the
kinds themselves are listed in project_manager.runtime.
"""

from project_manager.runtime import build_runtime

runtime = build_runtime()
celery_app = runtime.celery_app
