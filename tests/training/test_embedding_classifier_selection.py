"""The head's regularisation chosen by inner cross-validation: it follows the data and it is
what the fit uses (the template's reports of it: test_embedding_classifier.py)."""

from __future__ import annotations

import numpy as np
import pytest

from modelmill.training.templates.embedding_classifier.head import (
    DEFAULT_REGULARIZATION,
    HeadTargets,
    fit_head,
)
from modelmill.training.templates.embedding_classifier.selection import (
    C_GRID,
    INNER_FOLDS,
    MIN_INPUTS_TO_SELECT,
    fit_selected_head,
    select_regularization,
)

DIM, CLASSES = 384, 4
SEED = 0


def clustered_set(count: int, spread: float, label_noise: float, seed: int = SEED):
    """Unit vectors around one centre per class (like sentence embeddings), with a share of
    labels replaced by random ones."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLASSES, DIM))
    labels = np.arange(count) % CLASSES
    points = centres[labels] * spread + rng.normal(size=(count, DIM))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    noisy = rng.random(count) < label_noise
    labels = np.where(noisy, rng.integers(0, CLASSES, count), labels)
    return points.astype(np.float32), labels


def one_hot(labels: np.ndarray) -> HeadTargets:
    targets = np.eye(CLASSES, dtype=np.float32)[labels]
    return HeadTargets(targets, np.ones_like(targets), np.ones(len(labels), np.float32))


def test_a_tiny_noisy_set_gets_a_stronger_penalty_than_a_large_clean_one():
    clean_points, clean_labels = clustered_set(800, spread=0.5, label_noise=0.0)
    noisy_points, noisy_labels = clustered_set(40, spread=0.15, label_noise=0.4)
    clean = select_regularization(clean_points, one_hot(clean_labels), None, exclusive=True)
    noisy = select_regularization(noisy_points, one_hot(noisy_labels), None, exclusive=True)
    assert clean.folds == noisy.folds == INNER_FOLDS
    assert noisy.chosen.c < clean.chosen.c
    # Larger C (weaker penalty) is also what the held-out loss says for the clean set.
    assert {c.regularization.c for c in clean.candidates} <= set(C_GRID)
    best = min(clean.candidates, key=lambda candidate: candidate.validation_loss)
    assert best.regularization == clean.chosen


@pytest.mark.parametrize("exclusive", [True, False])
def test_the_chosen_penalty_beats_the_old_fixed_one_where_that_over_fits(exclusive):
    points, labels = clustered_set(600, spread=0.12, label_noise=0.1)
    train, test = slice(0, 300), slice(300, None)
    targets = one_hot(labels[train])
    head, selection = fit_selected_head(points[train], targets, None, exclusive=exclusive)
    fixed = fit_head(points[train], targets, exclusive=exclusive)
    assert head.regularization == selection.chosen
    assert selection.chosen.c < DEFAULT_REGULARIZATION.c

    def accuracy(model) -> float:
        return float(np.mean(model.scores(points[test]).argmax(axis=1) == labels[test]))

    assert accuracy(head) > accuracy(fixed)


def test_generic_negatives_take_part_when_a_concept_has_only_positives():
    rng = np.random.default_rng(SEED)
    centre = rng.normal(size=DIM)
    positives = centre * 0.3 + rng.normal(size=(12, DIM))
    negatives = rng.normal(size=(200, DIM))
    positives /= np.linalg.norm(positives, axis=1, keepdims=True)
    negatives /= np.linalg.norm(negatives, axis=1, keepdims=True)
    targets = HeadTargets(
        np.ones((12, 1), np.float32), np.ones((12, 1), np.float32), np.ones(12, np.float32)
    )
    head, selection = fit_selected_head(
        positives.astype(np.float32), targets, negatives.astype(np.float32), exclusive=False
    )
    # Scored against held-out negatives too, the loss does not reward "everything is positive".
    assert selection.folds > 0 and all(np.isfinite(c.validation_loss) for c in selection.candidates)
    fresh_positive = (centre * 0.3 + rng.normal(size=DIM))[None]
    fresh_negative = rng.normal(size=(1, DIM))
    fresh = np.concatenate([fresh_positive, fresh_negative]).astype(np.float32)
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    positive_score, negative_score = head.scores(fresh)[:, 0]
    assert positive_score > 0.5 > negative_score


def test_too_few_inputs_keep_the_default_penalty():
    points, labels = clustered_set(MIN_INPUTS_TO_SELECT - 1, spread=0.5, label_noise=0.0)
    selection = select_regularization(points, one_hot(labels), None, exclusive=True)
    assert selection.folds == 0 and selection.chosen == DEFAULT_REGULARIZATION
