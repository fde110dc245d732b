"""Where a training runs: the device a setting names, this machine as a hardware profile (what
estimates are kept per), and a job's share of a GPU's memory."""

from __future__ import annotations

import os
import platform

from modelmill.training.contract import Hardware


def resolve_device(setting: str) -> str:
    """The training device a setting names: "auto" is CUDA where there is one, else the CPU."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def this_hardware(device: str = "cpu") -> Hardware:
    """This machine as a hardware profile; `device` is "cpu" or "cuda"."""
    cores = os.cpu_count() or 1
    if device == "cuda":
        import torch

        return Hardware("cuda", torch.cuda.get_device_name(0), cores)
    return Hardware("cpu", platform.processor() or platform.machine(), cores)


def limit_gpu_memory(fraction: float) -> None:
    """Let this process allocate at most `fraction` of the GPU's memory, so that jobs sharing
    a GPU cannot starve each other (an allocation past it raises torch's OutOfMemoryError,
    which the training runner turns into a status naming the batch size to try)."""
    import torch

    if torch.cuda.is_available() and 0 < fraction < 1:
        torch.cuda.set_per_process_memory_fraction(fraction)
