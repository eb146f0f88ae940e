"""Celery app factory and the one task that runs every Job kind of a service.

Redis when TANGO_REDIS_URL is set, otherwise kombu's filesystem transport (no server to install).
Tasks are acks_late: a message is acknowledged only after its job ends, so a worker killed
mid-job has the message redelivered (Redis, after the visibility timeout). Independently, every
worker runs a reaper that hands back jobs whose heartbeat stopped, which also covers the
filesystem transport, where an unacknowledged message dies with its worker.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from celery import Celery, signals
from celery.exceptions import Ignore
from kombu.exceptions import ChannelError

from tango.jobs import IllegalTransition, JobNotFound
from tango.settings import Settings
from tango.spec import SERVICES, JobState

if TYPE_CHECKING:
    from tango.runtime import ServiceRuntime

log = logging.getLogger(__name__)


def task_name(service: str) -> str:
    return f"{service}.run_job"


def make_celery(service: str, settings: Settings) -> Celery:
    queue = SERVICES[service].queue
    app = Celery(f"tango.{service}", broker=settings.broker_url, set_as_current=False)
    conf: dict = dict(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_default_queue=queue,
        task_routes={task_name(service): {"queue": queue}},
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
    )
    if settings.redis_url:
        conf["broker_transport_options"] = {
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_interval": max(1, int(settings.visibility_timeout / 2)),
            "unacked_restore_throttle": 1,
        }
    else:
        folder = settings.broker_folder
        for sub in ("queue", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
        }
        conf["worker_enable_remote_control"] = False
    app.conf.update(conf)
    return app


class JobCancelled(Exception):
    pass


class JobContext:
    """What a job handler gets: its id and params, progress reporting with cooperative
    cancellation, the store, and write-once checkpoints under runs/<job id>/checkpoints/."""

    def __init__(self, runtime: ServiceRuntime, job_id: str, attempt: int):
        self.runtime = runtime
        self.job_id = job_id
        self.attempt = attempt
        self.store = runtime.store
        self.settings = runtime.settings

    def progress(self, fraction: float, message: str = "") -> None:
        if self.runtime.jobs.report(self.job_id, progress=fraction, message=message):
            raise JobCancelled()

    def checkpoint_key(self, step: int, name: str = "state.json") -> str:
        return f"runs/{self.job_id}/checkpoints/{step:08d}/{name}"

    def save_checkpoint(self, step: int, data: bytes, name: str = "state.json") -> str:
        return self.store.put_bytes(self.checkpoint_key(step, name), data)

    def latest_checkpoint(self, name: str = "state.json") -> tuple[int, bytes] | None:
        steps = sorted({int(k.split("/")[3]) for k in self.store.list(f"runs/{self.job_id}/checkpoints")
                        if k.endswith("/" + name)})
        if not steps:
            return None
        return steps[-1], self.store.get_bytes(self.checkpoint_key(steps[-1], name))


def _beat(runtime: ServiceRuntime, job_id: str, stop: threading.Event) -> None:
    while not stop.wait(runtime.settings.heartbeat_seconds):
        try:
            runtime.jobs.heartbeat(job_id)
        except Exception:  # a DB blip must not kill the job; the next beat tries again
            log.exception("heartbeat for job %s failed", job_id)


def execute(runtime: ServiceRuntime, job_id: str) -> str:
    """Run one job to an end state. Idempotent: a finished job is left alone, a job another live
    worker holds is not touched, a job whose worker died is taken over and resumes."""
    jobs = runtime.jobs
    try:
        job = jobs.get(job_id)
    except JobNotFound:
        log.warning("job %s does not exist in %s; dropping its message", job_id, runtime.service)
        return "missing"
    if job.state.terminal:
        return job.state.value
    if not jobs.claim(job_id, stale_after=runtime.settings.stale_after_seconds):
        return "held-elsewhere"
    job = jobs.get(job_id)
    kind = runtime.kinds[job.kind]
    ctx = JobContext(runtime, job_id, job.attempts)
    stop = threading.Event()
    beater = threading.Thread(target=_beat, args=(runtime, job_id, stop), daemon=True)
    beater.start()
    try:
        params = kind.params.model_validate(job.params)
        result = kind.handler(ctx, params)
    except JobCancelled:
        jobs.transition(job_id, JobState.cancelled, message="cancelled")
        return "cancelled"
    except Exception as exc:
        log.exception("job %s (%s) failed", job_id, job.kind)
        jobs.transition(job_id, JobState.failed, error=f"{type(exc).__name__}: {exc}",
                        message="failed")
        return "failed"
    finally:
        stop.set()
    jobs.transition(job_id, JobState.succeeded, result=result, progress=1.0, message="done")
    return "succeeded"


def register_runner(app: Celery, runtime: ServiceRuntime) -> None:
    @app.task(name=task_name(runtime.service), bind=True, acks_late=True)
    def run_job(self, job_id: str) -> str:  # noqa: ANN001
        outcome = execute(runtime, job_id)
        if outcome == "held-elsewhere":
            # Another worker holds it (a duplicate delivery). Look again later: if that worker
            # dies, its heartbeat goes stale and this delivery takes the job over.
            raise self.retry(countdown=runtime.settings.stale_after_seconds, max_retries=None)
        if outcome == "missing":
            raise Ignore()
        return outcome

    @signals.worker_ready.connect(weak=False)
    def _start_reaper(sender=None, **_):  # noqa: ANN001
        if getattr(sender, "app", None) is not app:
            return
        if not runtime.settings.redis_url:
            # Filesystem transport: messages prefetched by a dead worker are gone; every job
            # still queued gets a fresh message (a duplicate is a harmless no-op).
            for job_id in runtime.jobs.ids_in_state(JobState.queued):
                runtime.enqueue(job_id)
        threading.Thread(target=_reap_forever, args=(runtime,), daemon=True,
                         name=f"{runtime.service}-reaper").start()


def broker_queue_size(runtime: ServiceRuntime) -> int | None:
    """Messages waiting in the service's queue; 0 when the broker forgot the queue itself (a
    restart without persistence); None when the broker does not answer."""
    try:
        with runtime.celery_app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            try:
                return conn.default_channel.queue_declare(queue=runtime.spec.queue, passive=True).message_count
            except ChannelError:
                return 0
    except Exception:  # the broker is away: nothing can be judged lost now
        return None


def reap_once(runtime: ServiceRuntime) -> list[str]:
    """Hand jobs whose worker stopped beating back to the queue, and re-send jobs left `queued`
    while the broker's queue is empty: their messages were lost (a broker that crashed without
    persistence), and a duplicate of a message that was not lost is a harmless no-op."""
    handed_back = []
    for job_id in runtime.jobs.stale_running(stale_after=runtime.settings.stale_after_seconds):
        try:
            runtime.jobs.transition(job_id, JobState.queued, message="worker lost; requeued")
        except IllegalTransition:
            continue
        runtime.enqueue(job_id)
        handed_back.append(job_id)
        log.warning("job %s lost its worker; requeued", job_id)
    orphans = runtime.jobs.queued_before(seconds=runtime.settings.stale_after_seconds)
    if orphans and broker_queue_size(runtime) == 0:
        for job_id in orphans:
            runtime.enqueue(job_id)
            handed_back.append(job_id)
            log.warning("job %s was queued but its message is gone; sent again", job_id)
    return handed_back


def _reap_forever(runtime: ServiceRuntime) -> None:
    stop = threading.Event()
    while not stop.wait(runtime.settings.stale_after_seconds):
        try:
            reap_once(runtime)
        except Exception:
            log.exception("reaper pass failed")
