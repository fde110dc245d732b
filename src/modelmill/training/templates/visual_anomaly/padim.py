"""PaDiM (Defard et al., 2020): at each position of the feature grid, a Gaussian of the normal
images' features (a random subset of channels); a patch's anomaly score is its Mahalanobis
distance to its position's Gaussian, an image's the largest of its patches'.
"""

from __future__ import annotations

import torch

STAGES = ("stride4", "stride8", "stride16")


def channel_subset(channels: int, dims: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(channels, generator=generator)[: min(dims, channels)].sort().values


def fit_gaussians(
    features: torch.Tensor, dims: int, regularisation: float, seed: int
) -> dict[str, torch.Tensor]:
    """Per-position mean (P, d) and inverse covariance (P, d, d) of (N, C, h, w) features."""
    with torch.no_grad():
        channels = channel_subset(features.shape[1], dims, seed)
        chosen = features[
            :, channels
        ].double()  # float64: covariances of few images are near singular
        count, d, height, width = chosen.shape
        rows = chosen.permute(2, 3, 0, 1).reshape(height * width, count, d)
        mean = rows.mean(dim=1)
        centred = rows - mean[:, None, :]
        covariance = centred.transpose(1, 2) @ centred / max(1, count - 1)
        covariance += regularisation * torch.eye(d, dtype=covariance.dtype)
        inverse = torch.linalg.inv(covariance)
        return {
            "channels": channels,
            "mean": mean.float(),
            "inverse_covariance": inverse.float(),
            "grid": torch.tensor([height, width]),
        }


class GaussianScores:
    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.channels = state["channels"].long()
        self.mean = state["mean"].float()
        self.inverse = state["inverse_covariance"].float()

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) → (N, h, w) Mahalanobis distances."""
        with torch.no_grad():
            chosen = features[:, self.channels].float().cpu()
            count, d, height, width = chosen.shape
            rows = chosen.permute(2, 3, 0, 1).reshape(height * width, count, d)
            centred = rows - self.mean[:, None, :]
            squared = torch.einsum("pnd,pde,pne->pn", centred, self.inverse, centred)
            distances = squared.clamp(min=0).sqrt()
            return distances.permute(1, 0).reshape(count, height, width)
