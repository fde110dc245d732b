"""The "Create New Model Version" settings form, built from the registry's field specs (so a new
template's hyperparameters appear with no change here), and the form → TrainRequest parsing.

Layout follows the seed: transfer learning shows Dataset, Base embed_model, Concepts, Concepts
mutually_exclusive, Enrich dataset and Inference settings; templated (deep fine-tuned) types show
Dataset, Concepts, Invalid data_tolerance_percent, Template and the template's Training and
inference settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from starlette.datastructures import FormData, QueryParams

from modelmill.domain.errors import ApiError
from modelmill.services import AppScope, Env, training
from modelmill.services.estimates import Estimate, estimate_training
from modelmill.services.queue_ahead import with_queue
from modelmill.services.training import count_training_inputs
from modelmill.training.registry import (
    MAX_TRAINING_MINUTES,
    FieldSpec,
    ModelTypeSpec,
    model_type_specs,
)

CONCEPTS = "output_info.data.concepts"
TEMPLATE = "train_info.params.template"
DATASET = "train_info.params.dataset_id"
DATASET_VERSION = "train_info.params.dataset_version_id"
BASE_EMBED_MODEL = "input_info.base_embed_model"

# The seed's names for the model type's own fields; a template's hyperparameters keep their
# API names (num_epochs, learning_rate), which are also what the API and SDK take.
LABELS = {
    DATASET: "Dataset",
    DATASET_VERSION: "Dataset version",
    CONCEPTS: "Concepts",
    TEMPLATE: "Template",
    BASE_EMBED_MODEL: "Base embed_model",
    "output_info.output_config.concepts_mutually_exclusive": "Concepts mutually_exclusive",
    "train_info.params.enrich_dataset": "Enrich dataset",
    "train_info.params.invalid_data_tolerance_percent": "Invalid data_tolerance_percent",
    f"train_info.params.{MAX_TRAINING_MINUTES}": "Training time cap (minutes)",
}
BUDGET = f"train_info.params.{MAX_TRAINING_MINUTES}"

# Where a top-level field goes, in the seed's order; the first matching prefix wins.
_ORDER = (
    "train_info.params.dataset",
    "input_info.",
    CONCEPTS,
    "train_info.params.invalid_data_tolerance_percent",
    "output_info.output_config.",
    TEMPLATE,
    "train_info.params.",
)

WIDGETS = {
    "NUMBER": "number",
    "BOOLEAN": "checkbox",
    "ENUM": "select",
    "STRING": "text",
    "JSON": "json",
    "ARRAY_OF_STRINGS": "list",
    "ARRAY_OF_CONCEPTS": "concepts",
    "DATASET_ID": "dataset",
    "DATASET_VERSION_ID": "dataset_version",
}


def _base_embed_models() -> list[tuple[str, str]]:
    # Imported here: the embedders module loads torch, which page rendering should not wait for
    # until this form is first shown.
    from modelmill.training.embedders import embedder_ids

    return [("", "Default for the inputs' kind")] + [(i, i) for i in embedder_ids()]


# Fields whose choices come from elsewhere than the field's own enum options.
CHOICES: dict[str, Callable[[], list[tuple[str, str]]]] = {
    BASE_EMBED_MODEL: _base_embed_models,
}


@dataclass
class FormField:
    """One field as the template renders it."""

    path: str
    label: str
    widget: str
    description: str = ""
    default: Any = None
    value: Any = None
    range: tuple[float, float, float] | None = None
    choices: list[tuple[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def dom_id(self) -> str:
        return "f-" + self.path.replace(".", "-")

    @property
    def step(self) -> str:
        if self.range and self.range[2]:
            return f"{self.range[2]:g}"
        return (
            "1" if isinstance(self.default, int) and not isinstance(self.default, bool) else "any"
        )

    @property
    def hint(self) -> str:
        """'Default 0.5; from 0 to 1.' for numbers and the like."""
        parts = []
        if self.widget == "checkbox":
            parts.append(f"Default {'on' if self.default else 'off'}")
        elif self.default not in (None, "", [], {}):
            parts.append(f"Default {_show(self.default)}")
        if self.range:
            parts.append(f"from {_show(self.range[0])} to {_show(self.range[1])}")
        return "; ".join(parts) + ("." if parts else "")


def _show(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, float):
        # Whole numbers in full (a seed's 2147483647), others short (0.001, 3.125e-05).
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
    return str(value)


@dataclass
class SettingsForm:
    """The form's sections; `values` are what the person typed, kept when the form comes back."""

    spec: ModelTypeSpec
    top: list[FormField]
    template: FormField | None = None
    template_description: str = ""
    training: list[FormField] = field(default_factory=list)  # the template's train_info.params
    inference: list[FormField] = field(default_factory=list)  # output_info.* of the params

    @property
    def uses_template(self) -> bool:
        return self.spec.info.uses_template

    def all_fields(self) -> list[FormField]:
        return [
            *self.top,
            *([self.template] if self.template else []),
            *self.training,
            *self.inference,
        ]


def spec_of(model_type_id: str) -> ModelTypeSpec:
    for spec in model_type_specs():
        if spec.info.id == model_type_id:
            return spec
    raise ApiError(
        codes.MODEL_INVALID_ARGUMENT,
        f"Model type '{model_type_id}' has no training templates on this server, so it cannot be "
        "trained here.",
    )


def _rank(path: str) -> int:
    return next((i for i, prefix in enumerate(_ORDER) if path.startswith(prefix)), len(_ORDER))


Values = FormData | QueryParams | None  # a submitted form, or None for the defaults


def _value(spec: FieldSpec, widget: str, values: Values) -> Any:
    """What the field shows: the submitted value when the form came back, else the default."""
    if values is None:
        return spec.default
    if widget == "checkbox":
        return spec.path in values
    if widget == "concepts":
        return [str(value) for value in values.getlist(spec.path)]
    raw = values.get(spec.path)
    return spec.default if raw is None else raw


def _field(spec: FieldSpec, values: Values) -> FormField:
    choices: list[tuple[str, str]] = []
    widget = WIDGETS.get(spec.field_type, "text")
    if spec.path in CHOICES:
        widget, choices = "select", CHOICES[spec.path]()
    elif spec.options:
        choices = [(option.id, option.id) for option in spec.options]
    return FormField(
        path=spec.path,
        label=LABELS.get(spec.path, spec.path.rsplit(".", 1)[-1]),
        widget=widget,
        description=spec.description,
        default=spec.default,
        value=_value(spec, widget, values),
        range=spec.range,
        choices=choices,
    )


def _is_inference(path: str) -> bool:
    return path.startswith("output_info.params.")


def build_form(
    model_type_id: str,
    values: Values = None,
    template_name: str = "",
    trained_embedders: Sequence[tuple[str, str]] = (),
) -> SettingsForm:
    """The form for a model type. `values` (a submitted form) fill it; `template_name` picks the
    template whose hyperparameters show (default: the recommended one); `trained_embedders`
    (value, label) join the built-in base embed models."""
    spec = spec_of(model_type_id)
    form = SettingsForm(spec, top=[])
    budget = None
    for field_spec in spec.fields:
        if field_spec.path == TEMPLATE:
            form.template = _field(field_spec, values)
            chosen = template_name or str(form.template.value or field_spec.default)
            option = next((o for o in field_spec.options if o.id == chosen), None)
            if option is None:
                option = next(o for o in field_spec.options if o.id == field_spec.default)
            form.template.value = option.id
            form.template_description = option.description
            # Another template's values do not carry over: its fields start at their defaults.
            keep = values if (values is not None and values.get(TEMPLATE) == option.id) else None
            for param in option.fields:
                target = form.inference if _is_inference(param.path) else form.training
                target.append(_field(param, keep))
        elif _is_inference(field_spec.path):
            form.inference.append(_field(field_spec, values))
        elif field_spec.path == BUDGET:
            budget = _field(field_spec, values)
        else:
            form.top.append(_field(field_spec, values))
    form.top.sort(key=lambda f: _rank(f.path))
    for field_ in form.top:
        if field_.path == BASE_EMBED_MODEL:
            field_.choices += trained_embedders
    if budget is not None:
        form.training.append(budget)  # the cap reads best beside the template's own settings
    return form


# ---- parsing ----------------------------------------------------------------------------------


def _parse_number(field_: FormField, raw: str) -> float | int:
    try:
        number = float(raw)
    except ValueError:
        raise ApiError(
            codes.MODEL_TRAINING_INVALID_PARAMS, f"{field_.label} must be a number, not '{raw}'."
        ) from None
    return int(number) if number.is_integer() and isinstance(field_.default, int) else number


def _parse(field_: FormField) -> tuple[bool, Any]:
    """(present, value) of a field from what the form shows; absent fields keep the defaults."""
    value = field_.value
    if field_.widget == "checkbox":
        return True, bool(value)
    if field_.widget == "concepts":
        return True, [str(v) for v in value or []]
    if not isinstance(value, str):
        return value is not None, value
    text = value.strip()
    if field_.widget == "number":
        return (True, _parse_number(field_, text)) if text else (False, None)
    if field_.widget == "json":
        if not text:
            return False, None
        try:
            return True, json.loads(text)
        except ValueError as error:
            raise ApiError(
                codes.MODEL_TRAINING_INVALID_PARAMS, f"{field_.label} is not valid JSON ({error})."
            ) from None
    if field_.widget == "list":
        return True, [item.strip() for item in text.split(",") if item.strip()]
    if not text and field_.default is None:
        return False, None
    return True, text


def train_request(form: SettingsForm) -> training.TrainRequest:
    """The TrainRequest of a filled-in form, each field put where its API path says."""
    request = training.TrainRequest()
    targets: dict[str, dict[str, Any]] = {
        "train_info.params.": request.train_params,
        "output_info.params.": request.inference_params,
        "output_info.output_config.": request.output_config,
    }
    for field_ in form.all_fields():
        present, value = _parse(field_)
        if not present:
            continue
        if field_.path == CONCEPTS:
            request.concepts = value
        elif field_.path == BASE_EMBED_MODEL:
            request.base_embed_model = str(value or "")
        elif field_.path in (DATASET, DATASET_VERSION) and not value:
            continue
        else:
            prefix = next((p for p in targets if field_.path.startswith(p)), None)
            if prefix is None:
                raise ApiError(
                    codes.MODEL_TRAINING_INVALID_PARAMS,
                    f"The form field {field_.path} has no place in a training request.",
                )
            targets[prefix][field_.path[len(prefix) :]] = value
    return request


# ---- estimate ---------------------------------------------------------------------------------


def estimate(
    env: Env, app: AppScope, model_id: str, concepts_in_app: list[str], form: SettingsForm
) -> Estimate:
    """The training time estimate for the form as it is filled in now. With no dataset chosen,
    the data is the app's inputs labelled with the chosen concepts (all concepts while none is
    ticked), as Train Model would freeze them."""
    request = train_request(form)
    params = dict(request.train_params)
    input_count = None
    if not params.get("dataset_id") and not params.get("dataset_version_id"):
        concepts = request.concepts or concepts_in_app
        input_count = count_training_inputs(env, app, model_id, concepts)
    return with_queue(env, estimate_training(env, app, model_id, params, input_count))
