"""The template contract: what every trainable thing offers, from a transfer-learning head to a
LoRA text generator. Templates are plain objects matching `Template`; no base classes.

The shapes here cover all seven model types: outputs carry concepts, regions (boxes, polygons,
masks), embeddings, an anomaly heatmap or generated text, whichever the template produces.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
from pydantic import BaseModel

InputKind = Literal["image", "text"]


@dataclass(frozen=True)
class Region:
    """A labelled or predicted part of an image; coordinates are fractions of width and height."""

    concepts: dict[str, float]
    box: tuple[float, float, float, float] | None = None  # top_row, left_col, bottom_row, right_col
    polygon: tuple[tuple[float, float], ...] = ()  # (row, col) points
    mask_png: bytes | None = None  # a single-channel PNG, nonzero inside
    value: float | None = None  # a prediction's confidence in the region itself (detections)


@dataclass(frozen=True)
class Example:
    """One input as a template sees it: its content loader and its labels.

    `concepts` maps concept id to 1.0 (positive) or 0.0 (labelled negative); concepts not in
    the map are unlabelled for this input.
    """

    input_id: str
    kind: InputKind
    load: Callable[[], Any]  # -> PIL.Image.Image for images, str for texts
    concepts: dict[str, float] = field(default_factory=dict)
    regions: tuple[Region, ...] = ()
    target_text: str | None = None  # for text-to-text: the wanted output
    # for text-to-text: a chat to learn, (role, content) turns; the last is the answer
    messages: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TrainingData:
    """The frozen data of one training, and the concepts the version will predict, in order."""

    examples: Sequence[Example]
    concepts: Sequence[str]
    concepts_mutually_exclusive: bool = False


@dataclass(frozen=True)
class InvalidInput:
    input_id: str
    reason: str


@dataclass(frozen=True)
class Hardware:
    """Where a training runs; estimates are per hardware profile."""

    device: str  # "cpu" or "cuda"
    name: str  # CPU model or GPU name
    cores: int

    @property
    def profile(self) -> str:
        return f"{self.device}:{self.name}:{self.cores}"


@dataclass
class Output:
    """What a predictor answers for one input; only the fields its model type produces are set."""

    concepts: list[tuple[str, float]] = field(default_factory=list)  # sorted, highest first
    regions: list[Region] = field(default_factory=list)
    embedding: np.ndarray | None = None
    heatmap_png: bytes | None = None
    text: str | None = None


class TrainingCancelled(Exception):
    """Raised inside `train` when the context says the user cancelled."""


class DataError(Exception):
    """Training data that cannot make a model; `code` is the Clarifai status to report."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


class Embeddings(Protocol):
    """Embeds examples with a base embedding model, caching by (input, model version)."""

    def __call__(self, examples: Sequence[Example], model_id: str) -> np.ndarray: ...


@dataclass
class TrainContext:
    """Everything a template's `train` may use; it never touches the database or a request.

    `report(progress, **metrics)` takes progress in [0, 1] plus epoch, step, loss and the like.
    `checkpoint_dir` is where the template writes checkpoints (saved to the blob store by the
    runtime); `resume_from` is a checkpoint directory to continue from, if any.
    """

    device: str
    work_dir: Path
    checkpoint_dir: Path
    report: Callable[..., None]
    cancelled: Callable[[], bool]
    embeddings: Embeddings
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("modelmill.training"))
    resume_from: Path | None = None
    # True: resume_from is an earlier version's checkpoint to start a new training from
    # (incremental training). False: it is this training's own checkpoint, to continue.
    warm_start: bool = False
    weights_dir: Path | None = None  # where pretrained weights are looked up first
    save_checkpoint: Callable[[], None] = lambda: None
    # The training time cap, as a time.monotonic() value; None means no cap.
    deadline: float | None = None

    def out_of_time(self) -> bool:
        """True once the time cap is reached: stop after this step and keep the best checkpoint."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def check_cancelled(self) -> None:
        if self.cancelled():
            raise TrainingCancelled("training was cancelled")


@dataclass(frozen=True)
class TrainResult:
    """What `Template.train` hands back: the version's artifacts folder, whether training
    stopped at the time cap (the best checkpoint so far is kept), and the epochs it ran
    (None for templates without epochs)."""

    artifacts: Path
    stopped_at_cap: bool = False
    epochs_run: int | None = None


class Objective(Protocol):
    """What the fine-tuning loop optimises and watches, for one task: the loss of a batch
    (forward pass included: a detector computes its losses inside the model) and the
    validation metrics. `monitor` (one of `validate`'s keys) picks the best epoch and stops
    early; `higher_is_better` says which way it improves (a loss falls, mAP rises)."""

    monitor: str
    higher_is_better: bool

    def loss(self, model: Any, batch: Any) -> Any: ...  # a scalar torch.Tensor

    def validate(self, model: Any, batches: Iterable[Any]) -> dict[str, float]: ...


class Task(Protocol):
    """The pieces that differ per model type (ultralytics' task map): what labels a training
    needs and how they are counted, which inputs a training without a dataset takes, its
    metrics (one function for the held-out evaluation after training and for evaluations
    against a ground-truth dataset version), the outputs of its ONNX export, the web partial
    that shows its predictions and metrics, and sample data for tests and calibration trials.
    Templates build their own `Objective`s from the task's loss (torch, imported when used)."""

    name: str
    export_outputs: tuple[str, ...]
    web_partial: str  # web/templates/partials/<web_partial>.html

    def relevant(self, example: Example, concepts: Sequence[str]) -> bool:
        """Whether a training without a dataset takes this input of the app."""
        ...

    def check_data(
        self, examples: Sequence[Example], concepts: Sequence[str], exclusive: bool
    ) -> None:
        """Raise DataError (a MODEL_TRAINING_* status, naming what is missing) when these
        labels cannot train the model. Reads labels only, never the inputs' content."""
        ...

    def metrics(
        self,
        examples: Sequence[Example],
        outputs: Sequence[Output],
        concepts: Sequence[str],
        exclusive: bool,
        info: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """EvalMetrics (Clarifai JSON shape) of `outputs` against the examples' labels;
        predictors are asked for every concept at every score (see `predict_all`)."""
        ...

    def sample_data(
        self, kind: InputKind, count: int, size: int, extra_concept: bool = False
    ) -> TrainingData:
        """`count` labelled examples of this task's type, generated here: stored images
        `size` pixels wide or texts of about `size` characters. `extra_concept` adds one
        concept (incremental training)."""
        ...


def predict_all(concepts: Sequence[str]) -> dict[str, Any]:
    """Inference settings that make a predictor answer every concept at every score, as an
    evaluation needs."""
    return {"min_value": 0.0, "max_concepts": max(1, len(concepts))}


class Predictor(Protocol):
    def predict(self, examples: Sequence[Example], params: dict[str, Any]) -> list[Output]: ...


class Template(Protocol):
    """One way to train a model type. `Params` is a pydantic model: its fields, defaults, ranges
    and descriptions are what ListModelTypes answers and what the web form shows. A field's
    `json_schema_extra={"path": ...}` says where it lives in the API (default train_info.params).
    A text template whose prompt format adds tokens to every input (a chat template's markers
    and system turn) says how many in a `prompt_tokens(params) -> int` of its own: the training
    time estimate counts them (estimator.prompt_tokens_of).
    """

    name: ClassVar[str]
    model_type_id: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]]
    description: ClassVar[str]
    recommended: ClassVar[bool]
    input_kind: ClassVar[InputKind]
    Params: ClassVar[type[BaseModel]]

    def check_params(self, params: BaseModel, weights_dir: Path | None) -> None:
        """Raise DataError (MODEL_TRAINING_INVALID_PARAMS) when this server cannot train with
        these params, e.g. pretrained weights that are nowhere to be had. Runs before queueing."""
        ...

    def validate(self, examples: Sequence[Example], params: BaseModel) -> list[InvalidInput]: ...

    def estimate(self, num_inputs: int, params: BaseModel, hardware: Hardware) -> float: ...

    def train(self, ctx: TrainContext, data: TrainingData, params: BaseModel) -> TrainResult: ...

    def evaluate(
        self, ctx: TrainContext, data: TrainingData, params: BaseModel, artifacts: Path
    ) -> dict[str, Any]:
        """EvalMetrics in the Clarifai JSON shape, on data the artifacts were not fitted to
        (a held-out split, or k-fold cross-validation for transfer learning)."""
        ...

    def load(self, artifacts: Path) -> Predictor: ...

    def export(self, artifacts: Path, out_dir: Path) -> Path: ...
