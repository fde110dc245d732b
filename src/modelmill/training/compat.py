"""Import-time compatibility for torchvision: when its compiled ops do not load (a CUDA build of
torchvision next to a CPU build of torch), register pure-PyTorch `nms`/`qnms` so it still imports,
and a pure-PyTorch `roi_align` (bilinear sampling with grid_sample, differentiable, no
torch.compile and so no compiler at run time) that torchvision's detection models (Faster
R-CNN's MultiScaleRoIAlign) and their ONNX export use.
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
_ROI_ALIGN_SCHEMA = (
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor"
)

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


def roi_align_reference(
    features: torch.Tensor,
    rois: torch.Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """torchvision's RoIAlign (average of bilinear samples per bin) in plain PyTorch.

    `features` (N, C, H, W); `rois` (K, 5) rows of (image index, x1, y1, x2, y2) in input
    pixels, scaled by `spatial_scale`. Returns (K, C, pooled_height, pooled_width). Samples
    follow torchvision's kernel: `sampling_ratio` points per bin side (adaptive, ceil(roi size /
    bins), when ≤ 0); a sample more than one pixel outside the map is 0, one nearer is clamped
    to the border. Sampled with grid_sample (align_corners, border padding), one call per
    image and sampling grid, so memory stays at the samples, not a copy of the map per RoI.
    """
    _, channels, height, width = features.shape
    # Coordinates and sampling in float32 at least: under bfloat16 autocast the feature maps
    # come in bfloat16, whose 8-bit mantissa would move sample points by whole pixels.
    compute = torch.promote_types(features.dtype, torch.float32)
    out = features.new_zeros((rois.shape[0], channels, pooled_height, pooled_width), dtype=compute)
    if rois.shape[0] == 0:
        return out.to(features.dtype)
    offset = 0.5 if aligned else 0.0
    boxes = rois[:, 1:].to(compute) * spatial_scale - offset
    start_x, start_y = boxes[:, 0], boxes[:, 1]
    roi_w, roi_h = boxes[:, 2] - start_x, boxes[:, 3] - start_y
    if not aligned:  # the legacy kernel forces RoIs of at least one pixel
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = torch.full_like(roi_h, sampling_ratio).long()
        grid_w = torch.full_like(roi_w, sampling_ratio).long()
    else:
        grid_h = torch.ceil(roi_h / pooled_height).long().clamp(min=1)
        grid_w = torch.ceil(roi_w / pooled_width).long().clamp(min=1)
    batch_index = rois[:, 0].long()
    # One grid_sample per (image, samples per bin): under tracing (ONNX export) with a fixed
    # sampling ratio this is one call per image of the traced batch.
    groups = torch.stack([batch_index, grid_h, grid_w], dim=1)
    for image, samples_h, samples_w in _unique_rows(groups):
        chosen = torch.nonzero(
            (batch_index == image) & (grid_h == samples_h) & (grid_w == samples_w)
        ).squeeze(1)
        out = out.index_copy(
            0,
            chosen,
            _sample_bins(
                features[image : image + 1].to(compute),
                start_x[chosen],
                start_y[chosen],
                roi_w[chosen],
                roi_h[chosen],
                (pooled_height, pooled_width),
                (samples_h, samples_w),
            ),
        )
    return out.to(features.dtype)


def _unique_rows(groups: torch.Tensor) -> list[tuple[int, int, int]]:
    """The distinct (image, samples per bin rows, cols) of the RoIs. Under tracing (ONNX export)
    they become constants of the graph: the export traces one image with a fixed ratio."""
    return [(int(a), int(b), int(c)) for a, b, c in torch.unique(groups, dim=0).tolist()]


def _sample_bins(
    feature_map: torch.Tensor,
    start_x: torch.Tensor,
    start_y: torch.Tensor,
    roi_w: torch.Tensor,
    roi_h: torch.Tensor,
    pooled: tuple[int, int],
    samples: tuple[int, int],
) -> torch.Tensor:
    """The bins of RoIs of one image, all with `samples` (rows, cols) bilinear samples per bin."""
    _, channels, height, width = feature_map.shape
    (pooled_h, pooled_w), (samples_h, samples_w) = pooled, samples
    count = roi_w.shape[0]
    dtype, device = feature_map.dtype, feature_map.device
    # Sample positions along each axis: bin p, sample i at start + (p + (i + 0.5) / n) · bin.
    steps_y = (
        torch.arange(pooled_h, device=device, dtype=dtype)[:, None]
        + (torch.arange(samples_h, device=device, dtype=dtype)[None, :] + 0.5) / samples_h
    ).reshape(-1)
    steps_x = (
        torch.arange(pooled_w, device=device, dtype=dtype)[:, None]
        + (torch.arange(samples_w, device=device, dtype=dtype)[None, :] + 0.5) / samples_w
    ).reshape(-1)
    y = start_y[:, None] + steps_y[None, :] * (roi_h / pooled_h)[:, None]  # (K, PH·SH)
    x = start_x[:, None] + steps_x[None, :] * (roi_w / pooled_w)[:, None]  # (K, PW·SW)
    inside_y = (y >= -1.0) & (y <= height)
    inside_x = (x >= -1.0) & (x <= width)
    # grid_sample's align_corners=True maps -1 and 1 to the first and last pixel centres.
    norm_y = y.clamp(min=0.0) * (2.0 / max(height - 1, 1)) - 1.0
    norm_x = x.clamp(min=0.0) * (2.0 / max(width - 1, 1)) - 1.0
    rows, cols = norm_y.shape[1], norm_x.shape[1]
    grid = torch.stack(
        [
            norm_x[:, None, :].expand(count, rows, cols),
            norm_y[:, :, None].expand(count, rows, cols),
        ],
        dim=-1,
    ).reshape(1, count * rows, cols, 2)
    sampled = torch.nn.functional.grid_sample(
        feature_map, grid, mode="bilinear", padding_mode="border", align_corners=True
    )  # (1, C, K·rows, cols)
    sampled = sampled.reshape(channels, count, rows, cols).permute(1, 0, 2, 3)
    weight = (inside_y[:, :, None] & inside_x[:, None, :]).to(dtype)[:, None]
    sampled = (sampled * weight).reshape(count, channels, pooled_h, samples_h, pooled_w, samples_w)
    return sampled.mean(dim=(3, 5))


def _register_ops() -> None:
    global _library
    library = torch.library.Library("torchvision", "FRAGMENT")
    for name in _SHIMMED_OPS:
        library.define(name + _OP_SCHEMA)
        # Real kernels only: torchvision's own _meta_registrations adds the fake (Meta) kernels
        # for exactly these two ops, and a second registration here would make it fail.
        for dispatch_key in ("CPU", "CUDA"):
            library.impl(name, nms_reference, dispatch_key)
    library.define(_ROI_ALIGN_SCHEMA)
    # Composite: autograd differentiates through the PyTorch ops, and tracing (ONNX export)
    # records them, so neither needs a kernel of its own.
    library.impl("roi_align", roi_align_reference, "CompositeImplicitAutograd")
    _library = library


def _no_ops_check() -> None:
    """Stands in for torchvision's _assert_has_ops: a def, not a lambda, so TorchScript can
    script the functions that call it (batched_nms inside an ONNX export)."""


def _ops_available() -> bool:
    return True


def _patch_ops_check() -> None:
    """torchvision.ops.nms and roi_align refuse to run unless the C++ library loaded; in their
    modules only, accept our ops instead (roi_align then calls the registered op rather than
    torch.compile-ing its fallback, which needs a C compiler and ~47 s). Other ops keep failing
    with torch's error."""
    import torchvision.ops.boxes as boxes_module

    # The module, not torchvision.ops' function of the same name that `import ... as` finds.
    roi_align_module = sys.modules["torchvision.ops.roi_align"]
    boxes_module._assert_has_ops = _no_ops_check
    roi_align_module._assert_has_ops = _no_ops_check
    roi_align_module._has_ops = _ops_available


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
        log.info("torchvision's compiled ops did not load; using pure-PyTorch nms and roi_align")
