"""The template contract: what every trainable thing offers, from a transfer-learning head to a
LoRA text generator. Templates are plain objects matching `Template`; no base classes.

The shapes here cover all seven model types: outputs carry concepts, regions (boxes, polygons,
masks), embeddings, an anomaly heatmap or generated text, whichever the template produces.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
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
    stopped_at_cap: bool = False

    def out_of_time(self) -> bool:
        """True once the time cap is reached: stop after this step and keep the best checkpoint."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stopped_at_cap = True
        return self.stopped_at_cap

    def check_cancelled(self) -> None:
        if self.cancelled():
            raise TrainingCancelled("training was cancelled")


class Predictor(Protocol):
    def predict(self, examples: Sequence[Example], params: dict[str, Any]) -> list[Output]: ...


class Template(Protocol):
    """One way to train a model type. `Params` is a pydantic model: its fields, defaults, ranges
    and descriptions are what ListModelTypes answers and what the web form shows. A field's
    `json_schema_extra={"path": ...}` says where it lives in the API (default train_info.params).
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

    def train(self, ctx: TrainContext, data: TrainingData, params: BaseModel) -> Path: ...

    def evaluate(
        self, ctx: TrainContext, data: TrainingData, params: BaseModel, artifacts: Path
    ) -> dict[str, Any]:
        """EvalMetrics in the Clarifai JSON shape, on data the artifacts were not fitted to
        (a held-out split, or k-fold cross-validation for transfer learning)."""
        ...

    def load(self, artifacts: Path) -> Predictor: ...

    def export(self, artifacts: Path, out_dir: Path) -> Path: ...
