"""Checkpoints as safetensors + JSON, never pickles: model weights, optimizer state (its tensors in
safetensors, the rest in JSON) and metadata, written atomically so that a crash mid-write keeps the
previous checkpoint; plus carrying a classifier head over to a new concept list.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from modelmill.training.checkpoint_keys import OPTIMIZER_KEY

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
META_FILE = "checkpoint.json"
LAST_DIR = "last"  # the latest epoch, to resume a job whose worker died
BEST_DIR = "best"  # the best epoch by validation loss, what the version keeps
TOKENIZER_DIR = "tokenizer"  # a text template's tokenizer, beside its checkpoint's weights
_STATE_PREFIX = "state"
_TEMP_SUFFIX = ".writing"
_OLD_SUFFIX = ".old"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder: `meta` is its JSON; tensors are read on demand."""

    path: Path
    meta: dict[str, Any]

    def model_state(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.path / MODEL_FILE))

    def optimizer_state(self) -> dict[str, Any] | None:
        """The optimizer's `state_dict()` as saved, or None if this checkpoint has none."""
        structure = self.meta.get(OPTIMIZER_KEY)
        if structure is None or not (self.path / OPTIMIZER_FILE).is_file():
            return None
        return _unflatten_optimizer_state(load_file(str(self.path / OPTIMIZER_FILE)), structure)


def _plain_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory (views, tied weights): store each on its own.
    seen: set[int] = set()
    plain = {}
    for key, tensor in state.items():
        tensor = tensor.detach().cpu()
        pointer = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
        plain[key] = tensor.clone().contiguous() if pointer in seen else tensor.contiguous()
        seen.add(pointer)
    return plain


def _flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer `state_dict()` → (tensors for safetensors, everything else for JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_STATE_PREFIX}.{param_id}.{name}"] = value
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return _plain_tensors(tensors), {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer_state(tensors: dict[str, torch.Tensor], structure: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = tensor
    for param_id, values in structure.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": structure["param_groups"]}


def save_checkpoint(
    directory: Path,
    model_state: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    write_extra: Callable[[Path], None] | None = None,
    same_model_as: Path | None = None,
) -> Path:
    """Writes a checkpoint folder atomically (a temporary sibling, then a rename).

    `write_extra(folder)` adds files of the caller's own (e.g. tokenizer files, all JSON/text).
    `same_model_as`: a checkpoint folder just written with these very weights; its model file
    is hard-linked (copied where links fail) instead of serialised a second time.
    """
    temporary = directory.with_name(directory.name + _TEMP_SUFFIX)
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    if same_model_as is not None:
        try:
            os.link(same_model_as / MODEL_FILE, temporary / MODEL_FILE)
        except OSError:
            shutil.copyfile(same_model_as / MODEL_FILE, temporary / MODEL_FILE)
    else:
        save_file(_plain_tensors(model_state), str(temporary / MODEL_FILE))
    meta = dict(meta)
    if optimizer is not None:
        tensors, structure = _flatten_optimizer_state(optimizer.state_dict())
        save_file(tensors, str(temporary / OPTIMIZER_FILE))
        meta[OPTIMIZER_KEY] = structure
    (temporary / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
    if write_extra is not None:
        write_extra(temporary)
    old = directory.with_name(directory.name + _OLD_SUFFIX)
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    temporary.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def find_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint at `path`: the folder itself, else its `last/`, else its `best/`.

    Accepts a training's checkpoint dir, one epoch's folder, or a version's artifacts folder.
    """
    for candidate in (path, path / LAST_DIR, path / BEST_DIR):
        meta_file = candidate / META_FILE
        if meta_file.is_file():
            return Checkpoint(candidate, json.loads(meta_file.read_text()))
    raise FileNotFoundError(
        f"no checkpoint ({META_FILE}) in {path} or its {LAST_DIR}/, {BEST_DIR}/"
    )


def carry_over_head(
    old_state: Mapping[str, torch.Tensor],
    old_concepts: Sequence[str],
    new_state: dict[str, torch.Tensor],
    new_concepts: Sequence[str],
    head_keys: Sequence[str],
) -> dict[str, int]:
    """Starts a model for `new_concepts` from one trained on `old_concepts` (incremental training).

    Every tensor of the same name and shape is copied from the old model. In the output layer
    (`head_keys`, e.g. "fc.weight", "fc.bias": one row per concept) rows of concepts kept are
    copied from the old row of that concept, new concepts keep the fresh rows `new_state` already
    has (a new random initialisation), and rows of concepts no longer asked for are dropped.
    Updates `new_state` in place; returns counts of copied, kept, new and dropped concepts.
    """
    old_index = {concept: row for row, concept in enumerate(old_concepts)}
    copied = 0
    for key, tensor in new_state.items():
        old = old_state.get(key)
        if old is None:
            continue
        if key in head_keys:
            for row, concept in enumerate(new_concepts):
                if concept in old_index:
                    tensor[row] = old[old_index[concept]].to(tensor.dtype)
        elif old.shape == tensor.shape:
            new_state[key] = old.to(tensor.dtype)
            copied += 1
    kept = sum(concept in old_index for concept in new_concepts)
    return {
        "tensors_copied": copied,
        "concepts_kept": kept,
        "concepts_new": len(new_concepts) - kept,
        "concepts_dropped": len(set(old_concepts) - set(new_concepts)),
    }


def copy_tokenizer(source: Path) -> Callable[[Path], None]:
    """A `write_extra` for checkpoints and exports: the tokenizer folder of checkpoint `source`."""

    def copy(folder: Path) -> None:
        shutil.copytree(source / TOKENIZER_DIR, folder / TOKENIZER_DIR)

    return copy
