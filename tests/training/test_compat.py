"""torchvision imports (and its nms works) even when its compiled ops do not load."""

from __future__ import annotations

import subprocess
import sys

import torch

from modelmill.training.compat import ensure_torchvision, nms_reference


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
