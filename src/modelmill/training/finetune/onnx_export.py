"""Export of a trained PyTorch model as a zip: model.onnx (dynamic batch), config.json,
concepts.json and a manifest, after checking the ONNX outputs against PyTorch with onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ONNX_FILE = "model.onnx"
CONFIG_FILE = "config.json"
CONCEPTS_FILE = "concepts.json"
MANIFEST_FILE = "manifest.json"
OPSET_VERSION = 17
MAX_ABS_DIFF = 1e-3  # outputs are probabilities, fractions: a larger gap means another computation
IMAGE_TRACE_BATCH, IMAGE_CHECK_BATCHES = 2, (3, 1)  # image models: see random_images
_HASH_CHUNK_BYTES = 1 << 20


class ExportMismatchError(RuntimeError):
    """The exported ONNX model does not reproduce the PyTorch model's scores."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _onnx_outputs(
    path: Path, inputs: Mapping[str, torch.Tensor], names: Sequence[str]
) -> list[np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {name: tensor.numpy() for name, tensor in inputs.items()}
    return [np.asarray(array) for array in session.run(list(names), feeds)]


def _as_tuple(outputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)


def export_zip(
    module: nn.Module,
    trace_inputs: Mapping[str, torch.Tensor],
    check_inputs: Sequence[Mapping[str, torch.Tensor]],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    out_dir: Path,
    name: str,
    config: Mapping[str, Any],
    concepts: Sequence[str],
    output_names: Sequence[str],
    write_extra: Callable[[Path], None] | None = None,
    tolerance: float = MAX_ABS_DIFF,
) -> Path:
    """Exports `module` (inputs named as in `trace_inputs`; outputs, a tensor or a tuple of
    them, named `output_names`: the task's export_outputs) to `out_dir/<name>.zip` and returns
    its path. Dynamic axes of the outputs, other than a batch axis 0, go in `dynamic_axes`.

    The ONNX model runs on every `check_inputs` batch (use batch sizes other than the traced
    one, to check the dynamic axes); the largest absolute difference from PyTorch over every
    output goes into config.json and manifest.json, and above `tolerance` the export fails.
    """
    module = module.cpu().eval()  # eval() here: export restores the mode it found, dropout included
    folder = out_dir / f"{name}.export"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    onnx_path = folder / ONNX_FILE
    axes = {**{output: {0: "batch"} for output in output_names}, **dynamic_axes}
    with warnings.catch_warnings():
        # The TorchScript exporter: the torch.export one needs onnxscript, which we do not ship.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            tuple(trace_inputs.values()),
            str(onnx_path),
            dynamo=False,
            input_names=list(trace_inputs),
            output_names=list(output_names),
            dynamic_axes={key: dict(value) for key, value in axes.items()},
            opset_version=OPSET_VERSION,
        )
    max_diff = 0.0
    with torch.inference_mode():
        for inputs in check_inputs:
            expected = _as_tuple(module(*inputs.values()))
            got = _onnx_outputs(onnx_path, inputs, output_names)
            for want, have in zip(expected, got, strict=True):
                if want.numel():
                    difference = np.abs(have.astype(np.float64) - want.double().numpy()).max()
                    max_diff = max(max_diff, float(difference))
    if not max_diff <= tolerance:  # also catches NaN
        raise ExportMismatchError(
            f"ONNX scores differ from PyTorch by up to {max_diff:.3g} (tolerance {tolerance:g})"
        )
    check = {
        "max_abs_diff": max_diff,
        "tolerance": tolerance,
        "batches_checked": len(check_inputs),
        "opset": OPSET_VERSION,
        "inputs": list(trace_inputs),
        "outputs": list(output_names),
    }
    (folder / CONFIG_FILE).write_text(json.dumps({**config, "onnx": check}, indent=1))
    (folder / CONCEPTS_FILE).write_text(json.dumps(list(concepts), indent=1))
    if write_extra is not None:
        write_extra(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    manifest = {
        "files": {str(p.relative_to(folder)): _sha256(p) for p in files},
        "onnx_check": check,
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    archive = out_dir / f"{name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            bundle.write(path, str(path.relative_to(folder)))
    shutil.rmtree(folder)
    return archive


def random_images(
    size: int,
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]], dict[str, dict[int, str]]]:
    """export_zip's trace inputs, check inputs and dynamic axes for a model whose one input,
    `images`, is float32 (batch, 3, size, size) RGB pixels 0-255: random pixels (seeded, so the
    same every time), checked in batches of other sizes than the traced one."""
    generator = torch.Generator().manual_seed(0)

    def images(batch: int) -> dict[str, torch.Tensor]:
        pixels = torch.randint(0, 256, (batch, 3, size, size), generator=generator)
        return {"images": pixels.float()}

    trace = images(IMAGE_TRACE_BATCH)  # drawn first, then the checks: as the exports always did
    return trace, [images(batch) for batch in IMAGE_CHECK_BATCHES], {"images": {0: "batch"}}
