"""labelling's Celery worker: `celery -A labelling.tasks:celery_app worker -Q labelling`.

Every job kind runs through the one task registered by the runtime (see tango.queue); the
kinds themselves are listed in labelling.runtime.
"""

from labelling.runtime import build_runtime

runtime = build_runtime()
celery_app = runtime.celery_app
