"""Choosing the head's L2 strength, and whether to standardise the features, by inner
cross-validation on the training inputs alone; then fitting the head with that choice.

One fixed strength cannot suit every set: at C = 1 on standardised features the head over-fit
1,500 tweets in 384-d MiniLM space (0.658 held-out accuracy, 0.702 with the chosen C = 0.003;
bench/head_vs_logreg.py), while easy image classes want a weak penalty. For each scaling the C
grid is walked from the strongest penalty to the weakest, every fold warm-starting from its
previous solution (a few L-BFGS iterations each), and the walk stops once the held-out loss
has got worse PATIENCE times in a row. The choice is the candidate with the lowest held-out
loss over all folds.

Generic negatives take part like user inputs: split across the folds, trained on in the others
and scored where held out (same weighting as in training), so a concept with positives only is
still scored against something.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from modelmill.training.templates.embedding_classifier import labels
from modelmill.training.templates.embedding_classifier.head import (
    DEFAULT_REGULARIZATION,
    Head,
    HeadTargets,
    Problem,
    Regularization,
    Scaling,
    Solution,
    fit_head,
    single_thread,
    solve,
)

# Candidate C per half decade, strongest penalty first. Below 1e-3 every head is nearly
# constant; above 1e2 it is nearly unregularised and L-BFGS needs hundreds of iterations.
C_GRID = tuple(float(c) for c in np.logspace(-3, 2, 11))
SCALINGS = (True, False)  # standardise each feature, or one scale for all
# Five folds, like LogisticRegressionCV. Three took 40-60 % of the time but chose a weaker
# penalty on the tweets and lost 1.1 points there (0.691 vs 0.702; bench/RESULTS.md).
INNER_FOLDS = 5
PATIENCE = 2  # worse held-out losses in a row that end a walk along the grid
# Fewer labelled inputs than this cannot be split into meaningful folds: the head keeps the
# default strength (DEFAULT_REGULARIZATION) and says so.
MIN_INPUTS_TO_SELECT = 6
# Path fits stop earlier than the final fit: the held-out loss only ranks candidates, and a
# warm start is near its optimum, so the loss is checked every few iterations (the final fit
# checks every 25, which alone made the strong-penalty end of the path cost ~40 iterations a
# fold on 1280-d image embeddings, most of the selection's time).
# The choice sees at most this many generic negatives per labelled input, a seeded sample: they
# weigh half of the inputs together however many there are (labels.with_negatives), so a sample
# keeps their say while the thousands an embedder ships no longer dominate each fold's cost.
SELECTION_NEGATIVES_PER_INPUT = 1
PATH_MAX_ITERATIONS = 200
PATH_CHECK_EVERY = 5
PATH_MIN_RELATIVE_IMPROVEMENT = 1e-4


@dataclass(frozen=True)
class Candidate:
    regularization: Regularization
    validation_loss: float  # weighted mean over every held-out row of every fold


@dataclass(frozen=True)
class Selection:
    """What the inner cross-validation chose and how: a `folds` of 0 means it did not run."""

    chosen: Regularization
    folds: int
    candidates: list[Candidate] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        """The JSON-able record kept in the model's config and reported by its evaluation."""
        return {
            "regularization_c": self.chosen.c,
            "standardize_features": self.chosen.standardize,
            "selection_folds": self.folds,
            "selection_candidates": len(self.candidates),
            "selection_seconds": round(self.seconds, 3),
        }


@dataclass
class _Fold:
    train: tuple[np.ndarray, HeadTargets]
    held_out: tuple[np.ndarray, HeadTargets]


def _folds(
    embeddings: np.ndarray, targets: HeadTargets, negatives: np.ndarray | None, exclusive: bool
) -> list[_Fold]:
    splits = labels.folds(targets, INNER_FOLDS)
    negative_fold = np.zeros(0, int)
    if negatives is not None and len(negatives):
        rng = np.random.default_rng(labels.SEED)
        negative_fold = rng.permutation(len(negatives)) % len(splits)
    folds = []
    for number, (train_rows, test_rows) in enumerate(splits):
        held_negatives = train_negatives = None
        if len(negative_fold):
            held_negatives = negatives[negative_fold == number]
            train_negatives = negatives[negative_fold != number]
        folds.append(
            _Fold(
                train=labels.with_negatives(
                    embeddings[train_rows],
                    labels.subset(targets, train_rows),
                    train_negatives,
                    exclusive,
                ),
                held_out=labels.with_negatives(
                    embeddings[test_rows],
                    labels.subset(targets, test_rows),
                    held_negatives,
                    exclusive,
                ),
            )
        )
    return folds


def select_regularization(
    embeddings: np.ndarray,
    targets: HeadTargets,
    negatives: np.ndarray | None,
    *,
    exclusive: bool,
    report: Callable[[float], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> Selection:
    """The regularisation with the lowest held-out loss in k-fold CV over C_GRID x SCALINGS.
    `report` gets the share of the grid walked (an upper bound on the work left)."""
    started = time.perf_counter()
    if len(targets.targets) < MIN_INPUTS_TO_SELECT:
        return Selection(DEFAULT_REGULARIZATION, folds=0)
    room = SELECTION_NEGATIVES_PER_INPUT * len(targets.targets)
    if negatives is not None and len(negatives) > room:
        rng = np.random.default_rng(labels.SEED)
        negatives = negatives[np.sort(rng.choice(len(negatives), room, replace=False))]
    folds = _folds(embeddings, targets, negatives, exclusive)
    candidates: list[Candidate] = []
    total_points = len(SCALINGS) * len(C_GRID)
    walked = 0
    with single_thread():
        for standardize in SCALINGS:
            problems = []
            for fold in folds:
                train_features = torch.from_numpy(np.asarray(fold.train[0], np.float32))
                scaling = Scaling.of(train_features, standardize)
                problems.append(
                    (Problem.of(*fold.train, scaling), Problem.of(*fold.held_out, scaling))
                )
            starts = [
                Solution(
                    torch.zeros(train.targets.shape[1], train.features.shape[1]),
                    torch.zeros(train.targets.shape[1]),
                )
                for train, _ in problems
            ]
            best, worse = math.inf, 0
            for number, c in enumerate(C_GRID):
                held_out_loss, held_out_weight = 0.0, 0.0
                for index, (train, held_out) in enumerate(problems):
                    starts[index] = solve(
                        train,
                        c,
                        starts[index],
                        exclusive=exclusive,
                        max_iterations=PATH_MAX_ITERATIONS,
                        check_every=PATH_CHECK_EVERY,
                        min_relative_improvement=PATH_MIN_RELATIVE_IMPROVEMENT,
                        check_cancelled=check_cancelled,
                    )
                    loss = held_out.loss(starts[index].weight, starts[index].bias, exclusive)
                    held_out_loss += loss * held_out.total_weight
                    held_out_weight += held_out.total_weight
                mean_loss = held_out_loss / held_out_weight
                candidates.append(Candidate(Regularization(c, standardize), mean_loss))
                if report is not None:
                    report((walked + number + 1) / total_points)
                if mean_loss < best:
                    best, worse = mean_loss, 0
                else:
                    worse += 1
                    if worse >= PATIENCE:
                        break
            walked += len(C_GRID)
    chosen = min(candidates, key=lambda candidate: candidate.validation_loss)
    return Selection(chosen.regularization, len(folds), candidates, time.perf_counter() - started)


# Share of a selected fit's progress spent choosing; the final fit takes the rest.
SELECTION_PROGRESS = 0.8


def fit_selected_head(
    embeddings: np.ndarray,
    targets: HeadTargets,
    negatives: np.ndarray | None,
    *,
    exclusive: bool,
    report: Callable[[float, int, float], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> tuple[Head, Selection]:
    """Chooses the regularisation on these inputs, then fits the head to all of them (plus
    the generic negatives, if any) with it. `report` gets (share done, iteration, loss)."""
    from modelmill.training.templates.embedding_classifier.head import MAX_ITERATIONS

    def report_selection(share: float) -> None:
        if report is not None:
            report(SELECTION_PROGRESS * share, 0, math.nan)

    def report_fit(iteration: int, loss: float) -> None:
        if report is not None:
            share = min(1.0, iteration / MAX_ITERATIONS)
            report(SELECTION_PROGRESS + (1 - SELECTION_PROGRESS) * share, iteration, loss)

    selection = select_regularization(
        embeddings,
        targets,
        negatives,
        exclusive=exclusive,
        report=report_selection,
        check_cancelled=check_cancelled,
    )
    features, all_targets = labels.with_negatives(embeddings, targets, negatives, exclusive)
    head = fit_head(
        features,
        all_targets,
        exclusive=exclusive,
        regularization=selection.chosen,
        report=report_fit,
        check_cancelled=check_cancelled,
    )
    return head, selection
