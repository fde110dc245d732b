"""Stand-ins for a job's child process, importable by name in a spawned process."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

FOREVER_S = 600.0


def train_forever(settings_values: dict[str, Any], job_pk: int, token: str) -> None:
    """A training that never ends by itself; writes its pid so the test can look for it."""
    Path(settings_values["data_dir"], f"child-{job_pk}.pid").write_text(str(os.getpid()))
    time.sleep(FOREVER_S)
