"""What `modelmill train` prints of a queued version's estimate: its parts and, with trainings
ahead, when a worker should take it. Run: `.venv/bin/pytest tests/client -q`."""

from __future__ import annotations

from clarifai_grpc.grpc.api import resources_pb2 as pb

from modelmill.client.commands import estimate_lines


def queued(progress: dict[str, object]) -> pb.ModelVersion:
    version = pb.ModelVersion(id="v1")
    version.metadata.update({"progress": progress})
    return version


def test_the_estimate_is_printed_in_parts_with_the_queue_ahead() -> None:
    progress = {
        "estimated_s": 47,
        "estimate_parts": [
            ["start-up: job process, imports, data, model", 6.5],
            ["evaluation", 40.5],
        ],
        "jobs_ahead": 2,
        "starts_in_s": 95.0,
    }

    lines = estimate_lines(queued(progress))

    assert lines[0] == "Estimated 47 s from Train to trained on an idle server:"
    assert "start-up: job process" in lines[1] and lines[2].strip() == "40 s  evaluation"
    assert lines[3] == "2 trainings ahead: a worker should take it in about 95 s."


def test_nothing_is_printed_without_an_estimate_or_a_queue() -> None:
    assert estimate_lines(queued({"percent": 0.0})) == []
    idle = estimate_lines(queued({"estimated_s": 10, "estimate_parts": [], "starts_in_s": 0}))
    assert idle == ["Estimated 10 s from Train to trained on an idle server:"]
