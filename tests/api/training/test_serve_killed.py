"""A fault no process can tidy up after: `modelmill serve` and everything it started (its
worker, the job's child) killed with SIGKILL mid deep-training. Restarted on the same data dir,
the server finishes the training from its last checkpoint, and nothing uploaded is lost.

Run: `.venv/bin/python -m pytest -m slow tests/api/training/test_serve_killed.py`.
"""

from __future__ import annotations

from typing import Any

import psutil
import pytest

from api.helpers import assert_ok, name
from api.training.conftest import descendants
from api.training.support import (
    TERMINAL,
    TRAINED,
    TRAINING,
    StatusLog,
    create_model,
    labelled_images,
    start_training,
    upload,
    wait_for_version,
)
from api.training.test_workers import job_log, progress

CONCEPTS = ["red-circle", "blue-triangle"]
DEEP = {
    "template": "EfficientNet_Lite0_Fast",
    "image_size": 64,
    "batch_size": 8,
    "num_epochs": 6,
    "early_stopping_patience": 0,
}


@pytest.mark.slow
def test_a_training_survives_the_whole_server_killed_and_restarted(bare: Any) -> None:
    setup = bare({"MODELMILL_WORKERS": "1"})
    api, server = setup.api, setup.server
    images = labelled_images(16, concepts=CONCEPTS)
    upload(api, images)
    create_model(api, "shapes", "visual-classifier", concepts=CONCEPTS)
    version = start_training(api, "shapes", concepts=CONCEPTS, train_params=DEEP)
    log = StatusLog()
    checkpointed = wait_for_version(
        api,
        "shapes",
        version.id,
        log=log,
        until=lambda v: (
            v.status.code in TERMINAL
            # in epoch 2: epoch 1's checkpoint is in the blob store
            or (v.status.code == TRAINING and progress(v).get("epoch", 0) >= 2)
        ),
    )
    assert checkpointed.status.code == TRAINING, f"ended before the kill: {log.names()}"

    everything = [psutil.Process(server.process.pid), *descendants(server.process)]
    for process in everything:
        process.kill()  # SIGKILL: no process gets to tidy up
    _, alive = psutil.wait_procs(everything, timeout=30)
    assert not alive, "a process of the killed server kept running"

    server.start()  # the same data dir and ports: its worker claims the job once the lease lapses
    done = wait_for_version(api, "shapes", version.id, log=log)
    assert done.status.code == TRAINED, f"{name(done.status.code)}: {done.status.description}"
    text = job_log(api, "shapes", version.id)
    assert "attempt 2 of 3" in text and "resuming after epoch" in text, text[-2000:]
    stored = assert_ok(api.ListInputs(per_page=100)).inputs
    assert sorted(i.id for i in stored) == sorted(i.id for i in images)
