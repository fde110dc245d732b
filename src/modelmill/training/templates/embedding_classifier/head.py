"""The classifier head: one linear layer over frozen embeddings, fitted full-batch with L-BFGS
(sigmoid per concept, or softmax when concepts are mutually exclusive), and its scoring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

# L2 penalty as in scikit-learn's LogisticRegression: sum of losses + |W|^2 / (2 C), so the
# same C means the same model; we minimise the mean loss, i.e. divide the penalty by n.
REGULARIZATION_C = 1.0
MAX_ITERATIONS = 500
ITERATIONS_PER_REPORT = 25
GRADIENT_TOLERANCE = 1e-5
LOSS_CHANGE_TOLERANCE = 1e-7
LBFGS_HISTORY = 20
_STD_FLOOR = 1e-6


@dataclass(frozen=True)
class HeadTargets:
    """What the head learns from: per-row targets, which cells count, and row weights.

    Sigmoid mode: `targets` are 0/1 per concept and `mask` marks labelled cells.
    Softmax mode: each `targets` row is a distribution over concepts; `mask` is all ones.
    """

    targets: np.ndarray  # (n, k) float32
    mask: np.ndarray  # (n, k) float32
    weights: np.ndarray  # (n,) float32


@dataclass(frozen=True)
class Head:
    """scores = sigmoid or softmax(embeddings @ weight.T + bias)."""

    weight: np.ndarray  # (k, d) float32
    bias: np.ndarray  # (k,) float32
    exclusive: bool
    loss: float = 0.0
    iterations: int = 0

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        logits = torch.from_numpy(np.asarray(embeddings, np.float32)) @ torch.from_numpy(
            self.weight
        ).T + torch.from_numpy(self.bias)
        activated = torch.softmax(logits, dim=1) if self.exclusive else torch.sigmoid(logits)
        return activated.numpy()


def _loss(logits: torch.Tensor, tensors: dict[str, torch.Tensor], exclusive: bool) -> torch.Tensor:
    if exclusive:
        per_row = torch.nn.functional.cross_entropy(logits, tensors["targets"], reduction="none")
    else:
        per_cell = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, tensors["targets"], reduction="none"
        )
        per_row = (per_cell * tensors["mask"]).sum(dim=1)
    return (per_row * tensors["weights"]).sum() / tensors["weights"].sum()


def fit_head(
    embeddings: np.ndarray,
    targets: HeadTargets,
    *,
    exclusive: bool,
    regularization_c: float = REGULARIZATION_C,
    max_iterations: int = MAX_ITERATIONS,
    report: Callable[[int, float], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> Head:
    """Fits a linear head full-batch with L-BFGS; deterministic for the same inputs.

    Features are standardised for a well-conditioned problem (and the penalty acts on the
    standardised weights, like scikit-learn on scaled features); the scaling is folded back
    into the returned weights, so the head applies to raw embeddings.
    """
    features = torch.from_numpy(np.asarray(embeddings, np.float32))
    mean = features.mean(dim=0)
    std = features.std(dim=0).clamp(min=_STD_FLOOR)
    scaled = (features - mean) / std
    tensors = {
        "targets": torch.from_numpy(targets.targets.astype(np.float32)),
        "mask": torch.from_numpy(targets.mask.astype(np.float32)),
        "weights": torch.from_numpy(targets.weights.astype(np.float32)),
    }
    num_concepts = targets.targets.shape[1]
    weight = torch.zeros(num_concepts, scaled.shape[1], requires_grad=True)
    bias = torch.zeros(num_concepts, requires_grad=True)
    penalty = 1.0 / (2.0 * regularization_c * float(tensors["weights"].sum()))
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=ITERATIONS_PER_REPORT,
        history_size=LBFGS_HISTORY,
        tolerance_grad=GRADIENT_TOLERANCE,
        tolerance_change=LOSS_CHANGE_TOLERANCE,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        logits = scaled @ weight.T + bias
        return _loss(logits, tensors, exclusive) + penalty * weight.pow(2).sum()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    loss_value = float("inf")
    iterations = 0
    while iterations < max_iterations:
        if check_cancelled is not None:
            check_cancelled()
        previous = loss_value
        optimizer.step(closure)
        with torch.no_grad():  # step() answers the loss before the step; we want the one after
            loss_value = float(objective())
        done = optimizer.state[weight]["n_iter"]
        advanced = done - iterations
        iterations = done
        if report is not None:
            report(iterations, loss_value)
        # L-BFGS stops a step early when it has converged; so does a flat loss between steps.
        if advanced < ITERATIONS_PER_REPORT or abs(previous - loss_value) < LOSS_CHANGE_TOLERANCE:
            break

    with torch.no_grad():
        raw_weight = weight / std
        raw_bias = bias - raw_weight @ mean
    return Head(
        weight=raw_weight.numpy().astype(np.float32),
        bias=raw_bias.numpy().astype(np.float32),
        exclusive=exclusive,
        loss=loss_value,
        iterations=iterations,
    )
