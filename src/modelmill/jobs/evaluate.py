"""The evaluation job: predict on a ground-truth dataset version and compute EvalMetrics."""

from __future__ import annotations

import logging

import numpy as np
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.services import Env
from modelmill.services.datasets import load_snapshot
from modelmill.services.examples import from_snapshot
from modelmill.services.predictions import (
    PredictorCache,
    inference_params,
    input_kinds,
)
from modelmill.store.tables import DatasetVersion, Evaluation, Job, Model, ModelVersion
from modelmill.training.metrics import classification_metrics

PREDICT_BATCH = 64


def truth_matrix(examples, concepts: list[str], exclusive: bool) -> np.ndarray:  # type: ignore[no-untyped-def]
    """1 / 0 per (input, concept); NaN where an input says nothing about a concept. An input
    positive for some concept counts as negative for the concepts it does not mention."""
    truth = np.full((len(examples), len(concepts)), np.nan)
    for row, example in enumerate(examples):
        labels = dict(example.concepts)
        for region in example.regions:
            labels.update({c: max(v, labels.get(c, 0.0)) for c, v in region.concepts.items()})
        has_positive = any(v > 0 for v in labels.values())
        for column, concept in enumerate(concepts):
            if concept in labels:
                truth[row, column] = labels[concept]
            elif has_positive:
                truth[row, column] = 0.0
    return truth


def run_evaluation(env: Env, job: Job, owner: str, log: logging.Logger) -> None:
    with env.db.session() as session:
        evaluation = session.get(Evaluation, job.payload["evaluation_pk"])
        assert evaluation is not None
        evaluation.status_code = codes.MODEL_EVALUATING
        version = session.get(ModelVersion, evaluation.model_version_pk)
        model = session.get(Model, version.model_pk)  # type: ignore[union-attr]
        dataset_version = session.get(DatasetVersion, evaluation.dataset_version_pk)
    assert version is not None and model is not None and dataset_version is not None
    concepts = [c["id"] for c in (version.output_info.get("data") or {}).get("concepts", [])]
    examples = [from_snapshot(env, item, concepts) for item in load_snapshot(env, dataset_version)]
    kinds = input_kinds(version)
    if kinds and any(e.kind not in kinds for e in examples):
        log.warning(
            "skipping %d inputs that are not %s",
            sum(e.kind not in kinds for e in examples),
            " or ".join(sorted(kinds)),
        )
        examples = [e for e in examples if e.kind in kinds]
    exclusive = bool(
        (version.output_info.get("output_config") or {}).get("concepts_mutually_exclusive")
    )
    truth = truth_matrix(examples, concepts, exclusive)
    labelled = ~np.all(np.isnan(truth), axis=1)
    examples = [e for e, keep in zip(examples, labelled, strict=True) if keep]
    if not examples:
        with env.db.session() as session:
            row = session.get(Evaluation, evaluation.pk)
            row.status_code = codes.MODEL_EVALUATION_NEED_LABELS  # type: ignore[union-attr]
            row.status_description = (  # type: ignore[union-attr]
                "No input of the ground-truth dataset version is labelled with this model's "
                "concepts."
            )
        return
    predictor = PredictorCache(env).get(model, version)
    params = {**inference_params(version, {}, {}), "min_value": 0.0, "max_concepts": len(concepts)}
    scores = np.zeros((len(examples), len(concepts)))
    index = {c: i for i, c in enumerate(concepts)}
    for start in range(0, len(examples), PREDICT_BATCH):
        batch = examples[start : start + PREDICT_BATCH]
        for row, output in enumerate(predictor.predict(batch, params)):
            for concept, value in output.concepts:
                scores[start + row, index[concept]] = value
        log.info("predicted %d of %d", min(start + PREDICT_BATCH, len(examples)), len(examples))
    metrics = classification_metrics(
        concepts,
        truth[labelled],
        scores,
        [e.input_id for e in examples],
        mutually_exclusive=exclusive,
    )
    with env.db.session() as session:
        row = session.get(Evaluation, evaluation.pk)
        assert row is not None
        row.metrics = metrics
        row.status_code = codes.MODEL_EVALUATED
        row.status_description = f"Evaluated on {len(examples)} labelled inputs"
