"""The life of a model version: which status may follow which, and what counts as finished."""

from __future__ import annotations

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

QUEUED = codes.MODEL_QUEUED_FOR_TRAINING
TRAINING = codes.MODEL_TRAINING
TRAINED = codes.MODEL_TRAINED
UNTRAINED = codes.MODEL_UNTRAINED

# Every way a training can end without a model; each names what went wrong.
FAILURES = frozenset(
    {
        codes.MODEL_TRAINING_FAILED,
        codes.MODEL_TRAINING_NO_DATA,
        codes.MODEL_TRAINING_NO_POSITIVES,
        codes.MODEL_TRAINING_INSUFFICIENT_DATA,
        codes.MODEL_TRAINING_INVALID_PARAMS,
        codes.MODEL_TRAINING_INVALID_DATA_TOLERANCE_EXCEEDED,
        codes.MODEL_TRAINING_TIMED_OUT,
        codes.MODEL_TRAINING_ONE_VS_N_SINGLE_CLASS,
        codes.MODEL_TRAINING_UNKNOWN_ERROR,
    }
)
TERMINAL = FAILURES | {TRAINED}

_ALLOWED = {
    UNTRAINED: {QUEUED},
    QUEUED: {TRAINING} | FAILURES,
    # TRAINING -> QUEUED happens when a worker dies and its job is handed to another worker.
    TRAINING: {TRAINED, QUEUED} | FAILURES,
}


class InvalidTransition(Exception):
    """A status change the life cycle forbids, such as leaving a terminal status."""


def check_transition(current: int, new: int) -> int:
    """Return `new` if a version in status `current` may move to it, else raise.

    >>> check_transition(QUEUED, TRAINING) == TRAINING
    True
    """
    if new not in _ALLOWED.get(current, set()):
        raise InvalidTransition(
            f"a model version cannot go from {codes.StatusCode.Name(current)} "
            f"to {codes.StatusCode.Name(new)}"
        )
    return new
