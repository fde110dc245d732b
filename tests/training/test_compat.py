"""torchvision imports (and its nms works) even when its compiled ops do not load."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from modelmill.training.compat import ensure_torchvision, nms_reference, roi_align_reference


def test_torchvision_nms_keeps_the_best_of_overlapping_boxes():
    ensure_torchvision()
    import torchvision

    boxes = torch.tensor(
        [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9.0]], dtype=torch.float32
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # Box 3 wins; box 0 (IoU 0.9) and box 1 (IoU ≈ 0.62) overlap it; box 2 stands alone.
    assert torchvision.ops.nms(boxes, scores, 0.5).tolist() == [3, 2]
    # With a high threshold only near-duplicates go.
    assert torchvision.ops.nms(boxes, scores, 0.85).tolist() == [3, 1, 2]
    # batched_nms only suppresses within a class.
    kept = torchvision.ops.batched_nms(boxes, scores, torch.tensor([0, 1, 0, 0]), 0.5)
    assert kept.tolist() == [3, 1, 2]


def test_reference_nms_handles_no_boxes():
    assert nms_reference(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


def test_reference_nms_matches_a_brute_force_greedy_search():
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(40, 2, generator=generator) * 50
    boxes = torch.cat([corners, corners + 5 + torch.rand(40, 2, generator=generator) * 20], 1)
    scores = torch.rand(40, generator=generator)

    def iou(a, b):
        width = (min(a[2], b[2]) - max(a[0], b[0])).clamp(min=0)
        height = (min(a[3], b[3]) - max(a[1], b[1])).clamp(min=0)
        inter = width * height
        area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
        return inter / (area(a) + area(b) - inter)

    expected: list[int] = []
    for index in scores.argsort(descending=True).tolist():
        if all(iou(boxes[index], boxes[k]) <= 0.3 for k in expected):
            expected.append(index)
    assert nms_reference(boxes, scores, 0.3).tolist() == expected


def test_timm_imports_in_a_fresh_process_after_ensure_torchvision():
    code = (
        "from modelmill.training.compat import ensure_torchvision; ensure_torchvision(); "
        "ensure_torchvision(); import timm, torchvision; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ---- roi_align ------------------------------------------------------------------------------

ROI_ALIGN_TOLERANCE = 1e-5


def _random_rois(generator: torch.Generator, count: int, images: int, size: float) -> torch.Tensor:
    """RoIs inside a `size`-pixel square, as detectors give them (boxes clipped to the image)."""
    corners = torch.rand(count, 2, generator=generator) * size * 0.7
    extent = torch.rand(count, 2, generator=generator) * size * 0.3
    index = torch.randint(0, images, (count, 1), generator=generator).float()
    return torch.cat([index, corners, corners + extent], dim=1)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_roi_align_matches_torchvisions_reference_forward_and_backward(aligned, sampling_ratio):
    """The registered op against torchvision's own pure-PyTorch RoIAlign (transcribed from its
    CUDA kernel), run eagerly: values and gradients."""
    ensure_torchvision()

    module = sys.modules["torchvision.ops.roi_align"]  # torchvision.ops.roi_align is a function
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 13, 17, generator=generator, dtype=torch.float64)
    rois = _random_rois(generator, 24, 2, 52.0).double()  # the map covers 52 × 68 pixels
    reference = module._roi_align.__wrapped__  # the eager function under its lazy compile
    ours_in = features.clone().requires_grad_(True)
    theirs_in = features.clone().requires_grad_(True)
    ours = torchvision_roi_align(ours_in, rois, (5, 4), 0.25, sampling_ratio, aligned)
    theirs = reference(theirs_in, rois, 0.25, 5, 4, sampling_ratio, aligned)
    assert ours.shape == (24, 3, 5, 4)
    torch.testing.assert_close(ours, theirs, atol=ROI_ALIGN_TOLERANCE, rtol=0)
    weights = torch.randn(ours.shape, generator=generator, dtype=torch.float64)
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, atol=ROI_ALIGN_TOLERANCE, rtol=0)


def torchvision_roi_align(features, rois, output_size, scale, sampling_ratio, aligned):
    """torchvision.ops.roi_align as detection models call it (through the registered op when
    the compiled library is missing, as on this machine)."""
    import torchvision

    return torchvision.ops.roi_align(features, rois, output_size, scale, sampling_ratio, aligned)


def test_roi_align_samples_beyond_the_map_are_zero_as_in_torchvisions_kernel():
    """torchvision's C++/CUDA kernel: a sample more than one pixel past the map counts 0, one
    nearer takes the border value (its Python fallback clamps both)."""
    features = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    # One bin, two samples per side, at x = 3.5 (clamped to the border: 1) and 5.5 (beyond: 0).
    rois = torch.tensor([[0.0, 2.5, 0.0, 6.5, 2.0]], dtype=torch.float64)
    out = roi_align_reference(features, rois, 1.0, 1, 1, 2, False)
    assert out.item() == 0.5


def test_roi_align_reference_handles_no_rois():
    features = torch.randn(1, 2, 8, 8)
    out = roi_align_reference(features, torch.zeros(0, 5), 1.0, 3, 3, 2, True)
    assert out.shape == (0, 2, 3, 3)


def test_batched_nms_scripts_for_onnx_export():
    """TorchScript scripts batched_nms (detectors' postprocessing, scripted during ONNX export);
    the ops check it calls must be a def, not a lambda."""
    ensure_torchvision()
    import torchvision

    scripted = torch.jit.script(torchvision.ops.batched_nms)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10.0]])
    kept = scripted(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1]), 0.5)
    assert kept.tolist() == [0, 2]


def test_roi_align_samples_bfloat16_maps_at_float32_positions():
    """Under bfloat16 autocast (GPU mixed precision) the maps come in bfloat16: the result is
    bfloat16, sampled where the float32 one samples."""
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(1, 4, 20, 20, generator=generator)
    rois = torch.tensor([[0.0, 100.3, 40.7, 150.9, 120.2]])  # far from 0: bfloat16 rounds these
    exact = roi_align_reference(features, rois, 0.125, 3, 3, 2, True)
    half = roi_align_reference(features.bfloat16(), rois, 0.125, 3, 3, 2, True)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), exact, atol=0.05, rtol=0.02)
