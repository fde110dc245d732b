"""The life of a model version: allowed status changes, and terminal statuses that stay."""

from __future__ import annotations

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.domain.model_versions import (
    FAILURES,
    QUEUED,
    TERMINAL,
    TRAINED,
    TRAINING,
    UNTRAINED,
    InvalidTransition,
    check_transition,
)

EVERY_STATUS = sorted({UNTRAINED, QUEUED, TRAINING} | TERMINAL)


def name(code: int) -> str:
    return codes.StatusCode.Name(code)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (UNTRAINED, QUEUED),
        (QUEUED, TRAINING),
        (TRAINING, TRAINED),
        (TRAINING, QUEUED),  # a dead worker's job goes back to the queue
        (QUEUED, codes.MODEL_TRAINING_INVALID_PARAMS),
        (TRAINING, codes.MODEL_TRAINING_FAILED),
        (TRAINING, codes.MODEL_TRAINING_NO_DATA),
    ],
    ids=lambda code: name(code),
)
def test_the_normal_life_is_allowed(current: int, new: int) -> None:
    assert check_transition(current, new) == new


@pytest.mark.parametrize("terminal", sorted(TERMINAL), ids=name)
@pytest.mark.parametrize("new", EVERY_STATUS, ids=name)
def test_a_terminal_status_cannot_be_left(terminal: int, new: int) -> None:
    with pytest.raises(InvalidTransition) as raised:
        check_transition(terminal, new)

    assert name(terminal) in str(raised.value) and name(new) in str(raised.value)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (UNTRAINED, TRAINING),  # must be queued first
        (UNTRAINED, TRAINED),
        (QUEUED, TRAINED),  # no model without training
        (QUEUED, QUEUED),
        (TRAINING, TRAINING),
        (TRAINING, UNTRAINED),
    ],
    ids=lambda code: name(code),
)
def test_skipping_or_going_back_is_refused(current: int, new: int) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(current, new)


def test_every_failure_is_terminal_and_names_a_training_outcome() -> None:
    assert FAILURES <= TERMINAL
    assert TRAINED in TERMINAL
    assert all(name(code).startswith("MODEL_TRAINING") for code in FAILURES)
    assert not {UNTRAINED, QUEUED, TRAINING} & TERMINAL
