"""From labelled examples to what the head learns: targets per concept, the data checks that
stop a training with a Clarifai status, generic-negative enrichment and cross-validation folds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from clarifai_grpc.grpc.api.status import status_code_pb2

from modelmill.training.contract import DataError, Example
from modelmill.training.templates.embedding_classifier.head import HeadTargets

POSITIVE_AT = 0.5  # a concept value above this is a positive label, otherwise a negative one
# Generic negatives together weigh at most this share of the user's inputs, so that a couple of
# thousand of them do not drown sixty labelled inputs; each weighs at most as much as one input.
NEGATIVES_WEIGHT_SHARE = 0.5
MAX_FOLDS = 5
MIN_INPUTS_TO_EVALUATE = 2
SEED = 0
_NO_POSITIVE = -1


@dataclass(frozen=True)
class LabelledSet:
    """The examples a training uses (`rows` index into the given examples) and their targets."""

    rows: list[int]
    targets: HeadTargets


def build_targets(
    examples: Sequence[Example], concepts: Sequence[str], exclusive: bool
) -> LabelledSet:
    """Targets for each example that says something about the concepts.

    Softmax (exclusive): the target is the example's positive concept (shared evenly if it has
    several); examples without a positive cannot be a class and are left out.
    Sigmoid: a concept labelled on the example is a positive or a negative as labelled. An
    unlabelled concept counts as a negative only when the example is positive for another
    concept (a photo labelled "cat" is taken to be no "dog"); otherwise it is left out of that
    concept's loss, since nobody said either way.
    """
    index = {concept: column for column, concept in enumerate(concepts)}
    rows, targets, masks = [], [], []
    for row, example in enumerate(examples):
        target = np.zeros(len(concepts), np.float32)
        labelled = np.zeros(len(concepts), np.float32)
        for concept, value in example.concepts.items():
            if concept in index:
                target[index[concept]] = 1.0 if value > POSITIVE_AT else 0.0
                labelled[index[concept]] = 1.0
        has_positive = target.any()
        if exclusive:
            if not has_positive:
                continue
            target /= target.sum()
            labelled[:] = 1.0
        elif has_positive:
            labelled[:] = 1.0
        if not labelled.any():
            continue
        rows.append(row)
        targets.append(target)
        masks.append(labelled)
    num_concepts = len(concepts)
    return LabelledSet(
        rows,
        HeadTargets(
            targets=np.array(targets, np.float32).reshape(-1, num_concepts),
            mask=np.array(masks, np.float32).reshape(-1, num_concepts),
            weights=np.ones(len(rows), np.float32),
        ),
    )


def check_training_data(
    labelled: LabelledSet, concepts: Sequence[str], exclusive: bool, has_negatives: bool
) -> None:
    """Raises DataError, with the Clarifai status, when these labels cannot make a model."""
    if not concepts:
        raise DataError(
            status_code_pb2.MODEL_TRAINING_NO_DATA, "The model version has no concepts to learn."
        )
    if exclusive and len(concepts) == 1:
        raise DataError(
            status_code_pb2.MODEL_TRAINING_ONE_VS_N_SINGLE_CLASS,
            f"Concepts are mutually exclusive but there is only one ({concepts[0]}): a single "
            "class cannot be told apart from anything. Add another concept or turn off "
            "concepts_mutually_exclusive.",
        )
    if not labelled.rows:
        raise DataError(
            status_code_pb2.MODEL_TRAINING_NO_DATA,
            "No input is labelled with any of the model's concepts.",
        )
    targets, mask = labelled.targets.targets, labelled.targets.mask
    positives = (targets > 0).sum(axis=0)
    missing = [c for c, n in zip(concepts, positives, strict=True) if n == 0]
    if missing:
        raise DataError(
            status_code_pb2.MODEL_TRAINING_NO_POSITIVES,
            f"No input is labelled as a positive for concept(s) {', '.join(missing)}; "
            "each concept needs at least one.",
        )
    if not exclusive and not has_negatives:
        negatives = ((targets == 0) & (mask > 0)).sum(axis=0)
        lonely = [c for c, n in zip(concepts, negatives, strict=True) if n == 0]
        if lonely:
            raise DataError(
                status_code_pb2.MODEL_TRAINING_INSUFFICIENT_DATA,
                f"Concept(s) {', '.join(lonely)} have no negative inputs. Label some inputs as "
                "not that concept, add inputs of other concepts, or set enrich_dataset to "
                "Automatic.",
            )


def with_negatives(
    embeddings: np.ndarray, targets: HeadTargets, negatives: np.ndarray | None, exclusive: bool
) -> tuple[np.ndarray, HeadTargets]:
    """Adds generic negatives as extra rows. Sigmoid: negative for every concept. Softmax: a
    generic input is none of the classes, so its target is uniform over them (outlier exposure,
    Hendrycks et al. 2019): unfamiliar inputs get flat, low scores instead of a confident class.
    """
    if negatives is None or not len(negatives):
        return embeddings, targets
    num_concepts = targets.targets.shape[1]
    fill = 1.0 / num_concepts if exclusive else 0.0
    weight = min(1.0, NEGATIVES_WEIGHT_SHARE * float(targets.weights.sum()) / len(negatives))
    return np.concatenate([embeddings, negatives]), HeadTargets(
        targets=np.concatenate(
            [targets.targets, np.full((len(negatives), num_concepts), fill, np.float32)]
        ),
        mask=np.concatenate([targets.mask, np.ones((len(negatives), num_concepts), np.float32)]),
        weights=np.concatenate([targets.weights, np.full(len(negatives), weight, np.float32)]),
    )


def subset(targets: HeadTargets, rows: np.ndarray) -> HeadTargets:
    return HeadTargets(targets.targets[rows], targets.mask[rows], targets.weights[rows])


def folds(targets: HeadTargets, max_folds: int = MAX_FOLDS) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation splits: up to `max_folds`, stratified by each input's first positive concept
    when every class has enough inputs for it, else plain shuffled folds."""
    from sklearn.model_selection import KFold, StratifiedKFold

    count = len(targets.targets)
    if count < MIN_INPUTS_TO_EVALUATE:
        raise DataError(
            status_code_pb2.MODEL_EVALUATION_NEED_INPUTS,
            f"Cross-validation needs at least {MIN_INPUTS_TO_EVALUATE} labelled inputs.",
        )
    positive = targets.targets > 0
    strata = np.where(positive.any(axis=1), positive.argmax(axis=1), _NO_POSITIVE)
    smallest = min(Counter(strata.tolist()).values())
    placeholder = np.zeros(count)
    if smallest >= 2 and len(set(strata.tolist())) > 1:
        splitter = StratifiedKFold(min(max_folds, smallest), shuffle=True, random_state=SEED)
        return list(splitter.split(placeholder, strata))
    splitter = KFold(min(max_folds, count), shuffle=True, random_state=SEED)
    return list(splitter.split(placeholder))
