"""The segmentation partial of the version page, rendered from the segmentation task's own
EvalMetrics: mIoU, the per-concept IoU table, and sample masks (predicted and labelled)."""

from __future__ import annotations

import re

import numpy as np

from modelmill.training.contract import Output, Region
from modelmill.training.tasks.segmentation import SEGMENTATION, label_map, mask_png
from modelmill.web.rendering import create_templates


def test_partial_shows_miou_iou_per_concept_and_masks():
    data = SEGMENTATION.sample_data("image", 4, 40)
    outputs = []
    for example in data.examples:
        truth = label_map(example, data.concepts, example.load().size)
        found = [
            Region({c: 0.8}, mask_png=mask_png(truth == i + 1))
            for i, c in enumerate(data.concepts)
            if (truth == i + 1).any()
        ]
        outputs.append(Output(regions=found[:1]))  # the first shape found, any second missed
    metrics = SEGMENTATION.metrics(data.examples, outputs, data.concepts, True)
    environment = create_templates().env
    page = environment.from_string(
        '{% from "macros.html" import input_card %}{% include "partials/segmentation.html" %}'
    ).render(metrics=metrics, input_cards=lambda ids: {})
    mean = metrics["extended_metrics"]["user_metrics"]["mean_iou"]
    assert re.search(rf'id="mean-iou">{mean:.3f}<', page)
    rows = re.findall(r"<tr><td>(\w+)</td><td>(\d+)</td><td>([\d.–—]+)</td></tr>", page)
    assert [row[0] for row in rows] == list(data.concepts)
    iou = metrics["extended_metrics"]["user_metrics"]["per_class_iou"]
    assert [row[2] for row in rows] == [f"{iou[c]:.3f}" for c in data.concepts]
    masks = page.count('src="data:image/png;base64,')
    predicted = sum(len(o.regions) for o in outputs)
    labelled = sum(len(e.regions) for e in data.examples)
    assert masks == predicted + labelled and predicted < labelled
    assert np.isclose(mean, np.mean([v for v in iou.values() if v is not None]))
