"""autonn.remote's measure= for devices: the task ids it asks the project manager for."""

from __future__ import annotations

import autonn.remote as remote
from autonn.latency import measure_network_ms


def test_more_rounds_on_a_device_are_new_tasks(monkeypatch):
    """A noisy first task is followed by a second one with its own id (the same id would give back
    the first task's timings); the ids repeat in the same order for a resumed job."""
    asked = []

    def fake_measure_remote(*, models, rounds, task_id, **_):
        asked.append(task_id)
        wobble = [1.0, 1.5, 0.8] if len(asked) % 2 == 1 else [1.0] * rounds
        return {name: list(wobble[:rounds]) for name in models}

    monkeypatch.setattr(remote, "measure_remote", fake_measure_remote)
    for _ in range(2):
        measure = remote.remote_measurer(settings=None, store=None, device="lab-cpu", task_id="job1-eval")
        timed = measure_network_ms(models={"net": (None, (1, 3, 8, 8))}, rounds=3, measure=measure)
        assert len(timed["net"]["rounds"]) == 6
    assert asked == ["job1-eval", "job1-eval-2"] * 2
