"""The GPU path, on a CUDA device (skipped without one; bench/gpu.sh runs these): every template
trains a few steps and predicts on the GPU, in mixed precision where it has it; running out of
GPU memory ends a training with a status naming the batch size to try; a job keeps to its share
of the GPU's memory.

Run: `.venv/bin/python -m pytest -m gpu tests/gpu` (or `scripts/run-tests.sh gpu`).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from contract.test_templates import (
    make_context,
    tiny_causal_model,
    tiny_params,
    tiny_text_model,
    training_data,
)
from modelmill.training import runner, weights
from modelmill.training.contract import DataError, Template, predict_all
from modelmill.training.finetune.loop import autocast_dtype
from modelmill.training.registry import TEMPLATES
from modelmill.training.runner import TrainingPlan

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

__all__ = ["tiny_causal_model", "tiny_text_model"]  # fixtures shared with the contract test


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(weights, "hub_online", lambda: False)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: f"{t.model_type_id}:{t.name}")
def test_every_template_trains_and_predicts_on_the_gpu(
    template: Template, tiny_text_model, tiny_causal_model, tmp_path
):
    params = tiny_params(template, tiny_text_model, tiny_causal_model)
    data = training_data(template)
    context = make_context(tmp_path)
    context.ctx.device = "cuda"
    torch.cuda.reset_peak_memory_stats()

    result = template.train(context.ctx, data, params)
    outputs = template.load(result.artifacts).predict(
        list(data.examples), predict_all(data.concepts)
    )

    assert len(outputs) == len(data.examples)
    assert context.reports, "progress was reported"
    if template.model_type_id != "embedding-classifier":  # its head fits on the CPU
        assert torch.cuda.max_memory_allocated() > 0, "nothing was computed on the GPU"


def test_auto_precision_is_bfloat16_where_the_gpu_has_it():
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert autocast_dtype("auto", "cuda") == expected
    assert autocast_dtype("fp16", "cuda") == torch.float16
    assert autocast_dtype("off", "cuda") is None and autocast_dtype("auto", "cpu") is None


def test_float16_training_scales_its_loss_and_learns(tmp_path):
    template = next(t for t in TEMPLATES if t.name == "EfficientNet_Lite0_Fast")
    params = template.Params(
        image_size=64, batch_size=4, num_epochs=3, pretrained_weights="None",
        validation_fraction=0.25, mixed_precision="fp16", early_stopping_patience=0,
    )  # fmt: skip
    context = make_context(tmp_path)
    context.ctx.device = "cuda"

    template.train(context.ctx, training_data(template), params)

    losses = [m["loss"] for _, m in context.reports if "loss" in m]
    assert losses and all(np.isfinite(losses))


def test_running_out_of_gpu_memory_names_the_batch_size_to_try(tmp_path):
    template = next(t for t in TEMPLATES if t.name == "EfficientNet_Lite0_Fast")
    data = training_data(template)
    params = template.Params(image_size=1024, batch_size=1024, num_epochs=1,
                             pretrained_weights="None", validation_fraction=0.0)  # fmt: skip
    plan = TrainingPlan(
        template.model_type_id, template.name, list(data.concepts), False,
        params.model_dump(mode="json"), tolerance_percent=0.0,
    )  # fmt: skip
    context = make_context(tmp_path)
    context.ctx.device = "cuda"
    # A sample set of 13 images cannot fill a batch of 1024: ask for more images than memory.
    many = [*data.examples] * 80
    torch.cuda.set_per_process_memory_fraction(0.02)
    try:
        with pytest.raises(DataError) as refused:
            runner.run(template, plan, many, context.ctx)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert refused.value.code == codes.MODEL_TRAINING_FAILED
    assert "batch_size 512" in refused.value.description


def test_a_job_keeps_to_its_share_of_the_gpu_memory():
    """Two jobs on one GPU: each child process limits itself (settings.gpu_memory_fraction or
    one share per worker); an allocation past the share fails in that process only."""
    code = textwrap.dedent(
        """
        import torch
        from modelmill.training.hardware import limit_gpu_memory
        limit_gpu_memory(0.25)
        total = torch.cuda.get_device_properties(0).total_memory
        try:
            torch.empty(int(total * 0.4), dtype=torch.uint8, device="cuda")
            print("allocated")
        except torch.OutOfMemoryError:
            print("refused")
        torch.empty(int(total * 0.1), dtype=torch.uint8, device="cuda")
        print("within its share")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["refused", "within", "its", "share"], done.stderr
