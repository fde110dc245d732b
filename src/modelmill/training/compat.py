"""Import-time compatibility for torchvision: when its compiled ops do not load (a CUDA build of
torchvision next to a CPU build of torch), register pure-PyTorch `nms`/`qnms` so it still imports.
"""

from __future__ import annotations

import logging
import sys
import threading

import torch

log = logging.getLogger("modelmill")

# The error torchvision raises while importing when its C++ library did not load: its meta
# registrations refer to ops that nobody defined.
_MISSING_OPS_MARKER = "torchvision::"
_SHIMMED_OPS = ("nms", "qnms")
_OP_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"

_lock = threading.Lock()
_library: torch.library.Library | None = None  # kept alive: dropping it unregisters the ops


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression with torchvision's semantics, in plain PyTorch.

    Boxes are (x1, y1, x2, y2); returns the kept indices (int64), highest score first.
    A box is dropped when its IoU with an already kept box is strictly above the threshold.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    # Quantized callers pass int_repr() tensors; IoU is shift- and scale-invariant so floats do.
    boxes = boxes.to(torch.float64)
    order = torch.argsort(scores.to(torch.float64), descending=True, stable=True)
    sorted_boxes = boxes[order]
    x1, y1, x2, y2 = sorted_boxes.unbind(dim=1)
    areas = (x2 - x1) * (y2 - y1)
    width = torch.minimum(x2[:, None], x2[None, :]) - torch.maximum(x1[:, None], x1[None, :])
    height = torch.minimum(y2[:, None], y2[None, :]) - torch.maximum(y1[:, None], y1[None, :])
    intersection = width.clamp(min=0) * height.clamp(min=0)
    union = areas[:, None] + areas[None, :] - intersection
    iou = torch.where(union > 0, intersection / union, torch.zeros_like(union))
    overlaps = (iou > iou_threshold).cpu()
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for index in range(len(order)):
        if suppressed[index]:
            continue
        keep.append(index)
        suppressed |= overlaps[index]
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


def _register_ops() -> None:
    global _library
    library = torch.library.Library("torchvision", "FRAGMENT")
    for name in _SHIMMED_OPS:
        library.define(name + _OP_SCHEMA)
        # Real kernels only: torchvision's own _meta_registrations adds the fake (Meta) kernels
        # for exactly these two ops, and a second registration here would make it fail.
        for dispatch_key in ("CPU", "CUDA"):
            library.impl(name, nms_reference, dispatch_key)
    _library = library


def _patch_ops_check() -> None:
    """torchvision.ops.nms refuses to run unless the C++ library loaded; in the boxes module
    only (where nms lives) accept our ops instead. Other ops keep failing with torch's error."""
    import torchvision.ops.boxes as boxes_module

    boxes_module._assert_has_ops = lambda: None


def ensure_torchvision() -> None:
    """Import torchvision, shimming `torchvision::nms`/`qnms` if its compiled ops are missing.

    Idempotent and cheap after the first call; call it before importing timm or transformers.
    """
    with _lock:
        if _library is not None or "torchvision" in sys.modules:
            return
        try:
            import torchvision  # noqa: F401

            return
        except RuntimeError as error:
            if _MISSING_OPS_MARKER not in str(error) or "does not exist" not in str(error):
                raise
        # The failed import left half-initialised submodules behind; drop them for a clean retry.
        for module_name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[module_name]
        _register_ops()
        import torchvision  # noqa: F401

        _patch_ops_check()
        log.info("torchvision's compiled ops did not load; using modelmill's pure-PyTorch nms shim")
