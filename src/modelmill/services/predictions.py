"""Predictions: load a trained version once, then answer PostModelOutputs with its settings."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.domain.errors import ApiError
from modelmill.services import AppScope, Env
from modelmill.services.embedders import load_base_embedder
from modelmill.services.examples import image_example, text_example
from modelmill.services.inputs import MAX_BATCH, NewInput, check_input
from modelmill.services.models import local_artifacts, trained_version
from modelmill.store.tables import Model, ModelVersion
from modelmill.training.contract import DataError, Example, Output, Predictor
from modelmill.training.registry import find_template

CACHED_PREDICTORS = 8


class PredictorCache:
    """Trained predictors by artifacts key, least recently used dropped first."""

    def __init__(self, env: Env, size: int = CACHED_PREDICTORS) -> None:
        self.env = env
        self.size = size
        self._items: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: Model, version: ModelVersion) -> Predictor:
        key = version.artifacts_key
        assert key is not None
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            template = find_template(
                model.model_type_id, (version.train_info.get("params") or {}).get("template")
            )
            assert template is not None
            load_base_embedder(self.env, version)
            predictor = template.load(local_artifacts(self.env, key))
            self._items[key] = predictor
            if len(self._items) > self.size:
                self._items.popitem(last=False)
            return predictor


def inference_params(
    version: ModelVersion, output_config: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    """The version's stored inference settings, overridden by the request's.

    The `clarifai` SDK sends back the version's stored output_info (from GetModel) with the
    caller's overrides merged in; a request value equal to the stored one is that echo, not a
    choice, so it must not outrank an override the caller made in the other section
    (an echoed `params.max_concepts` against a new `output_config.max_concepts`).
    """
    stored_config = version.output_info.get("output_config") or {}
    stored_params = version.output_info.get("params") or {}
    merged = {**stored_config, **stored_params}
    merged.update(
        {
            k: v
            for k, v in output_config.items()
            if v not in (None, [], 0, 0.0, "") and stored_config.get(k) != v
        }
    )
    merged.update({k: v for k, v in params.items() if stored_params.get(k) != v})
    return merged


def input_kinds(version: ModelVersion) -> set[str]:
    """The kinds of input a trained version reads (recorded when its training ended as
    input_info.fields_map); empty for versions trained before that was recorded."""
    return set((version.input_info or {}).get("fields_map") or {})


def read_inputs(
    env: Env, inputs: list[NewInput], kinds: set[str], reader: str
) -> list[Example | ApiError]:
    """Each input as an Example, or the error that makes it unreadable; `kinds` (when not
    empty) are the kinds of input `reader` takes."""
    read: list[Example | ApiError] = []
    for spec in inputs:
        try:
            checked = check_input(spec, env.settings)
            kind = "image" if checked.image is not None else "text"
            if kinds and kind not in kinds:
                # A text embedder would embed an image's repr; an image embedder would crash.
                raise ApiError(
                    codes.INPUT_UNSUPPORTED_FORMAT,
                    f"{reader} reads {' and '.join(sorted(kinds))} inputs, not {kind} inputs.",
                )
            read.append(
                image_example(spec.id, checked.image)
                if checked.image is not None
                else text_example(spec.id, checked.text or "")
            )
        except ApiError as error:
            read.append(error)
    return read


def predict(
    env: Env,
    cache: PredictorCache,
    app: AppScope,
    model_id: str,
    version_id: str,
    inputs: list[NewInput],
    output_config: dict[str, Any],
    params: dict[str, Any],
) -> tuple[Model, ModelVersion, list[Output | ApiError]]:
    """Predict on up to MAX_BATCH inputs; an unreadable input gets its own error."""
    if not inputs:
        raise ApiError(codes.INPUT_INVALID_REQUEST, "Send at least one input to predict on.")
    if len(inputs) > MAX_BATCH:
        raise ApiError(
            codes.INPUT_INVALID_REQUEST,
            f"A prediction request may carry at most {MAX_BATCH} inputs; this one has "
            f"{len(inputs)}.",
        )
    model, version = trained_version(env, app, model_id, version_id)
    predictor = cache.get(model, version)
    read = read_inputs(
        env, inputs, input_kinds(version), f"Version '{version.id}' of model '{model_id}'"
    )
    good = [r for r in read if not isinstance(r, ApiError)]
    try:
        outputs = iter(
            predictor.predict(good, inference_params(version, output_config, params))
            if good
            else []
        )
    except DataError as error:  # an inference setting this predictor cannot take
        raise ApiError(error.code, error.description) from None
    return model, version, [r if isinstance(r, ApiError) else next(outputs) for r in read]
