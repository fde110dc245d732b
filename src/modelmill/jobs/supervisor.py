"""Worker processes started by `modelmill serve`, restarted if they die."""

from __future__ import annotations

import logging
import multiprocessing
import threading

from modelmill.jobs.child import watch_parent
from modelmill.jobs.worker import main as worker_main
from modelmill.settings import Settings

log = logging.getLogger("modelmill.supervisor")
CHECK_S = 1.0


def _supervised_worker(settings: Settings) -> None:
    watch_parent()
    worker_main(settings)


class Supervisor:
    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[multiprocessing.process.BaseProcess] = [
            self._start() for _ in range(count)
        ]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _start(self) -> multiprocessing.process.BaseProcess:
        process = self.context.Process(
            target=_supervised_worker, args=(self.settings,), name="modelmill-worker"
        )
        process.start()
        return process

    def _watch(self) -> None:
        while not self.stopping.wait(CHECK_S):
            for index, process in enumerate(self.processes):
                if not process.is_alive():
                    log.warning(
                        "worker %s exited with %s; starting another", process.pid, process.exitcode
                    )
                    self.processes[index] = self._start()

    def stop(self) -> None:
        self.stopping.set()
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()
