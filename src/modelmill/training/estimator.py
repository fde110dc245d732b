"""The training-time cost model: what a training costs depends on (its `Workload`), coefficients
fitted by non-negative least squares per template and hardware profile, and a peak-memory model.
Knows nothing of SQL or HTTP: measured `Run`s come in, a `CostModel` comes out.

The seed's estimator is `int(round(A · num_inputs · num_epochs + B))`. Here B is the "start-up"
term and A the "per input-epoch × model size" term at the reference size (224 px, 128 tokens);
the other terms add what the seed itself says is not linear in inputs × epochs (image size,
tokens, batch size) and the work done once per epoch and once per input (checkpoints,
decoding, evaluation). Every coefficient is ≥ 0 (a cost never pays time back), so a term the
data does not need comes out 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelmill.training.contract import InputKind, Template

# Model input sizes are counted in units of these, so coefficients read as "seconds per input at
# 224 × 224 pixels" or "... at 128 tokens".
REFERENCE_SIDE = 224  # pixels: the image side a size unit stands for
REFERENCE_PIXELS = REFERENCE_SIDE * REFERENCE_SIDE
REFERENCE_TOKENS = 128
REFERENCE_BATCH = 32
CHARS_PER_TOKEN = 4.0  # English averages about four characters per BPE / WordPiece token
CHARS_PER_SOURCE_UNIT = 1000.0
# When neither a dataset nor the app's inputs say how big the inputs are.
DEFAULT_MEGAPIXELS = 0.3
DEFAULT_CHARS = 300.0

# Names templates give to the parameters that drive cost; looked up in the template's Params and
# one level down in dict-valued params (HuggingFace-style `trainer_config`), so a new template
# is estimated without registering anything here.
EPOCH_PARAMS = ("num_epochs", "epochs", "num_train_epochs", "max_epochs")
BATCH_PARAMS = ("batch_size", "per_device_train_batch_size", "train_batch_size")
IMAGE_SIZE_PARAMS = ("image_size", "input_size", "img_size")
TOKEN_LIMIT_PARAMS = ("max_length", "max_seq_length", "model_max_length")
# An epoch that repeats the training inputs until it has seen this many (MMDetection's), and
# the share of inputs held out for validation, which an epoch does not train on.
MIN_SAMPLES_PARAMS = ("min_samples_per_epoch",)
VALIDATION_PARAMS = ("validation_fraction",)
# PatchCore's memory bank: a greedy k-center coreset of the training images' patches (one per
# PATCH_STRIDE² pixels), keeping coreset_fraction of them up to max_bank_size; the images it
# holds out to calibrate its threshold add no patches.
CORESET_PARAMS = ("coreset_fraction",)
BANK_CAP_PARAMS = ("max_bank_size",)
HOLDOUT_PARAMS = ("holdout_fraction",)
PATCH_STRIDE = 8
PATCH_PICKS_PER_UNIT = 1e9
EMBEDDER_PARAM = "base_embed_model"  # transfer learning: the base model that reads the inputs

# Below FULL_MODEL_MIN_RUNS runs only the seed's two terms are fitted (fewer unknowns than runs);
# below MIN_RUNS nothing is, and the template's own rule of thumb answers.
MIN_RUNS = 2
FULL_MODEL_MIN_RUNS = 6
# A finished training on this server counts as much as this many calibration trials: it is the
# thing being estimated (real data, real load), where a trial is a short synthetic stand-in.
SOURCE_WEIGHTS = {"calibration": 1.0, "training": 3.0}
DISTURBED_RATIO = 2.0
CALIBRATION_DIR = Path(__file__).parent / "calibration"


# ---- what a training costs depends on ------------------------------------------------------


def text_chars(text: str, target: str | None, messages: Sequence[tuple[str, str]]) -> int:
    """The characters a text template reads of one input: a chat's turns, else its text and,
    for a text-to-text pair, the wanted output too (the model learns both)."""
    if messages:
        return sum(len(content) for _, content in messages)
    return len(text) + len(target or "")


@dataclass(frozen=True)
class DataStats:
    """What the data says about cost: how many inputs, of which kind, how big as stored."""

    num_inputs: int
    kind: InputKind
    mean_megapixels: float = DEFAULT_MEGAPIXELS  # images
    mean_chars: float = DEFAULT_CHARS  # texts


@dataclass(frozen=True)
class Workload:
    """One training as the cost model sees it.

    `size_units`: the model's input size per input, 1.0 = 224² pixels (image_size², so cost is
    quadratic in the side) or 128 tokens. `source_units`: the stored size per input, megapixels
    or thousands of characters (decoding and tokenising).
    """

    kind: InputKind
    num_inputs: int
    num_epochs: int = 1  # 1 for templates without epochs
    batch_size: int = 0  # 0 for templates without batches
    size_units: float = 1.0
    source_units: float = 0.0
    # coreset picks × training patches (each pick of a k-center coreset is a pass over all the
    # patches), in PATCH_PICKS_PER_UNIT; 0 for templates without a coreset
    coreset_units: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Workload:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def find_param(values: Mapping[str, Any], names: Sequence[str]) -> tuple[tuple[str, ...], Any]:
    """((path), value) of the first of `names` in `values` or in a dict-valued entry of it;
    ((), None) when there is none."""
    for name in names:
        if name in values:
            return (name,), values[name]
    for key, nested in values.items():
        if isinstance(nested, Mapping):
            for name in names:
                if name in nested:
                    return (key, name), nested[name]
    return (), None


def param_number(value: Any) -> float | None:
    """A cost param's value as a number ((height, width): the side of a square of that area);
    None for none, a flag or what is not a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, list | tuple) and value:  # (height, width)
        return math.prod(float(v) for v in value) ** 0.5
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def workload_of(
    params: Mapping[str, Any],
    stats: DataStats,
    epochs_run: int | None = None,
    prompt_tokens: float = 0.0,
) -> Workload:
    """The workload of training with `params` (a Params model_dump) on data like `stats`, for
    the configured epochs or the `epochs_run` of a finished training (early stopping). An epoch
    that repeats the training inputs to see min_samples_per_epoch counts as that many passes.
    `prompt_tokens`: what the template's prompt format adds to each text (see prompt_tokens_of)."""
    configured = param_number(find_param(params, EPOCH_PARAMS)[1]) or 1.0
    epochs = (configured if epochs_run is None else epochs_run) * _repeats(params, stats)
    batch = param_number(find_param(params, BATCH_PARAMS)[1]) or 0.0
    if stats.kind == "image":
        side = param_number(find_param(params, IMAGE_SIZE_PARAMS)[1])
        size = side * side / REFERENCE_PIXELS if side else 1.0
        source = stats.mean_megapixels
    else:
        tokens = stats.mean_chars / CHARS_PER_TOKEN + prompt_tokens
        limit = param_number(find_param(params, TOKEN_LIMIT_PARAMS)[1])
        limit = limit or _embedder_token_limit(params)
        size = (min(tokens, limit) if limit else tokens) / REFERENCE_TOKENS
        source = stats.mean_chars / CHARS_PER_SOURCE_UNIT
    return Workload(
        stats.kind,
        stats.num_inputs,
        max(1, round(epochs)),
        max(0, round(batch)),
        size,
        source,
        _coreset_units(params, stats),
    )


def prompt_tokens_of(template: Template, params: Mapping[str, Any]) -> int:
    """Tokens a text template's prompt format adds to every input, which the model reads as it
    reads the text (SmolLM2's chat template: 32, as many as 120 characters of text); 0 for a
    template without a `prompt_tokens(params)` of its own."""
    own = getattr(template, "prompt_tokens", None)
    return int(own(params)) if own is not None else 0


def _coreset_units(params: Mapping[str, Any], stats: DataStats) -> float:
    """A coreset's picks × the training patches it picks from (see CORESET_PARAMS)."""
    fraction = param_number(find_param(params, CORESET_PARAMS)[1])
    if not fraction or stats.kind != "image":
        return 0.0
    side = param_number(find_param(params, IMAGE_SIZE_PARAMS)[1]) or REFERENCE_SIDE
    held_out = param_number(find_param(params, HOLDOUT_PARAMS)[1]) or 0.0
    patches = stats.num_inputs * (1 - held_out) * (side / PATCH_STRIDE) ** 2
    picks = min(fraction * patches, param_number(find_param(params, BANK_CAP_PARAMS)[1]) or patches)
    return picks * patches / PATCH_PICKS_PER_UNIT


def _repeats(params: Mapping[str, Any], stats: DataStats) -> int:
    """How many times an epoch goes over the training inputs (see MIN_SAMPLES_PARAMS)."""
    wanted = param_number(find_param(params, MIN_SAMPLES_PARAMS)[1])
    if not wanted:
        return 1
    held_out = param_number(find_param(params, VALIDATION_PARAMS)[1]) or 0.0
    training = max(1, round(stats.num_inputs * (1 - held_out)))
    return max(1, math.ceil(wanted / training))


def _embedder_token_limit(params: Mapping[str, Any]) -> float | None:
    """Tokens a transfer-learning template's base embedder reads (it truncates the rest)."""
    if EMBEDDER_PARAM not in params:
        return None
    from modelmill.training.embedders import default_embedder, get_embedder

    chosen = params[EMBEDDER_PARAM]
    embedder = get_embedder(chosen) if chosen else default_embedder("text")
    return param_number(getattr(embedder, "max_length", None))


# ---- the terms -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    name: str
    value: Callable[[Workload], float]
    why: str


def _steps(w: Workload) -> float:
    return w.num_epochs * math.ceil(w.num_inputs / w.batch_size) if w.batch_size else 0.0


def _batch_footprint(w: Workload) -> float:
    """Input-epochs × model size × the batch actually run (a training with fewer inputs than
    a batch runs smaller ones), in units of REFERENCE_BATCH."""
    if not w.batch_size:
        return 0.0
    batch = min(w.batch_size, w.num_inputs) / REFERENCE_BATCH
    return w.num_inputs * w.num_epochs * w.size_units * batch


TIME_TERMS: tuple[Term, ...] = (
    Term(
        "start-up",
        lambda w: 1.0,
        "process start, imports, building the model, loading pretrained weights (the seed's B)",
    ),
    Term(
        "per epoch",
        lambda w: w.num_epochs,
        "writing the epoch's checkpoints (weights and optimizer state), starting validation",
    ),
    Term(
        "per input",
        lambda w: w.num_inputs,
        "what each input costs whatever its size: reading, labels, Python per item",
    ),
    Term(
        "per input × stored size",
        lambda w: w.num_inputs * w.source_units,
        "reading and decoding megapixels / tokenising characters: validation, training, "
        "evaluation (decoded images stay in memory between epochs)",
    ),
    Term(
        "per input × model size",
        lambda w: w.num_inputs * w.size_units,
        "evaluation: one forward pass per input; base-model embeddings (transfer learning)",
    ),
    Term(
        "per input-epoch × model size",
        lambda w: w.num_inputs * w.num_epochs * w.size_units,
        "forward + backward of each input in each epoch, with its validation: grows with "
        "pixels (image_size², quadratic) or tokens; the seed's A at 224 px / 128 tokens",
    ),
    Term(
        "per input-epoch × model size²",
        lambda w: w.num_inputs * w.num_epochs * w.size_units**2,
        "what grows faster than the size: attention, with the square of the tokens; on a CPU, "
        "bigger images' activations outgrowing the caches (each pixel costs more)",
    ),
    Term(
        "per coreset pick × patch",
        lambda w: w.coreset_units,
        "a memory bank's greedy k-center coreset (PatchCore): each pick is a pass over all the "
        "training patches, so the time grows with their square until max_bank_size caps picks",
    ),
    Term(
        "per optimizer step",
        _steps,
        "fixed cost of each batch: why small batches train slower per input",
    ),
    Term(
        "per input-epoch × model size × batch",
        _batch_footprint,
        "on a CPU, a bigger batch's activations outgrow the caches and each input costs more: "
        "ResNet-50 at 288 px trains 1.6× slower in batches of 64 than of 8 (bench/RESULTS.md)",
    ),
)
# The seed's form, fitted while there are too few runs for every term.
SEED_TERMS = ("start-up", "per input-epoch × model size")
# What computing a transfer-learning template's base-model embeddings costs (part of its
# trials' time, measured apart): loading the base model once, then per input, by its stored
# size (decoding) and model size.
EMBEDDING_TERMS = ("start-up", "per input", "per input × stored size", "per input × model size")

MEMORY_TERMS: tuple[Term, ...] = (
    Term("base", lambda w: 1.0, "the process, libraries, weights, gradients, optimizer state"),
    Term(
        "per batch × model size",
        lambda w: max(w.batch_size, 1) * w.size_units,
        "activations of one batch",
    ),
    Term(
        "per input × model size",
        lambda w: w.num_inputs * w.size_units,
        "decoded images / token ids / embeddings kept in memory",
    ),
)


def _matrix(terms: Sequence[Term], workloads: Iterable[Workload]) -> np.ndarray:
    return np.array([[term.value(w) for term in terms] for w in workloads], dtype=float)


# ---- measured runs and fitting ---------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One measured training: its workload, seconds and peak memory. `seconds` is wall-clock
    time; for a calibration trial, less what it waited for CPUs other processes held.
    `embed_s`: the part of it spent computing base-model embeddings (a transfer-learning
    trial's; None where nothing was embedded or it was not measured)."""

    workload: Workload
    seconds: float
    peak_memory_bytes: int | None = None
    peak_gpu_memory_bytes: int | None = None
    source: str = "calibration"  # or "training": a finished training on this server
    embed_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = {**asdict(self), "workload": self.workload.to_json()}
        if self.embed_s is None:
            del data["embed_s"]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Run:
        return cls(**{**data, "workload": Workload.from_json(data["workload"])})


def _relative_nnls(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """β ≥ 0 minimising Σ wᵢ ((xᵢ·β − yᵢ) / yᵢ)²: relative errors, so a 10 s run counts as much
    as a 10 h one (users read percentages, not seconds). Columns are scaled for conditioning."""
    from scipy.optimize import nnls

    row_scale = np.sqrt(weights) / y
    weighted = x * row_scale[:, None]
    scale = np.linalg.norm(weighted, axis=0)
    used = scale > 0
    beta = np.zeros(x.shape[1])
    if used.any():
        solution, _ = nnls(weighted[:, used] / scale[used], np.sqrt(weights))
        beta[used] = solution / scale[used]
    return beta


def _fit_terms(
    terms: Sequence[Term],
    runs: Sequence[Run],
    y: np.ndarray,
    allowed: Sequence[str] | None = None,
) -> dict[str, float]:
    chosen = [t for t in terms if allowed is None or t.name in allowed]
    weights = np.array([SOURCE_WEIGHTS.get(r.source, 1.0) for r in runs])
    beta = _relative_nnls(_matrix(chosen, [r.workload for r in runs]), y, weights)
    return {t.name: float(b) for t, b in zip(chosen, beta, strict=True)}


def _predict(terms: Sequence[Term], coefficients: Mapping[str, float], w: Workload) -> float:
    return sum(coefficients.get(t.name, 0.0) * t.value(w) for t in terms)


@dataclass(frozen=True)
class CostModel:
    """Fitted coefficients (seconds, bytes) of one template on one hardware profile."""

    coefficients: dict[str, float]
    memory: dict[str, float] = field(default_factory=dict)
    gpu_memory: dict[str, float] = field(default_factory=dict)
    runs: int = 0  # runs it was fitted to
    error: float = 0.0  # mean absolute relative error on those runs
    disturbed: int = 0  # runs left out as disturbed
    embedding: dict[str, float] = field(default_factory=dict)  # EMBEDDING_TERMS of `embed_s`

    def seconds(self, workload: Workload) -> float:
        return _predict(TIME_TERMS, self.coefficients, workload)

    def embed_seconds(self, workload: Workload) -> float | None:
        """Of `seconds(workload)`'s per-input terms, computing every input's embeddings (loading
        the base model stays in the start-up); None when the runs did not measure it."""
        if not self.embedding:
            return None
        per_input = {k: v for k, v in self.embedding.items() if k != "start-up"}
        return _predict(TIME_TERMS, per_input, workload)

    def peak_memory_bytes(self, workload: Workload) -> int | None:
        return round(_predict(MEMORY_TERMS, self.memory, workload)) if self.memory else None

    def peak_gpu_memory_bytes(self, workload: Workload) -> int | None:
        return round(_predict(MEMORY_TERMS, self.gpu_memory, workload)) if self.gpu_memory else None


def _memory_fit(runs: Sequence[Run], attribute: str) -> dict[str, float]:
    measured = [r for r in runs if getattr(r, attribute)]
    if len(measured) < MIN_RUNS:
        return {}
    y = np.array([float(getattr(r, attribute)) for r in measured])
    return _fit_terms(MEMORY_TERMS, measured, y)


def _embedding_fit(runs: Sequence[Run]) -> dict[str, float]:
    measured = [r for r in runs if r.embed_s]
    if len(measured) < MIN_RUNS:
        return {}
    y = np.array([float(r.embed_s or 0.0) for r in measured])
    return _fit_terms(TIME_TERMS, measured, y, EMBEDDING_TERMS)


def _time_fit(runs: Sequence[Run]) -> dict[str, float]:
    allowed = None if len(runs) >= FULL_MODEL_MIN_RUNS else SEED_TERMS
    return _fit_terms(TIME_TERMS, runs, np.array([r.seconds for r in runs], dtype=float), allowed)


def fit(runs: Sequence[Run]) -> CostModel | None:
    """The cost model of these runs (all of one template on one hardware profile); None when
    there are fewer than MIN_RUNS. Under FULL_MODEL_MIN_RUNS only the seed's two terms.

    Runs more than DISTURBED_RATIO times slower than a first fit predicts are left out of the
    second (something else held the machine: a disturbance only ever adds time).

    e.g. `fit(runs).seconds(Workload("image", num_inputs=5000, num_epochs=30))`
    """
    if len(runs) < MIN_RUNS:
        return None
    coefficients = _time_fit(runs)
    kept = [
        r
        for r in runs
        if r.seconds <= DISTURBED_RATIO * _predict(TIME_TERMS, coefficients, r.workload)
    ]
    if len(kept) < len(runs) and len(kept) >= FULL_MODEL_MIN_RUNS:
        coefficients = _time_fit(kept)
    else:
        kept = list(runs)
    y = np.array([r.seconds for r in kept], dtype=float)
    predicted = np.array([_predict(TIME_TERMS, coefficients, r.workload) for r in kept])
    return CostModel(
        coefficients,
        memory=_memory_fit(runs, "peak_memory_bytes"),
        gpu_memory=_memory_fit(runs, "peak_gpu_memory_bytes"),
        runs=len(kept),
        error=float(np.mean(np.abs(predicted - y) / y)),
        disturbed=len(runs) - len(kept),
        embedding=_embedding_fit(kept),
    )


def leave_one_out(runs: Sequence[Run]) -> list[float]:
    """Each run's seconds as predicted by a model fitted to all the other runs: an honest
    error, unlike the in-sample one (NaN where the others are too few to fit)."""
    predictions = []
    for index, run in enumerate(runs):
        model = fit([r for i, r in enumerate(runs) if i != index])
        predictions.append(model.seconds(run.workload) if model else float("nan"))
    return predictions


# ---- keys and the shipped calibration ----------------------------------------------


def input_kinds(template: Template) -> tuple[InputKind, ...]:
    """The kinds of input a template trains on: its own, or both for a template whose params
    choose a base embedder (transfer learning: it follows the embedder or the data)."""
    if EMBEDDER_PARAM not in template.Params.model_fields:
        return (template.input_kind,)
    other: InputKind = "text" if template.input_kind == "image" else "image"
    return (template.input_kind, other)


def model_key(template: Template, kind: InputKind) -> str:
    """Names one cost model: the same template name may serve two model types, and a template
    that takes images or texts (transfer learning) costs differently for each."""
    return f"{template.model_type_id}/{template.name}/{kind}"


def shipped_runs(profile: str, directory: Path = CALIBRATION_DIR) -> dict[str, list[Run]]:
    """Calibration runs that ship with modelmill for this hardware profile, by model key."""
    found: dict[str, list[Run]] = {}
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("profile") != profile:
            continue
        for key, entry in data.get("models", {}).items():
            found.setdefault(key, []).extend(Run.from_json(r) for r in entry["runs"])
    return found


def calibration_document(
    profile: str, runs: Mapping[str, Sequence[Run]], **about: Any
) -> dict[str, Any]:
    """The JSON a calibration is shipped as: its runs and, for people, the fitted coefficients."""
    models = {}
    for key, key_runs in sorted(runs.items()):
        model = fit(key_runs)
        models[key] = {
            "coefficients": model.coefficients if model else {},
            "memory_coefficients": model.memory if model else {},
            **({"embedding_coefficients": model.embedding} if model and model.embedding else {}),
            "fit_error": round(model.error, 4) if model else None,
            "runs": [r.to_json() for r in key_runs],
        }
    return {"profile": profile, **about, "models": models}
