"""PatchCore (Roth et al., 2022): every normal image's patch features, thinned by greedy coreset
selection into a memory bank; a patch's anomaly score is its distance to the nearest bank
feature (faiss), an image's the largest of its patches'.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

STAGES = ("stride8", "stride16")
PROGRESS_EVERY = 256  # coreset picks between progress and cancel checks


def coreset_size(patches: int, fraction: float, cap: int) -> int:
    return max(1, min(patches, cap, math.ceil(patches * fraction)))


def greedy_coreset(
    features: torch.Tensor,
    size: int,
    seed: int,
    check: Callable[[float], bool] = lambda progress: True,
) -> torch.Tensor:
    """Indices of `size` rows of `features` (P, C) chosen greedily, each the row farthest from
    those already chosen (k-center). Distances are kept as one vector updated with one
    matrix–vector product per pick: ||x - c||² = ||x||² - 2 x·c + ||c||², never a P×P matrix.
    `check(progress)` runs every few picks; False stops early with the picks so far (the time
    cap: a smaller bank, still a coreset)."""
    with torch.no_grad():
        norms = (features * features).sum(dim=1)
        generator = torch.Generator().manual_seed(seed)
        first = int(torch.randint(len(features), (1,), generator=generator))
        chosen = [first]
        nearest = (norms - 2 * features @ features[first] + norms[first]).clamp_(min=0)
        for pick in range(1, size):
            if pick % PROGRESS_EVERY == 0 and not check(pick / size):
                break
            index = int(nearest.argmax())
            chosen.append(index)
            distance = (norms - 2 * features @ features[index] + norms[index]).clamp_(min=0)
            torch.minimum(nearest, distance, out=nearest)
        return torch.tensor(chosen, dtype=torch.long)


def patch_rows(features: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) → (N·h·w, C), positions in row-major order per image."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def fit_bank(
    features: torch.Tensor,
    fraction: float,
    cap: int,
    seed: int,
    check: Callable[[float], bool] = lambda progress: True,
) -> dict[str, torch.Tensor]:
    rows = patch_rows(features).float().contiguous()
    size = coreset_size(len(rows), fraction, cap)
    if size >= len(rows):
        return {"bank": rows.clone()}
    return {"bank": rows[greedy_coreset(rows, size, seed, check)].contiguous()}


class BankSearch:
    """Nearest bank feature per patch, with faiss (exact L2)."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        import faiss

        bank = np.ascontiguousarray(state["bank"].float().cpu().numpy())
        self.index = faiss.IndexFlatL2(bank.shape[1])
        self.index.add(bank)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) → (N, h, w) distances to the nearest bank feature."""
        count, _, height, width = features.shape
        queries = np.ascontiguousarray(patch_rows(features).float().cpu().numpy())
        squared, _ = self.index.search(queries, 1)
        distances = np.sqrt(np.maximum(squared[:, 0], 0.0))
        return torch.from_numpy(distances).view(count, height, width)
