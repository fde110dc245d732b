"""The classifier head: one linear layer over frozen embeddings, fitted full-batch with L-BFGS
(sigmoid per concept, or softmax when concepts are mutually exclusive), and its scoring.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

# L2 penalty as in scikit-learn's LogisticRegression: sum of losses + |W|^2 / (2 C), so the
# same C means the same model; we minimise the mean loss, i.e. divide the penalty by n.
REGULARIZATION_C = 1.0
MAX_ITERATIONS = 500
ITERATIONS_PER_REPORT = 25
GRADIENT_TOLERANCE = 1e-4  # largest gradient entry at convergence, scikit-learn's default tol
LOSS_CHANGE_TOLERANCE = 1e-7
# Stop once ITERATIONS_PER_REPORT iterations improve the loss by less than this share: later
# digits no longer change predictions (on digits with generic negatives, accuracy is flat from
# ~100 iterations while the loss creeps on for 300; bench/digits_transfer.py).
MIN_RELATIVE_IMPROVEMENT = 1e-3
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


def _loss_and_logit_gradient(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    row_weights: torch.Tensor,
    exclusive: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted mean loss and its gradient with respect to the logits, in closed form:
    two passes over (n, k) tensors instead of autograd's dozen."""
    if exclusive:
        log_norm = torch.logsumexp(logits, dim=1, keepdim=True)
        loss = ((log_norm - logits) * targets * row_weights).sum()
        gradient = (torch.exp(logits - log_norm) - targets) * row_weights
    else:
        per_cell = torch.nn.functional.softplus(logits) - targets * logits
        loss = (per_cell * mask * row_weights).sum()
        gradient = (torch.sigmoid(logits) - targets) * mask * row_weights
    return loss, gradient


@contextmanager
def _single_thread():
    """The fit's tensors are skinny (n x k), so thread-pool barriers cost more than they save:
    on the 2-core CI machine one thread fits several times faster (bench/RESULTS.md, transfer
    learning). The setting is restored afterwards; nothing changes at import."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
    with _single_thread():
        return _fit(
            embeddings,
            targets,
            exclusive,
            regularization_c,
            max_iterations,
            report,
            check_cancelled,
        )


def _fit(
    embeddings: np.ndarray,
    targets: HeadTargets,
    exclusive: bool,
    regularization_c: float,
    max_iterations: int,
    report: Callable[[int, float], None] | None,
    check_cancelled: Callable[[], None] | None,
) -> Head:
    features = torch.from_numpy(np.asarray(embeddings, np.float32))
    mean = features.mean(dim=0)
    std = features.std(dim=0).clamp(min=_STD_FLOOR)
    scaled = (features - mean) / std
    target = torch.from_numpy(targets.targets.astype(np.float32))
    mask = torch.from_numpy(targets.mask.astype(np.float32))
    row_weights = torch.from_numpy(targets.weights.astype(np.float32))
    total_weight = float(row_weights.sum())
    row_weights = (row_weights / total_weight)[:, None]
    penalty = 1.0 / (2.0 * regularization_c * total_weight)
    weight = torch.zeros(target.shape[1], scaled.shape[1])
    bias = torch.zeros(target.shape[1])
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=ITERATIONS_PER_REPORT,
        history_size=LBFGS_HISTORY,
        tolerance_grad=GRADIENT_TOLERANCE,
        tolerance_change=LOSS_CHANGE_TOLERANCE,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        logits = torch.addmm(bias, scaled, weight.T)
        loss, logit_gradient = _loss_and_logit_gradient(
            logits, target, mask, row_weights, exclusive
        )
        weight.grad = logit_gradient.T @ scaled + 2.0 * penalty * weight
        bias.grad = logit_gradient.sum(dim=0)
        return loss + penalty * weight.pow(2).sum()

    loss_value = float("inf")
    iterations = 0
    while iterations < max_iterations:
        if check_cancelled is not None:
            check_cancelled()
        previous = loss_value
        optimizer.step(closure)
        loss_value = float(closure())  # step() answers the loss before the step, not after
        done = optimizer.state[weight]["n_iter"]
        advanced = done - iterations
        iterations = done
        if report is not None:
            report(iterations, loss_value)
        # L-BFGS stops a step early when it has converged; we stop when the loss flattens.
        if (
            advanced < ITERATIONS_PER_REPORT
            or previous - loss_value < MIN_RELATIVE_IMPROVEMENT * abs(loss_value)
        ):
            break

    raw_weight = weight / std
    raw_bias = bias - raw_weight @ mean
    return Head(
        weight=raw_weight.numpy().astype(np.float32),
        bias=raw_bias.numpy().astype(np.float32),
        exclusive=exclusive,
        loss=loss_value,
        iterations=iterations,
    )
