import pytest
from pydantic import ValidationError

from tango.spec import SERVICES, TERMINAL_STATES, TRANSITIONS, JobCreate, JobState


def test_services_match_the_design_topology():
    assert {n: (s.port, s.queue) for n, s in SERVICES.items()} == {
        "project_manager": (8080, "pipeline"),
        "labelling": (8081, "labelling"),
        "autonn": (8082, "autonn"),
        "deploy_codegen": (8083, "codegen"),
    }


def test_terminal_states_have_no_way_out():
    for state in JobState:
        assert state.terminal == (state in TERMINAL_STATES)
        if state.terminal:
            assert TRANSITIONS[state] == frozenset()


def test_a_job_reaches_every_terminal_state_only_through_the_table():
    assert JobState.succeeded not in TRANSITIONS[JobState.queued]  # it must run first
    assert JobState.succeeded in TRANSITIONS[JobState.running]
    assert JobState.cancelled in TRANSITIONS[JobState.queued]


@pytest.mark.parametrize("kind", ["", "Selftest", "1abc", "a-b", "x" * 65, "rm -rf"])
def test_job_kind_names_are_validated(kind):
    with pytest.raises(ValidationError):
        JobCreate(kind=kind)


def test_job_create_rejects_unknown_fields():
    with pytest.raises(ValidationError):
        JobCreate.model_validate({"kind": "selftest", "priority": 3})
    assert JobCreate(kind="selftest").params == {}
