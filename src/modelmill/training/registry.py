"""Model types → their task and templates → the ListModelTypes answer (fields, defaults, ranges,
enum options).

Adding a template is one folder under templates/ plus one line in TEMPLATES below; adding a
model type is its task module under tasks/, its template folder, its line in MODEL_TYPES (with
the task) and its web partial.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from modelmill.training.contract import Task, Template
from modelmill.training.tasks.anomaly import ANOMALY
from modelmill.training.tasks.classification import CLASSIFICATION
from modelmill.training.tasks.detection import DETECTION
from modelmill.training.tasks.embedding import EMBEDDING
from modelmill.training.tasks.generation import GENERATION
from modelmill.training.tasks.segmentation import SEGMENTATION
from modelmill.training.templates.embedding_classifier import EMBEDDING_CLASSIFIER
from modelmill.training.templates.text_classifier import (
    BERT_FINE_TUNE,
    GPT_NEO_125M_LORA,
    HUGGINGFACE_ADVANCED,
)
from modelmill.training.templates.text_generator import (
    GPT_NEO_125M_LORA_GENERATOR,
    HUGGINGFACE_ADVANCED_GENERATOR,
    SMOLLM2_FULL,
    SMOLLM2_LORA,
)
from modelmill.training.templates.visual_anomaly import PADIM, PATCHCORE
from modelmill.training.templates.visual_classifier import (
    EFFICIENTNET_B0_CLASSIFIER,
    EFFICIENTNET_LITE0_CLASSIFIER,
    RESNET50_CLASSIFIER,
)
from modelmill.training.templates.visual_detector import (
    FASTER_RCNN_DETECTOR,
    RETINANET_DETECTOR,
    SSD_DETECTOR,
    YOLOF_DETECTOR,
)
from modelmill.training.templates.visual_embedder import (
    ANGULAR_MARGIN_EMBEDDER,
    MULTI_SIMILARITY_EMBEDDER,
)
from modelmill.training.templates.visual_segmenter import (
    FPN_SEGMENTER,
    SEGFORMER_SEGMENTER,
    UNET_SEGMENTER,
)

# The templates modelmill can train, in the order the API lists them.
TEMPLATES: list[Template] = [
    EMBEDDING_CLASSIFIER,
    EFFICIENTNET_LITE0_CLASSIFIER,
    RESNET50_CLASSIFIER,
    EFFICIENTNET_B0_CLASSIFIER,
    BERT_FINE_TUNE,
    HUGGINGFACE_ADVANCED,
    GPT_NEO_125M_LORA,
    RETINANET_DETECTOR,
    FASTER_RCNN_DETECTOR,
    SSD_DETECTOR,
    YOLOF_DETECTOR,
    UNET_SEGMENTER,
    FPN_SEGMENTER,
    SEGFORMER_SEGMENTER,
    SMOLLM2_LORA,
    SMOLLM2_FULL,
    HUGGINGFACE_ADVANCED_GENERATOR,
    GPT_NEO_125M_LORA_GENERATOR,
    ANGULAR_MARGIN_EMBEDDER,
    MULTI_SIMILARITY_EMBEDDER,
    PATCHCORE,
    PADIM,
]


@dataclass(frozen=True)
class ModelTypeInfo:
    """A model type: what goes in, what comes out, and whether it takes a template."""

    id: str
    title: str
    description: str
    input_fields: tuple[str, ...]
    output_fields: tuple[str, ...]
    task: Task | None = None  # None: no templates yet, so it cannot train
    uses_template: bool = True
    predicts_concepts: bool = True


MODEL_TYPES: dict[str, ModelTypeInfo] = {
    info.id: info
    for info in [
        ModelTypeInfo(
            "embedding-classifier",
            "Transfer learning classifier",
            "A light classifier trained in seconds on embeddings from a base embedding model.",
            ("image", "text"),
            ("concepts",),
            CLASSIFICATION,
            uses_template=False,
        ),
        ModelTypeInfo(
            "visual-classifier",
            "Visual classifier",
            "Classify images into a set of concepts (deep fine-tuning).",
            ("image",),
            ("concepts",),
            CLASSIFICATION,
        ),
        ModelTypeInfo(
            "visual-detector",
            "Visual detector",
            "Detect bounding box regions in images and classify them.",
            ("image",),
            ("regions[...].region_info.bounding_box", "regions[...].data.concepts"),
            DETECTION,
        ),
        ModelTypeInfo(
            "visual-embedder",
            "Visual embedder",
            "Turn images into embedding vectors for visual search.",
            ("image",),
            ("embeddings",),
            EMBEDDING,
            predicts_concepts=True,
        ),
        ModelTypeInfo(
            "visual-segmenter",
            "Visual segmenter",
            "Segment a per-pixel mask for each concept.",
            ("image",),
            ("regions[...].region_info.mask", "regions[...].data.concepts"),
            SEGMENTATION,
        ),
        ModelTypeInfo(
            "visual-anomaly-heatmap",
            "Visual anomaly heatmap",
            "Score images for anomalies and draw an anomaly heatmap.",
            ("image",),
            ("concepts", "heatmaps"),
            ANOMALY,
        ),
        ModelTypeInfo(
            "text-classifier",
            "Text classifier",
            "Classify texts into a set of concepts (deep fine-tuning).",
            ("text",),
            ("concepts",),
            CLASSIFICATION,
        ),
        ModelTypeInfo(
            "text-to-text",
            "Text generator",
            "Generate or convert text from a text prompt.",
            ("text",),
            ("text",),
            GENERATION,
            predicts_concepts=False,
        ),
    ]
}

# Fields every template's model type has, outside the template's own Params.
DEFAULT_INVALID_DATA_TOLERANCE_PERCENT = 5.0
MAX_TRAINING_MINUTES = "max_training_minutes"  # the budget cap; 0 means none
COMMON_TRAIN_PARAMS = (
    "template",
    "dataset_id",
    "dataset_version_id",
    "seed",
    "num_gpus",
    MAX_TRAINING_MINUTES,
)


@dataclass(frozen=True)
class EnumOption:
    id: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    recommended: bool = False
    fields: tuple[FieldSpec, ...] = ()


@dataclass(frozen=True)
class FieldSpec:
    """One ModelTypeField: `field_type` is a ModelTypeField.ModelTypeFieldType name."""

    path: str
    field_type: str
    default: Any = None
    description: str = ""
    required: bool = False
    range: tuple[float, float, float] | None = None  # min, max, step
    options: tuple[EnumOption, ...] = ()
    placeholder: str = ""


@dataclass(frozen=True)
class ModelTypeSpec:
    info: ModelTypeInfo
    fields: tuple[FieldSpec, ...] = field(default_factory=tuple)


def find_template(model_type_id: str, name: str | None) -> Template | None:
    """The template of a model type by id or alias (None if there is no such template).

    `embedding-classifier` has one template and takes no name.
    """
    for template in TEMPLATES:
        if template.model_type_id != model_type_id:
            continue
        if not MODEL_TYPES[model_type_id].uses_template or name in (
            template.name,
            *template.aliases,
        ):
            return template
    return None


def recommended_template(model_type_id: str) -> str | None:
    """The name of a model type's recommended template (else its first); None without any."""
    templates = templates_of(model_type_id)
    chosen = next((t for t in templates if t.recommended), templates[0] if templates else None)
    return chosen.name if chosen is not None else None


def task_of(model_type_id: str) -> Task:
    """The task of a model type that can train (one with templates)."""
    task = MODEL_TYPES[model_type_id].task
    if task is None:
        raise KeyError(f"model type {model_type_id} has no task: it cannot be trained yet")
    return task


def templates_of(model_type_id: str) -> list[Template]:
    return [t for t in TEMPLATES if t.model_type_id == model_type_id]


def param_path(info: FieldInfo) -> str:
    """Where a Params field lives in the API: train_info.params (default), output_info.params or
    output_info.output_config."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return str(extra.get("path", "train_info.params"))


def _field_type(annotation: Any) -> tuple[str, tuple[str, ...]]:
    """The ModelTypeFieldType name for a Params annotation, and enum choices if any."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _field_type(args[0])
    if origin is Literal:
        return "ENUM", tuple(str(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "ENUM", tuple(str(m.value) for m in annotation)
    if annotation is bool:
        return "BOOLEAN", ()
    if annotation in (int, float):
        return "NUMBER", ()
    if origin is dict or annotation is dict:
        return "JSON", ()
    if origin is list:
        return "ARRAY_OF_STRINGS", ()
    return "STRING", ()


def _range(info: FieldInfo) -> tuple[float, float, float] | None:
    low = high = None
    for meta in info.metadata:
        low = getattr(meta, "ge", None) if getattr(meta, "ge", None) is not None else low
        high = getattr(meta, "le", None) if getattr(meta, "le", None) is not None else high
    if low is None or high is None:
        return None
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return float(low), float(high), float(extra.get("step", 0.0))  # type: ignore[arg-type]


def params_fields(params: type[BaseModel]) -> tuple[FieldSpec, ...]:
    """The ModelTypeFields of a template's Params, in declaration order."""
    specs = []
    for name, info in params.model_fields.items():
        field_type, choices = _field_type(info.annotation)
        default = info.default.value if isinstance(info.default, Enum) else info.default
        if info.default_factory is not None:
            default = info.default_factory()  # type: ignore[call-arg]
        specs.append(
            FieldSpec(
                # An alias is the API name when the Python one cannot be (`model_config`).
                path=f"{param_path(info)}.{info.alias or name}",
                field_type=field_type,
                default=default,
                description=info.description or "",
                required=info.is_required(),
                range=_range(info),
                options=tuple(EnumOption(id=c) for c in choices),
            )
        )
    return tuple(specs)


@cache
def model_type_specs() -> tuple[ModelTypeSpec, ...]:
    """Every trainable model type that has at least one template, with its fields."""
    specs = []
    for info in MODEL_TYPES.values():
        templates = templates_of(info.id)
        if not templates:
            continue
        fields = [
            FieldSpec(
                "train_info.params.dataset_id",
                "DATASET_ID",
                "",
                "Dataset to train on; "
                "empty means all the app's inputs labelled with the chosen concepts.",
            ),
            FieldSpec(
                "train_info.params.dataset_version_id",
                "DATASET_VERSION_ID",
                "",
                "Version of that dataset; empty means a new version made now.",
            ),
        ]
        if info.predicts_concepts:
            fields.append(
                FieldSpec(
                    "output_info.data.concepts",
                    "ARRAY_OF_CONCEPTS",
                    None,
                    "The concepts this model version predicts.",
                    required=True,
                )
            )
        if info.uses_template:
            options = tuple(
                EnumOption(
                    id=t.name,
                    description=t.description,
                    aliases=t.aliases,
                    recommended=t.recommended,
                    fields=params_fields(t.Params),
                )
                for t in templates
            )
            recommended = next((o.id for o in options if o.recommended), options[0].id)
            fields.append(
                FieldSpec(
                    "train_info.params.template",
                    "ENUM",
                    recommended,
                    "The training template.",
                    required=True,
                    options=options,
                )
            )
            fields.append(
                FieldSpec(
                    f"train_info.params.{MAX_TRAINING_MINUTES}",
                    "NUMBER",
                    0.0,
                    "Training time cap in minutes (0: none). Training stops at the cap and keeps "
                    "its best checkpoint so far.",
                    range=(0.0, 10080.0, 1.0),
                )
            )
        else:
            fields.extend(params_fields(templates[0].Params))
        fields.append(  # every model type: the runner checks it for all
            FieldSpec(
                "train_info.params.invalid_data_tolerance_percent",
                "NUMBER",
                DEFAULT_INVALID_DATA_TOLERANCE_PERCENT,
                "Largest share of unusable inputs (0-100) before training stops with an error.",
                range=(0.0, 100.0, 1.0),
            )
        )
        specs.append(ModelTypeSpec(info, tuple(fields)))
    return tuple(specs)
