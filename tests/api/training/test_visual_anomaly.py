"""An anomaly heatmap model through the official client: normal and anomalous textures uploaded
with concepts, PatchCore trained, predictions with the `anomaly` concept and a heatmap the
input's size, the threshold setting, and a bad threshold refused with a status."""

from __future__ import annotations

import io

import numpy as np
import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from PIL import Image

from api.helpers import assert_ok, image_input
from api.training.support import create_model, predict, train, upload
from conftest import Api
from modelmill.training.tasks.anomaly import textured_image

STORED_WIDTH = 96
NORMAL_IMAGES, ANOMALOUS_IMAGES = 10, 4


def jpeg(seed: int, anomalous: bool) -> bytes:
    pixels, _ = textured_image("brick", STORED_WIDTH, seed, anomalous)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.mark.slow
def test_patchcore_trains_on_normal_images_and_predicts_scores_and_heatmaps(
    trainer_api: Api,
) -> None:
    api = trainer_api
    normal = [image_input(f"normal-{i}", jpeg(i, False), ["normal"]) for i in range(NORMAL_IMAGES)]
    defects = [
        image_input(f"defect-{i}", jpeg(100 + i, True), ["anomaly"])
        for i in range(ANOMALOUS_IMAGES)
    ]
    upload(api, normal + defects)
    create_model(api, "inspect", "visual-anomaly-heatmap", concepts=["normal", "anomaly"])
    version = train(
        api,
        "inspect",
        train_params={"template": "Anomalib_PatchCore", "image_size": 96.0},
    )
    assert version.train_info.params["template"] == "PatchCore"
    # image AUROC of concept `anomaly` on the held-out normals and every anomalous image
    assert version.metrics.summary.macro_avg_roc_auc > 0.5

    fresh = [image_input("", jpeg(200, False)), image_input("", jpeg(201, True))]
    reply = assert_ok(predict(api, "inspect", fresh))
    scores = []
    for output in reply.outputs:
        concepts = {c.id: c.value for c in output.data.concepts}
        assert set(concepts) == {"anomaly", "normal"}
        assert concepts["normal"] == pytest.approx(1 - concepts["anomaly"], abs=1e-6)
        (heatmap,) = output.data.heatmaps
        image = Image.open(io.BytesIO(heatmap.base64))
        assert image.mode == "L" and image.size == (STORED_WIDTH, STORED_WIDTH * 3 // 4)
        assert np.asarray(image).max() > 0
        scores.append(concepts["anomaly"])
    assert scores[1] > scores[0]  # the pasted defect scores higher than plain brick

    looser = assert_ok(predict(api, "inspect", fresh, params={"threshold": 0.1}))
    assert looser.outputs[0].data.concepts[0].id == "anomaly"  # a low threshold flags it
    refused = predict(api, "inspect", fresh, params={"threshold": 2.0})
    assert refused.status.code == codes.MODEL_INVALID_ARGUMENT
    assert "threshold" in refused.status.description
