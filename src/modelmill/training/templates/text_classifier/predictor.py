"""A trained text classifier at work: scoring texts for predictions, EvalMetrics on the inputs
its training held out, and the ONNX export with its tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from modelmill.training.checkpoint_keys import CONCEPTS_KEY, CONFIG_KEY
from modelmill.training.checkpoints import (
    TOKENIZER_DIR,
    Checkpoint,
    copy_tokenizer,
    find_checkpoint,
)
from modelmill.training.contract import Example
from modelmill.training.data import batched, pad_token_batch, token_ids
from modelmill.training.finetune.onnx_export import export_zip
from modelmill.training.finetune.outputs import ClassifierPredictor, scores_from_logits
from modelmill.training.tasks.classification import CLASSIFICATION
from modelmill.training.templates.text_classifier.model import (
    TextScores,
    forward,
    hf_config,
    load_tokenizer,
    merged,
    restore_model,
)

PREDICT_BATCH_SIZE = 32
EXPORT_TRACE_SHAPE, EXPORT_CHECK_SHAPES = (2, 16), ((3, 9), (1, 20))  # (batch, tokens)


class TextPredictor(ClassifierPredictor):
    """A trained text classifier (LoRA merged in), loaded once, scoring texts."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        config = checkpoint.meta[CONFIG_KEY]
        self.meta = checkpoint.meta
        self.concepts: list[str] = checkpoint.meta[CONCEPTS_KEY]
        self.max_length: int = config["max_length"]
        self.exclusive: bool = config["exclusive"]
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = load_tokenizer(checkpoint.path / TOKENIZER_DIR)
        self.model = merged(restore_model(checkpoint)).to(self.device).eval()

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        input_ids, attention = pad_token_batch(
            token_ids(self.tokenizer, texts, self.max_length), self.tokenizer.pad_token_id
        )
        return {"input_ids": input_ids, "attention_mask": attention}

    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        parts = [np.zeros((0, len(self.concepts)), np.float32)]
        for rows in batched(range(len(examples)), PREDICT_BATCH_SIZE):
            inputs = self.encode([examples[r].load() for r in rows])
            with torch.inference_mode():
                logits = forward(self.model, {k: v.to(self.device) for k, v in inputs.items()})
                parts.append(scores_from_logits(logits, self.exclusive).float().cpu().numpy())
        return np.concatenate(parts)


def export_classifier(name: str, model_type_id: str, artifacts: Path, out_dir: Path) -> Path:
    """The version as a zip: model.onnx (token ids in, scores out), the tokenizer, config.json,
    concepts.json and a manifest, after checking ONNX against PyTorch."""
    checkpoint = find_checkpoint(artifacts)
    predictor = TextPredictor(checkpoint)
    module = TextScores(predictor.model, predictor.exclusive)
    generator = torch.Generator().manual_seed(0)
    vocab = int(hf_config(predictor.model).vocab_size)

    def tokens(batch: int, length: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, vocab, (batch, length), generator=generator)
        attention = torch.ones_like(ids)
        attention[0, length // 2 :] = 0  # one padded row: the mask must matter as in PyTorch
        return {"input_ids": ids, "attention_mask": attention}

    config = {
        "template": name,
        "model_type_id": model_type_id,
        "base_model": checkpoint.meta[CONFIG_KEY]["base_model"],
        "input": "input_ids, attention_mask: int64 (batch, tokens) from the tokenizer in "
        f"tokenizer/, truncated to {predictor.max_length} tokens",
        "output": "scores: " + ("softmax" if predictor.exclusive else "sigmoid per concept"),
        "max_length": predictor.max_length,
        "concepts_mutually_exclusive": predictor.exclusive,
    }
    dynamic = {"batch": 0, "tokens": 1}
    axes = {name: {dynamic["batch"]: "batch", dynamic["tokens"]: "tokens"}
            for name in ("input_ids", "attention_mask")}  # fmt: skip
    return export_zip(
        module,
        tokens(*EXPORT_TRACE_SHAPE),
        [tokens(*shape) for shape in EXPORT_CHECK_SHAPES],
        axes,
        out_dir,
        name,
        config,
        predictor.concepts,
        CLASSIFICATION.export_outputs,
        write_extra=copy_tokenizer(checkpoint.path),
    )
