"""autonn's Celery worker: `celery -A autonn.tasks:celery_app worker -Q autonn`.

Every job kind runs through the one task registered by the runtime (see tango.queue); the
kinds themselves are listed in autonn.runtime.
"""

from autonn.runtime import build_runtime

runtime = build_runtime()
celery_app = runtime.celery_app
