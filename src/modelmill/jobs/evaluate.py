"""The evaluation job: predict on a ground-truth dataset version and score the predictions with
the model type's task metrics (the same function that evaluates a version right after training).
"""

from __future__ import annotations

import logging

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.services import Env
from modelmill.services.datasets import load_snapshot
from modelmill.services.examples import from_snapshot
from modelmill.services.predictions import PredictorCache, inference_params, input_kinds
from modelmill.store.tables import DatasetVersion, Evaluation, Job, Model, ModelVersion
from modelmill.training.contract import Output, predict_all
from modelmill.training.registry import task_of

PREDICT_BATCH = 64


def run_evaluation(env: Env, job: Job, owner: str, log: logging.Logger) -> None:
    with env.db.session() as session:
        evaluation = session.get(Evaluation, job.payload["evaluation_pk"])
        assert evaluation is not None
        evaluation.status_code = codes.MODEL_EVALUATING
        version = session.get(ModelVersion, evaluation.model_version_pk)
        model = session.get(Model, version.model_pk)  # type: ignore[union-attr]
        dataset_version = session.get(DatasetVersion, evaluation.dataset_version_pk)
    assert version is not None and model is not None and dataset_version is not None
    task = task_of(model.model_type_id)
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
    examples = [e for e in examples if task.relevant(e, concepts)]
    if not examples:
        with env.db.session() as session:
            row = session.get(Evaluation, evaluation.pk)
            row.status_code = codes.MODEL_EVALUATION_NEED_LABELS  # type: ignore[union-attr]
            row.status_description = (  # type: ignore[union-attr]
                "No input of the ground-truth dataset version is labelled for this model "
                f"(concepts {', '.join(concepts) or 'none'})."
            )
        return
    predictor = PredictorCache(env).get(model, version)
    params = {**inference_params(version, {}, {}), **predict_all(concepts)}
    outputs: list[Output] = []
    for start in range(0, len(examples), PREDICT_BATCH):
        outputs += predictor.predict(examples[start : start + PREDICT_BATCH], params)
        log.info("predicted %d of %d", len(outputs), len(examples))
    metrics = task.metrics(examples, outputs, concepts, exclusive)
    with env.db.session() as session:
        row = session.get(Evaluation, evaluation.pk)
        assert row is not None
        row.metrics = metrics
        row.status_code = codes.MODEL_EVALUATED
        row.status_description = f"Evaluated on {len(examples)} labelled inputs"
