"""visual-detector templates: torchvision detection heads (RetinaNet, SSDLite, Faster R-CNN, a
YOLOF-style single level) on EfficientNet-Lite0 features, fine-tuned on images with boxes.
Only the backbone starts from trained (ImageNet-1k) weights; no COCO detector weights are used.
"""

from modelmill.training.templates.visual_classifier.backbones import EFFICIENTNET_LITE0
from modelmill.training.templates.visual_detector.layouts import (
    FASTER_RCNN,
    RETINANET,
    SSDLITE,
    YOLOF,
)
from modelmill.training.templates.visual_detector.params import (
    FasterRCNNParams,
    SSDParams,
    VisualDetectorParams,
    YoloFParams,
)
from modelmill.training.templates.visual_detector.template import VisualDetector

_WEIGHTS = (
    "The EfficientNet-Lite0 backbone starts from its ImageNet-1k weights (shipped with "
    "modelmill); the detection layers start fresh (no COCO-trained weights)."
)

RETINANET_DETECTOR = VisualDetector(
    "EfficientNet_Lite0_RetinaNet_Fast",
    RETINANET,
    EFFICIENTNET_LITE0,
    VisualDetectorParams,
    "RetinaNet (focal loss, anchors at five pyramid levels) on EfficientNet-Lite0 with a "
    "64-channel FPN: the quickest way to a detector, on CPU too. " + _WEIGHTS,
    recommended=True,
)
FASTER_RCNN_DETECTOR = VisualDetector(
    "MMDetection_FasterRCNN",
    FASTER_RCNN,
    EFFICIENTNET_LITE0,
    FasterRCNNParams,
    "Faster R-CNN (region proposals, then RoIAlign and a box head) on EfficientNet-Lite0 with "
    "an FPN (torchvision's implementation, not MMDetection's). Slower, best on a GPU. " + _WEIGHTS,
)
SSD_DETECTOR = VisualDetector(
    "MMDetection_SSD",
    SSDLITE,
    EFFICIENTNET_LITE0,
    SSDParams,
    "SSD (SSDLite's depthwise prediction heads, default boxes sized as shares of the image) on "
    "EfficientNet-Lite0 with an FPN (torchvision's implementation). " + _WEIGHTS,
)
YOLOF_DETECTOR = VisualDetector(
    "MMDetection_YoloF",
    YOLOF,
    EFFICIENTNET_LITE0,
    YoloFParams,
    "YOLOF-style: one stride-32 level through YOLOF's dilated encoder, with a RetinaNet head "
    "(focal loss, IoU anchor matching; not YOLOF's uniform matching) and square anchors from "
    "a tenth of the image to all of it, on EfficientNet-Lite0. " + _WEIGHTS,
)

__all__ = [
    "FASTER_RCNN_DETECTOR",
    "RETINANET_DETECTOR",
    "SSD_DETECTOR",
    "YOLOF_DETECTOR",
    "VisualDetector",
]
