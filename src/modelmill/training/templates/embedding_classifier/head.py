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
    regularization: Regularization | None = None  # what it was fitted with; None when loaded

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


@dataclass(frozen=True)
class Regularization:
    """The L2 setting of a fit: `c` as in scikit-learn (larger is weaker) on the features the
    penalty sees. standardize=True scales each feature to unit variance, so every direction is
    penalised alike; False scales all features by one factor (average unit variance), keeping
    the embedding's own geometry, in which strong directions cost less than weak ones."""

    c: float = REGULARIZATION_C
    standardize: bool = True


DEFAULT_REGULARIZATION = Regularization()


@dataclass(frozen=True)
class Scaling:
    """Centring and scale of the features, learned on a fit's training rows only."""

    mean: torch.Tensor  # (d,)
    scale: torch.Tensor  # (d,), or (1,) when one factor scales every feature

    @classmethod
    def of(cls, features: torch.Tensor, standardize: bool) -> Scaling:
        mean = features.mean(dim=0)
        if standardize:
            return cls(mean, features.std(dim=0).clamp(min=_STD_FLOOR))
        average_variance = features.var(dim=0).mean()
        return cls(mean, average_variance.sqrt().clamp(min=_STD_FLOOR).reshape(1))

    def apply(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.scale


@dataclass(frozen=True)
class Problem:
    """One fit's tensors: scaled features, targets, mask, and row weights that sum to 1
    (`total_weight` is their sum before, which sets the penalty's share)."""

    features: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    row_weights: torch.Tensor  # (n, 1)
    total_weight: float

    @classmethod
    def of(cls, embeddings: np.ndarray, targets: HeadTargets, scaling: Scaling) -> Problem:
        features = torch.from_numpy(np.asarray(embeddings, np.float32))
        row_weights = torch.from_numpy(targets.weights.astype(np.float32))
        total_weight = float(row_weights.sum())
        return cls(
            features=scaling.apply(features),
            targets=torch.from_numpy(targets.targets.astype(np.float32)),
            mask=torch.from_numpy(targets.mask.astype(np.float32)),
            row_weights=(row_weights / total_weight)[:, None],
            total_weight=total_weight,
        )

    def loss(self, weight: torch.Tensor, bias: torch.Tensor, exclusive: bool) -> float:
        """The weighted mean loss of these rows under a head, without the penalty."""
        logits = torch.addmm(bias, self.features, weight.T)
        loss, _ = _loss_and_logit_gradient(
            logits, self.targets, self.mask, self.row_weights, exclusive
        )
        return float(loss)


@dataclass
class Solution:
    """Weights on the scaled features, as a solve leaves them (and the next one can start)."""

    weight: torch.Tensor
    bias: torch.Tensor
    loss: float = float("inf")
    iterations: int = 0


@contextmanager
def single_thread():
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
    regularization: Regularization = DEFAULT_REGULARIZATION,
    max_iterations: int = MAX_ITERATIONS,
    report: Callable[[int, float], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> Head:
    """Fits a linear head full-batch with L-BFGS at one regularisation; deterministic for the
    same inputs. The penalty acts on the scaled features (like scikit-learn on scaled
    features); the scaling is folded back into the returned weights, so the head applies to
    raw embeddings. selection.fit_selected_head chooses the regularisation first."""
    with single_thread():
        features = torch.from_numpy(np.asarray(embeddings, np.float32))
        scaling = Scaling.of(features, regularization.standardize)
        problem = Problem.of(embeddings, targets, scaling)
        start = Solution(
            torch.zeros(problem.targets.shape[1], problem.features.shape[1]),
            torch.zeros(problem.targets.shape[1]),
        )
        solution = solve(
            problem,
            regularization.c,
            start,
            exclusive=exclusive,
            max_iterations=max_iterations,
            report=report,
            check_cancelled=check_cancelled,
        )
        raw_weight = solution.weight / scaling.scale
        raw_bias = solution.bias - raw_weight @ scaling.mean
        return Head(
            weight=raw_weight.numpy().astype(np.float32),
            bias=raw_bias.numpy().astype(np.float32),
            exclusive=exclusive,
            loss=solution.loss,
            iterations=solution.iterations,
            regularization=regularization,
        )


def solve(
    problem: Problem,
    regularization_c: float,
    start: Solution,
    *,
    exclusive: bool,
    max_iterations: int = MAX_ITERATIONS,
    check_every: int = ITERATIONS_PER_REPORT,
    min_relative_improvement: float = MIN_RELATIVE_IMPROVEMENT,
    report: Callable[[int, float], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
) -> Solution:
    """Minimises the penalised loss from `start` (zeros, or a nearby solution: a warm start
    along a regularisation path needs a fraction of the iterations). Every `check_every`
    iterations it reports, and stops once they improved the loss by less than
    `min_relative_improvement` of it. Leaves `start` as it was."""
    weight = start.weight.clone()
    bias = start.bias.clone()
    penalty = 1.0 / (2.0 * regularization_c * problem.total_weight)
    features, target, mask, row_weights = (
        problem.features,
        problem.targets,
        problem.mask,
        problem.row_weights,
    )
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=check_every,
        history_size=LBFGS_HISTORY,
        tolerance_grad=GRADIENT_TOLERANCE,
        tolerance_change=LOSS_CHANGE_TOLERANCE,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        logits = torch.addmm(bias, features, weight.T)
        loss, logit_gradient = _loss_and_logit_gradient(
            logits, target, mask, row_weights, exclusive
        )
        weight.grad = logit_gradient.T @ features + 2.0 * penalty * weight
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
        done = optimizer.state[weight].get("n_iter", 0)
        advanced = done - iterations
        iterations = done
        if report is not None:
            report(iterations, loss_value)
        # L-BFGS stops a step early when it has converged; we stop when the loss flattens.
        flattened = previous - loss_value < min_relative_improvement * abs(loss_value)
        if advanced < check_every or flattened:
            break
    return Solution(weight.detach(), bias.detach(), loss_value, iterations)
