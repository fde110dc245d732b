"""The torch side of the visual-detector templates: EfficientNet-Lite0 features (timm,
features_only) under a torchvision feature pyramid, and the torchvision detection heads on top
(RetinaNet, SSD, Faster R-CNN; a YOLOF-style single level). Also: freezing backbone stages,
carrying the class rows of each head layout over to a new concept list, and the module ONNX
export traces (pixels in, boxes / scores / labels out).

Labels here are 0-based concept indexes; `Detector` adds the background slot the torchvision
models that have one (Faster R-CNN, SSD) expect, and takes it off their answers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from modelmill.training.compat import ensure_torchvision
from modelmill.training.templates.visual_detector.layouts import Layout
from modelmill.training.weights import TimmWeights, WeightsLocation, timm_state_dict

ensure_torchvision()
import timm  # noqa: E402  (after the torchvision shim)
from torchvision.models.detection import FasterRCNN, RetinaNet  # noqa: E402
from torchvision.models.detection.anchor_utils import (  # noqa: E402
    AnchorGenerator,
    DefaultBoxGenerator,
)
from torchvision.models.detection.retinanet import RetinaNetHead  # noqa: E402
from torchvision.models.detection.ssd import SSD  # noqa: E402
from torchvision.models.detection.ssdlite import SSDLiteHead  # noqa: E402
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign  # noqa: E402
from torchvision.ops.feature_pyramid_network import (  # noqa: E402
    LastLevelMaxPool,
    LastLevelP6P7,
)

FEATURE_LEVELS = (2, 3, 4)  # Lite0 stages at strides 8, 16, 32
IMAGENET_CLASSES = 1000
ANCHOR_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))  # RetinaNet's three sizes per octave
ANCHOR_RATIOS = (0.5, 1.0, 2.0)
SSD_RATIOS = (2, 3)  # DefaultBoxGenerator's extra aspect ratios per level (plus 1:1 twice)
SSD_SCALE_RANGE = (0.1, 0.9)  # SSD box sizes, as shares of the image side
FASTER_RCNN_ROIS = 128  # RoIs sampled per image for the box head (issue 11: 2.9-3.4 s/step)
ROI_OUTPUT = 7
ROI_SAMPLING = 2
SSD_BATCHNORM_MOMENTUM = 0.03
DILATIONS = (2, 4, 6, 8)  # YOLOF's dilated encoder


def lite0_features(weights: TimmWeights, pretrained: WeightsLocation | None) -> nn.Module:
    """EfficientNet-Lite0 features at strides 8, 16, 32, from ImageNet weights when given."""
    features: Any = timm.create_model(
        weights.architecture, pretrained=False, features_only=True, out_indices=FEATURE_LEVELS
    )
    if pretrained is not None:
        full = timm.create_model(
            weights.architecture, pretrained=False, num_classes=IMAGENET_CLASSES
        )
        full.load_state_dict(timm_state_dict(weights, pretrained, full))
        missing, _ = features.load_state_dict(full.state_dict(), strict=False)
        assert not missing, f"Lite0 features lack ImageNet weights for {missing[:3]}"
    return features


class PyramidBackbone(nn.Module):
    """timm features → a torchvision FPN (P3-P5, plus P6-P7 or a max-pooled level)."""

    def __init__(self, features: nn.Module, channels: int, extra: str) -> None:
        super().__init__()
        self.body = features
        in_channels = list(features.feature_info.channels())  # type: ignore[union-attr, operator]
        blocks: nn.Module = (
            LastLevelP6P7(channels, channels) if extra == "p6p7" else LastLevelMaxPool()
        )
        self.fpn = FeaturePyramidNetwork(in_channels, channels, extra_blocks=blocks)  # type: ignore[arg-type]
        self.out_channels = channels

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        levels = self.body(images)
        return self.fpn(OrderedDict((str(i), level) for i, level in enumerate(levels)))


class DilatedEncoderBackbone(nn.Module):
    """YOLOF's neck: the stride-32 features through a projector and residual blocks of
    growing dilation, one output level that sees objects of every size."""

    def __init__(self, features: nn.Module, channels: int) -> None:
        super().__init__()
        self.body = features
        top = list(features.feature_info.channels())[-1]  # type: ignore[union-attr, operator]
        self.projector = nn.Sequential(
            nn.Conv2d(top, channels, 1),
            nn.BatchNorm2d(channels),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
        )
        self.blocks = nn.ModuleList(_DilatedBlock(channels, d) for d in DILATIONS)
        self.out_channels = channels

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.projector(self.body(images)[-1])
        for block in self.blocks:
            x = block(x)
        return OrderedDict([("0", x)])


class _DilatedBlock(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        middle = channels // 4
        self.layers = nn.Sequential(
            nn.Conv2d(channels, middle, 1),
            nn.BatchNorm2d(middle),
            nn.ReLU(inplace=True),
            nn.Conv2d(middle, middle, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm2d(middle),
            nn.ReLU(inplace=True),
            nn.Conv2d(middle, channels, 1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


def anchor_sizes(image_size: int, fractions: Sequence[float]) -> tuple[tuple[int, ...], ...]:
    """Anchor sides in pixels per level: shares of the image side, so anchors follow the
    image size (COCO's 32-512 px at 800 px are 4-64 % of the side)."""
    return tuple(tuple(max(2, round(image_size * f * s)) for s in ANCHOR_SCALES) for f in fractions)


def build_detector(
    layout: Layout,
    num_concepts: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    features: nn.Module,
) -> Detector:
    """The torchvision detector of `layout` on `features`, for square images of `image_size`."""
    common: dict[str, Any] = {
        "image_mean": list(mean),
        "image_std": list(std),
    }
    sizes = {"min_size": image_size, "max_size": image_size}
    model: nn.Module
    if layout.head == "retinanet":
        backbone: nn.Module = (
            DilatedEncoderBackbone(features, layout.channels)
            if layout.neck == "dilated"
            else PyramidBackbone(features, layout.channels, "p6p7")
        )
        if layout.neck == "dilated":  # YOLOF: one level, square anchors of every size
            one_level = tuple(max(2, round(image_size * f)) for f in layout.anchor_fractions)
            anchors = AnchorGenerator((one_level,), ((1.0,),))
        else:
            anchors = AnchorGenerator(
                anchor_sizes(image_size, layout.anchor_fractions),
                (ANCHOR_RATIOS,) * len(layout.anchor_fractions),
            )
        head = RetinaNetHead(layout.channels, anchors.num_anchors_per_location()[0], num_concepts)
        model = RetinaNet(
            backbone,
            num_concepts,
            anchor_generator=anchors,
            head=head,
            **sizes,
            **common,
        )
    elif layout.head == "ssdlite":
        backbone = PyramidBackbone(features, layout.channels, "p6p7")
        levels = len(layout.anchor_fractions)
        boxes = DefaultBoxGenerator(
            [list(SSD_RATIOS)] * levels, min_ratio=SSD_SCALE_RANGE[0], max_ratio=SSD_SCALE_RANGE[1]
        )
        norm = _ssd_batchnorm
        head = SSDLiteHead(
            [layout.channels] * levels, boxes.num_anchors_per_location(), num_concepts + 1, norm
        )
        model = SSD(
            backbone,
            boxes,
            (image_size, image_size),
            num_concepts + 1,
            head=head,
            **common,
        )
    elif layout.head == "faster_rcnn":
        backbone = PyramidBackbone(features, layout.channels, "maxpool")
        anchors = AnchorGenerator(
            anchor_sizes(image_size, layout.anchor_fractions),
            (ANCHOR_RATIOS,) * len(layout.anchor_fractions),
        )
        model = FasterRCNN(
            backbone,
            num_concepts + 1,
            rpn_anchor_generator=anchors,
            # RoIs pool from the three backbone levels; the max-pooled one only proposes.
            box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], ROI_OUTPUT, ROI_SAMPLING),
            box_batch_size_per_image=FASTER_RCNN_ROIS,
            **sizes,
            **common,
        )
    else:
        raise ValueError(f"unknown detection head {layout.head}")
    return Detector(model, layout.head != "retinanet")


def _ssd_batchnorm(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels, eps=0.001, momentum=SSD_BATCHNORM_MOMENTUM)


class Detector(nn.Module):
    """A torchvision detector with 0-based concept labels in and out: the targets' labels
    shift by one where the model has a background class, and so do its detections back."""

    def __init__(self, model: nn.Module, has_background: bool) -> None:
        super().__init__()
        self.model = model
        self.offset = 1 if has_background else 0

    def forward(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None
    ) -> Any:
        if targets is not None:
            targets = [{**t, "labels": t["labels"] + self.offset} for t in targets]
            return self.model(images, targets)
        found = self.model(images)
        return [{**d, "labels": d["labels"] - self.offset} for d in found]

    def set_inference(self, threshold: float, nms_iou: float, max_detections: int) -> None:
        """Score threshold, NMS IoU and detections per image of the next predictions."""
        target = getattr(self.model, "roi_heads", self.model)
        target.score_thresh = threshold
        target.nms_thresh = nms_iou
        target.detections_per_img = max_detections


def freeze_stages(detector: Detector, frozen_stages: int) -> None:
    """MMDetection's frozen_stages: -1 freezes nothing, 0 the stem, n the stem and the first
    n stages of the backbone (their weights stop learning)."""
    body: Any = detector.model.backbone.body
    if frozen_stages < 0:
        return
    parts: list[nn.Module] = [body.conv_stem, body.bn1]
    parts += [body.blocks[i] for i in range(min(frozen_stages, len(body.blocks)))]
    for part in parts:
        for parameter in part.parameters():
            parameter.requires_grad_(False)


def train_keeping_backbone_statistics(detector: nn.Module) -> None:
    """Training mode, with the pretrained backbone's batch norms on their stored statistics
    (small detection batches make batch statistics noisy); the heads' norms train."""
    detector.train()
    body = detector.model.backbone.body  # type: ignore[union-attr]
    for module in body.modules():  # type: ignore[union-attr]
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


# ---- incremental training: class rows per head layout -----------------------------------------


def class_row_layouts(detector: Detector) -> dict[str, tuple[int, int, int]]:
    """Each state-dict key whose first dimension holds per-concept rows, as (groups, slots
    offset, values per slot): rows are laid out group-major (anchors), then class slots (a
    background slot first when `offset` is 1), then values (4 box numbers or 1 score)."""
    model: Any = detector.model
    rows: dict[str, tuple[int, int, int]] = {}
    if isinstance(model, RetinaNet):
        anchors = model.head.classification_head.num_anchors
        for part in ("weight", "bias"):
            rows[f"model.head.classification_head.cls_logits.{part}"] = (anchors, 0, 1)
    elif isinstance(model, SSD):
        for level, module in enumerate(model.head.classification_head.module_list):
            conv = module[-1]
            anchors = conv.out_channels // model.head.classification_head.num_columns
            for part in ("weight", "bias"):
                key = f"model.head.classification_head.module_list.{level}.1.{part}"
                rows[key] = (anchors, 1, 1)
    elif isinstance(model, FasterRCNN):
        for part in ("weight", "bias"):
            rows[f"model.roi_heads.box_predictor.cls_score.{part}"] = (1, 1, 1)
            rows[f"model.roi_heads.box_predictor.bbox_pred.{part}"] = (1, 1, 4)
    return rows


def carry_over_classes(
    old_state: Mapping[str, torch.Tensor],
    old_concepts: Sequence[str],
    new_state: dict[str, torch.Tensor],
    new_concepts: Sequence[str],
    rows: Mapping[str, tuple[int, int, int]],
) -> dict[str, int]:
    """Starts a detector for `new_concepts` from one trained on `old_concepts`: every tensor of
    the same name and shape is copied; in the class-row tensors (`rows`, see
    class_row_layouts) the background slot and the slots of kept concepts are copied, new
    concepts keep their fresh initialisation. Updates `new_state`; returns counts."""
    old_index = {concept: i for i, concept in enumerate(old_concepts)}
    copied = 0
    for key, tensor in new_state.items():
        old = old_state.get(key)
        if old is None:
            continue
        if key in rows:
            groups, offset, per = rows[key]
            old_view = old.reshape(groups, offset + len(old_concepts), per, *old.shape[1:])
            new_view = tensor.reshape(groups, offset + len(new_concepts), per, *tensor.shape[1:])
            for slot in range(offset):  # background
                new_view[:, slot] = old_view[:, slot]
            for k, concept in enumerate(new_concepts):
                if concept in old_index:
                    new_view[:, offset + k] = old_view[:, offset + old_index[concept]]
            new_state[key] = new_view.reshape(tensor.shape)
        elif old.shape == tensor.shape:
            new_state[key] = old.to(tensor.dtype)
            copied += 1
    kept = sum(concept in old_index for concept in new_concepts)
    return {
        "tensors_copied": copied,
        "concepts_kept": kept,
        "concepts_new": len(new_concepts) - kept,
        "concepts_dropped": len(set(old_concepts) - set(new_concepts)),
    }


# ---- export -------------------------------------------------------------------------------------


class ExportedDetections(nn.Module):
    """One image of RGB pixels 0-255, float (1, 3, size, size), letterboxed → its detections:
    boxes (K, 4) as (top, left, bottom, right) fractions of the letterboxed square, scores (K),
    labels (K, int64 0-based concept indexes). What the ONNX export takes and gives."""

    def __init__(self, detector: Detector, image_size: int) -> None:
        super().__init__()
        self.detector = detector
        self.image_size = float(image_size)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        found = self.detector([images[0] / 255.0])[0]
        x1, y1, x2, y2 = found["boxes"].unbind(dim=1)
        boxes = torch.stack([y1, x1, y2, x2], dim=1) / self.image_size
        return boxes, found["scores"], found["labels"]
