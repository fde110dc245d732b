"""The transfer-learning template (model type `embedding-classifier`): a linear head trained in
seconds on embeddings from a frozen base embedding model, evaluated by k-fold cross-validation.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelmill.training.contract import (
    Example,
    Hardware,
    InputKind,
    InvalidInput,
    Output,
    TrainContext,
    TrainingData,
    TrainResult,
)
from modelmill.training.tasks.classification import CLASSIFICATION

# torch, transformers and scikit-learn load inside the methods that need them: the API process
# imports every template to answer ListModelTypes and should not pay for them.

log = logging.getLogger("modelmill")

FORMAT_VERSION = 1
HEAD_FILE = "head.safetensors"
CONFIG_FILE = "config.json"
EXPORT_NAME = "embedding-classifier.zip"
EMBEDDING_PROGRESS = 0.8  # share of a training's progress bar spent embedding inputs
# Rough seconds per input on one idle CPU core, and how much faster a GPU embeds. The 2-core CI
# machine, shared and loaded, ran 3-5x slower than this (bench/RESULTS.md, transfer learning).
EMBED_CORE_SECONDS = {"text": 0.01, "image": 0.08}
GPU_SPEEDUP = 30.0
# A head fit includes choosing its regularisation (5-fold CV along the C path, selection.py).
# Default settings (sigmoid + generic negatives), one thread of the 2-core machine at load ~12:
# 6.7 s for 1,500 tweets (MiniLM) and 43 s for 800 digits (EfficientNet-Lite0, 10 concepts;
# bench/RESULTS.md, head vs LogisticRegressionCV). An idle core is several times faster; these
# are the upper end until a server's own finished trainings refit the estimate.
HEAD_FIT_SECONDS = 0.5
HEAD_FIT_SECONDS_PER_INPUT = {"text": 4.5e-3, "image": 5.4e-2}
CROSS_VALIDATION_FITS = 5


class Params(BaseModel):
    """Training and output settings of an embedding classifier (the ListModelTypes fields)."""

    model_config = ConfigDict(extra="forbid")

    enrich_dataset: Literal["Automatic", "Disabled"] = Field(
        "Automatic",
        description="Automatic adds a built-in set of generic inputs as negatives for every "
        "concept, which lowers false positives on unrelated inputs; Disabled trains on your "
        "inputs only.",
    )
    concepts_mutually_exclusive: bool = Field(
        False,
        description="Each input belongs to exactly one concept: scores sum to 1 (softmax). "
        "Otherwise each concept is scored on its own (sigmoid) and an input may have several.",
        json_schema_extra={"path": "output_info.output_config"},
    )
    min_value: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Predictions return only concepts scoring at least this value.",
        json_schema_extra={"path": "output_info.params", "step": 0.01},
    )
    max_concepts: int = Field(
        20,
        ge=1,
        le=200,
        description="Predictions return at most this many concepts, highest scores first.",
        json_schema_extra={"path": "output_info.params", "step": 1},
    )
    base_embed_model: str = Field(
        "",
        description="The base embedding model whose embeddings the classifier learns from: a "
        "built-in one, or a trained embedder model of this app (model id, optionally "
        "with @version) or of another app (user_id and app_id beside it); empty means the "
        "default for the inputs' kind (all-minilm-l6-v2 for texts, efficientnet-lite0 for "
        "images).",
        json_schema_extra={"path": "input_info"},
    )

    @field_validator("base_embed_model")
    @classmethod
    def _known_embedder(cls, value: str) -> str:
        from modelmill.training.embedders import get_embedder

        if value:
            try:
                get_embedder(value)
            except KeyError as error:
                raise ValueError(str(error.args[0])) from None
        return value


def _embedder_for(examples: Sequence[Example], params: Params):
    """The chosen base embedder, or the default for the kind most of the inputs have."""
    from modelmill.training.embedders import default_embedder, get_embedder

    if params.base_embed_model:
        return get_embedder(params.base_embed_model)
    kinds = Counter(example.kind for example in examples)
    kind: InputKind = max(("image", "text"), key=lambda k: kinds.get(k, 0))  # ties: image
    return default_embedder(kind)


def _negatives_for(embedder, params: Params) -> np.ndarray | None:
    if params.enrich_dataset == "Disabled":
        return None
    from modelmill.training.templates.embedding_classifier.negatives import load_negatives

    return load_negatives(embedder.id, embedder.version)


class EmbeddingClassifierPredictor:
    """A trained head plus its base embedder (loaded once per process, shared)."""

    def __init__(self, config: dict[str, Any], head) -> None:
        from modelmill.training.embedders import get_embedder

        self.config = config
        self.concepts: list[str] = config["concepts"]
        self.head = head
        self.embedder = get_embedder(config["embedder_id"])
        if self.embedder.version != config["embedder_version"]:
            log.warning(
                "embedder %s is now version %s, but this model was trained on %s",
                self.embedder.id,
                self.embedder.version,
                config["embedder_version"],
            )

    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        embeddings = self.embedder.embed([example.load() for example in examples])
        return self.head.scores(embeddings)

    def predict(self, examples: Sequence[Example], params: dict[str, Any]) -> list[Output]:
        """Concepts per example, best first; `params` may set min_value, max_concepts and
        select_concepts (concept ids, or dicts with an "id"), overriding the version's own."""
        defaults = self.config["output_params"]
        min_value = float(params.get("min_value", defaults["min_value"]))
        max_concepts = int(params.get("max_concepts", defaults["max_concepts"]))
        selected = params.get("select_concepts") or []
        wanted = {c["id"] if isinstance(c, dict) else str(c) for c in selected}
        columns = [i for i, c in enumerate(self.concepts) if not wanted or c in wanted]
        outputs = []
        for row in self.scores(examples) if examples else []:
            ranked = sorted(
                ((self.concepts[i], float(row[i])) for i in columns), key=lambda pair: -pair[1]
            )
            ranked = [pair for pair in ranked if pair[1] >= min_value][:max_concepts]
            outputs.append(Output(concepts=ranked))
        return outputs


def _trained_regularization(artifacts: Path) -> dict[str, Any]:
    """The regularisation the trained model chose (its config's record), for the evaluation."""
    config_path = artifacts / CONFIG_FILE
    if not config_path.exists():
        return {}
    training = json.loads(config_path.read_text()).get("training", {})
    keys = ("regularization_c", "standardize_features", "selection_folds")
    return {key: training[key] for key in keys if key in training}


class EmbeddingClassifier:
    """The transfer-learning template; see the module docstring."""

    name: ClassVar[str] = "embedding-classifier"
    model_type_id: ClassVar[str] = "embedding-classifier"
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = (
        "A linear classifier on embeddings of a frozen base model; trains in seconds."
    )
    recommended: ClassVar[bool] = True
    # Images by default; the actual kind follows base_embed_model or, if empty, the inputs.
    input_kind: ClassVar[InputKind] = "image"
    Params: ClassVar[type[BaseModel]] = Params

    def check_params(self, params: BaseModel, weights_dir: Path | None) -> None:
        """Nothing to check: the base embedders ship with their packages."""

    def validate(self, examples: Sequence[Example], params: BaseModel) -> list[InvalidInput]:
        """Inputs of another kind than the base embedder's, or whose content cannot be read."""
        from PIL import Image

        embedder = _embedder_for(examples, Params.model_validate(params.model_dump()))
        invalid = []
        for example in examples:
            if example.kind != embedder.input_kind:
                invalid.append(
                    InvalidInput(
                        example.input_id,
                        f"is {example.kind}, but {embedder.id} embeds {embedder.input_kind} inputs",
                    )
                )
                continue
            try:
                content = example.load()
            except Exception as error:  # any loader failure makes the input unusable
                invalid.append(InvalidInput(example.input_id, f"cannot be read: {error}"))
                continue
            expected = Image.Image if embedder.input_kind == "image" else str
            if not isinstance(content, expected) or (isinstance(content, str) and not content):
                invalid.append(InvalidInput(example.input_id, f"is not a usable {example.kind}"))
        return invalid

    def estimate(self, num_inputs: int, params: BaseModel, hardware: Hardware) -> float:
        """Seconds to train and cross-validate: embedding each input once, then the fits."""
        from modelmill.training.embedders import get_embedder

        kind = "image"  # the slower kind when the inputs are not known yet
        if getattr(params, "base_embed_model", ""):
            kind = get_embedder(params.base_embed_model).input_kind
        per_input = EMBED_CORE_SECONDS[kind] / max(1, hardware.cores)
        if hardware.device == "cuda":
            per_input = EMBED_CORE_SECONDS[kind] / GPU_SPEEDUP
        fits = (1 + CROSS_VALIDATION_FITS) * (
            HEAD_FIT_SECONDS + HEAD_FIT_SECONDS_PER_INPUT[kind] * num_inputs
        )
        return num_inputs * per_input + fits

    def _prepare(self, ctx: TrainContext, data: TrainingData, params: Params):
        """Embeddings and targets of the usable examples, checked; plus generic negatives."""
        from modelmill.training.templates.embedding_classifier import labels

        embedder = _embedder_for(data.examples, params)
        examples = [e for e in data.examples if e.kind == embedder.input_kind]
        if len(examples) < len(data.examples):
            ctx.log.warning(
                "skipping %d inputs that %s cannot embed",
                len(data.examples) - len(examples),
                embedder.id,
            )
        exclusive = params.concepts_mutually_exclusive
        labelled = labels.build_targets(examples, data.concepts, exclusive)
        negatives = _negatives_for(embedder, params)
        labels.check_training_data(labelled, data.concepts, exclusive, negatives is not None)
        embeddings = ctx.embeddings([examples[row] for row in labelled.rows], embedder.id)
        return embedder, examples, labelled, np.asarray(embeddings, np.float32), negatives

    def train(self, ctx: TrainContext, data: TrainingData, params: BaseModel) -> TrainResult:
        """Fits the head (seconds; a resumed training simply fits again) and saves it."""
        from safetensors.numpy import save_file

        from modelmill.training.templates.embedding_classifier.selection import fit_selected_head

        params = Params.model_validate(params.model_dump())
        started = time.monotonic()
        ctx.report(0.0, step=0)
        embedder, _, labelled, embeddings, negatives = self._prepare(ctx, data, params)
        ctx.report(EMBEDDING_PROGRESS, step=0)
        exclusive = params.concepts_mutually_exclusive

        def report(share: float, step: int, loss: float) -> None:
            progress = EMBEDDING_PROGRESS + (1 - EMBEDDING_PROGRESS) * share
            metrics = {} if np.isnan(loss) else {"loss": loss}
            ctx.report(progress, step=step, **metrics)

        head, selection = fit_selected_head(
            embeddings,
            labelled.targets,
            negatives,
            exclusive=exclusive,
            report=report,
            check_cancelled=ctx.check_cancelled,
        )
        artifacts = ctx.work_dir / "embedding-classifier"
        artifacts.mkdir(parents=True, exist_ok=True)
        save_file({"weight": head.weight, "bias": head.bias}, str(artifacts / HEAD_FILE))
        config = {
            "format_version": FORMAT_VERSION,
            "template": self.name,
            "embedder_id": embedder.id,
            "embedder_version": embedder.version,
            "input_kind": embedder.input_kind,
            "dim": int(embeddings.shape[1]),
            "concepts": list(data.concepts),
            "concepts_mutually_exclusive": exclusive,
            "output_params": {"min_value": params.min_value, "max_concepts": params.max_concepts},
            "training": {
                "num_inputs": len(labelled.rows),
                "num_generic_negatives": 0 if negatives is None else len(negatives),
                "loss": head.loss,
                "iterations": head.iterations,
                "seconds": round(time.monotonic() - started, 3),
                **selection.summary(),
            },
        }
        (artifacts / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        ctx.report(1.0, step=head.iterations, loss=head.loss)
        ctx.log.info(
            "trained %s on %d inputs in %d L-BFGS iterations; L2 chosen by %d-fold "
            "cross-validation: C=%g on %s features",
            self.name,
            len(labelled.rows),
            head.iterations,
            selection.folds,
            selection.chosen.c,
            "standardised" if selection.chosen.standardize else "unstandardised",
        )
        return TrainResult(artifacts)

    def evaluate(
        self, ctx: TrainContext, data: TrainingData, params: BaseModel, artifacts: Path
    ) -> dict[str, Any]:
        """EvalMetrics from k-fold cross-validation (k ≤ 5): each input is scored by a head
        that did not see it, so the head in `artifacts` (fitted to every input) goes unused;
        only its config's record of the chosen regularisation is reported. Each fold
        chooses its own regularisation on its training part (nested cross-validation, so the
        test part never steers the choice); generic negatives join every fold's training,
        never its test. eval_info.params reports the regularisation of the trained model and
        each fold's choice."""
        from modelmill.training.templates.embedding_classifier import labels
        from modelmill.training.templates.embedding_classifier.selection import fit_selected_head

        params = Params.model_validate(params.model_dump())
        exclusive = params.concepts_mutually_exclusive
        embedder, examples, labelled, embeddings, negatives = self._prepare(ctx, data, params)
        splits = labels.folds(labelled.targets)
        scores = np.zeros_like(labelled.targets.targets)
        fold_choices = []
        for train_rows, test_rows in splits:
            ctx.check_cancelled()
            head, selection = fit_selected_head(
                embeddings[train_rows],
                labels.subset(labelled.targets, train_rows),
                negatives,
                exclusive=exclusive,
                check_cancelled=ctx.check_cancelled,
            )
            fold_choices.append(selection.chosen)
            scores[test_rows] = head.scores(embeddings[test_rows])
        trained = _trained_regularization(artifacts)
        outputs = [Output(concepts=list(zip(data.concepts, row, strict=True))) for row in scores]
        return CLASSIFICATION.metrics(
            [examples[row] for row in labelled.rows],
            outputs,
            data.concepts,
            exclusive,
            info={
                "method": "k-fold cross-validation",
                "k_folds": len(splits),
                "base_embed_model": embedder.id,
                "generic_negatives": 0 if negatives is None else len(negatives),
                **trained,
                "fold_regularization_c": [choice.c for choice in fold_choices],
                "fold_standardize_features": [choice.standardize for choice in fold_choices],
            },
        )

    def load(self, artifacts: Path) -> EmbeddingClassifierPredictor:
        from safetensors.numpy import load_file

        from modelmill.training.templates.embedding_classifier.head import Head

        config = json.loads((artifacts / CONFIG_FILE).read_text())
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported embedding-classifier artifacts in {artifacts}")
        tensors = load_file(str(artifacts / HEAD_FILE))
        head = Head(tensors["weight"], tensors["bias"], config["concepts_mutually_exclusive"])
        return EmbeddingClassifierPredictor(config, head)

    def export(self, artifacts: Path, out_dir: Path) -> Path:
        """A zip of the head as ONNX (input "embedding" [n, dim] → output "scores" [n, k]),
        its config and its concepts; the base embedder is named in the config."""
        import torch
        from safetensors.torch import load_file

        config = json.loads((artifacts / CONFIG_FILE).read_text())
        tensors = load_file(str(artifacts / HEAD_FILE))
        linear = torch.nn.Linear(config["dim"], len(config["concepts"]))
        linear.load_state_dict(tensors)
        activation = (
            torch.nn.Softmax(dim=1)
            if config["concepts_mutually_exclusive"]
            else (torch.nn.Sigmoid())
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        onnx_path = out_dir / "head.onnx"
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated but needs no onnxscript, which we lack.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                torch.nn.Sequential(linear, activation).eval(),
                (torch.zeros(1, config["dim"]),),
                str(onnx_path),
                input_names=["embedding"],
                output_names=["scores"],
                dynamic_axes={"embedding": {0: "batch"}, "scores": {0: "batch"}},
                dynamo=False,
            )
        bundle = out_dir / EXPORT_NAME
        with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(onnx_path, "head.onnx")
            archive.writestr(CONFIG_FILE, json.dumps(config, indent=2))
            archive.writestr("concepts.json", json.dumps(config["concepts"]))
        onnx_path.unlink()
        return bundle


EMBEDDING_CLASSIFIER = EmbeddingClassifier()
