"""What the templates' light faces (each template.py: no torch at import) share: a request's
params read as the template's own Params class, and where the ImageNet weights an image
template starts from are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from modelmill.training.contract import Example, InputKind, InvalidInput
from modelmill.training.weights import TimmWeights, WeightsLocation, imagenet_weights

ParamsT = TypeVar("ParamsT", bound=BaseModel)


class StartingWeights(Protocol):
    """Params that choose between ImageNet-1k and random ("None") starting weights."""

    @property
    def pretrained_weights(self) -> str: ...


def params_as(params_class: type[ParamsT], params: BaseModel | Mapping[str, Any]) -> ParamsT:
    """`params` as the template's Params class: as they are when they already are one, else
    validated (the defaults of the class fill what they leave out)."""
    return params if isinstance(params, params_class) else params_class.model_validate(params)


def imagenet_start(
    weights: TimmWeights | None, params: StartingWeights, weights_dir: Path | None, template: str
) -> WeightsLocation | None:
    """Where the ImageNet weights to start from are; None for random weights (pretrained_weights
    None, or a network without pretrained `weights`); DataError if asked for and nowhere."""
    if weights is None or params.pretrained_weights == "None":
        return None
    return imagenet_weights(weights, weights_dir, template)


def invalid_inputs(examples: Sequence[Example], kind: InputKind) -> list[InvalidInput]:
    """The inputs a template of `kind` inputs cannot use and why (see data.validate_examples)."""
    from modelmill.training.data import validate_examples  # torch: imported when used

    return validate_examples(examples, kind)


def save_pretrained_remedy(base_model: str, weights_dir: Path | None, what: str) -> str:
    """How a person provides `what` (e.g. "the model") of a Hugging Face `base_model` that this
    server has nowhere, for the error that says so."""
    folder = weights_dir if weights_dir is not None else "the weights folder"
    return (
        f"Save {what} (save_pretrained) into {folder}/{base_model.replace('/', '--')}, put it "
        "in the Hugging Face cache, give the server internet access, or choose a base model "
        "that is available."
    )
