"""A trained text generator at work: generating text with per-request settings (max_tokens,
temperature, top_p, top_k, stop sequences, seed), EvalMetrics on the inputs its training held
out (loss, perplexity, exact match, chrF, BLEU), and the export: the merged model (safetensors
and tokenizer, as transformers loads it) and the LoRA adapter alone, as a zip.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from pydantic import ValidationError

from modelmill.domain.errors import ApiError
from modelmill.training.checkpoint_keys import CONFIG_KEY, TEMPLATE_KEY, VALIDATION_IDS_KEY
from modelmill.training.checkpoints import TOKENIZER_DIR, Checkpoint, find_checkpoint
from modelmill.training.contract import Example, Output, TrainingData
from modelmill.training.data import batched
from modelmill.training.finetune.onnx_export import (
    CONCEPTS_FILE,
    ONNX_FILE,
    OPSET_VERSION,
    ExportMismatchError,
)
from modelmill.training.tasks.generation import GENERATION, LOSS_KEY, TOKENS_KEY, target_of
from modelmill.training.templates.text_generator.gguf_export import GgufUnsupported, write_gguf
from modelmill.training.templates.text_generator.model import (
    SEQ2SEQ,
    end_token_id,
    forward_of,
    load_tokenizer,
    restore_model,
)
from modelmill.training.templates.text_generator.params import InferenceParams
from modelmill.training.templates.text_generator.sequences import (
    collate,
    example_prompt,
    samples_of,
)
from modelmill.training.templates.text_generator.training import ADAPTER_DIR

PREDICT_BATCH_SIZE = 8
EVAL_BATCH_SIZE = 8
MAX_EVAL_GENERATIONS = 50  # held-out pairs generated for exact match, chrF and BLEU
EVAL_SPARE_TOKENS = 8  # generated beyond the longest target, so a too-long answer shows
STOP_ALIASES = ("stop", "stop_sequences")
MERGED_DIR = "merged"
GGUF_FILE = "model.gguf"
EXPORT_TRACE_SHAPE, EXPORT_CHECK_SHAPES = (2, 16), ((3, 9), (1, 20))  # (batch, tokens)
LOGITS_TOLERANCE = 1e-3  # float32 logits of the same graph agree far closer than this
POSITION_LIMITS = ("max_position_embeddings", "n_positions")  # config names of the limit
UNLIMITED = 1 << 30  # relative positions (T5): no table to run past
EXPORT_CONFIG = "config.json"


def inference_settings(params: Mapping[str, Any]) -> tuple[InferenceParams, int | None]:
    """The generation settings and seed of a request (stored defaults already merged in);
    ApiError(MODEL_INVALID_ARGUMENT) naming the bad value otherwise."""
    fields = InferenceParams.model_fields
    values: dict[str, Any] = {k: params[k] for k in fields if params.get(k) is not None}
    if params.get("stop") is not None:  # the common LLM name for stop sequences
        values["stop_sequences"] = params["stop"]
    if isinstance(values.get("stop_sequences"), str):
        values["stop_sequences"] = [values["stop_sequences"]]
    for name, info in fields.items():  # Struct numbers arrive as floats
        value = values.get(name)
        if info.annotation is int and isinstance(value, float) and value.is_integer():
            values[name] = int(value)
    seed = params.get("seed")
    try:
        settings = InferenceParams.model_validate(values)
        seed = None if seed is None else int(seed)
    except (ValidationError, TypeError, ValueError) as error:
        problems = (
            "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in error.errors())
            if isinstance(error, ValidationError)
            else f"seed: {error}"
        )
        raise ApiError(
            codes.MODEL_INVALID_ARGUMENT, f"Invalid generation settings: {problems}."
        ) from None
    return settings, seed


class StopAtStrings:
    """A transformers StoppingCriteria: a row is done once its new text holds a stop string."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_width: int) -> None:
        self.tokenizer, self.stops, self.prompt_width = tokenizer, list(stops), prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width :])
        done = [any(stop in text for stop in self.stops) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """The text up to the first stop string (which is left out)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:cut]


class GeneratorPredictor:
    """A trained text generator (LoRA merged in), loaded once."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        config = checkpoint.meta[CONFIG_KEY]
        self.meta = checkpoint.meta
        self.architecture: str = config["architecture"]
        self.layout = config["prompt_format"]
        self.max_length: int = config["max_length"]
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = load_tokenizer(checkpoint.path / TOKENIZER_DIR)
        if self.architecture != SEQ2SEQ:
            # Prompts end where generation starts: pad and truncate on the left.
            self.tokenizer.padding_side = "left"
            self.tokenizer.truncation_side = "left"
        self.model = restore_model(checkpoint).to(self.device).eval()
        config = self.model.config
        self.positions: int = next(
            (int(v) for k in POSITION_LIMITS if (v := getattr(config, k, None))), UNLIMITED
        )

    def prompts(self, examples: Sequence[Example]) -> list[str]:
        return [example_prompt(self.tokenizer, e, self.layout) for e in examples]

    def predict(self, examples: Sequence[Example], params: dict[str, Any]) -> list[Output]:
        settings, seed = inference_settings(params)
        texts: list[str] = []
        for rows in batched(range(len(examples)), PREDICT_BATCH_SIZE):
            prompts = self.prompts([examples[r] for r in rows])
            texts += self.generate(prompts, settings, seed)
        return [Output(text=text) for text in texts]

    def generate(
        self, prompts: list[str], settings: InferenceParams, seed: int | None
    ) -> list[str]:
        from transformers import StoppingCriteriaList

        encoded = self.tokenizer(
            prompts,
            add_special_tokens=self.architecture == SEQ2SEQ,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        width = 0 if self.architecture == SEQ2SEQ else encoded["input_ids"].shape[1]
        room = self.positions - width  # a model cannot read past its position table
        if room <= 0:
            return ["" for _ in prompts]
        options: dict[str, Any] = {
            "max_new_tokens": min(settings.max_tokens, room),
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": end_token_id(self.tokenizer),
            "do_sample": settings.temperature > 0,
        }
        if settings.temperature > 0:
            options.update(temperature=settings.temperature, top_p=settings.top_p)
            options["top_k"] = settings.top_k or None
        else:  # greedy: clear sampling defaults a model's generation config may carry
            options.update(temperature=None, top_p=None, top_k=None)
        if settings.stop_sequences:
            stop = StopAtStrings(self.tokenizer, settings.stop_sequences, width)
            options["stopping_criteria"] = StoppingCriteriaList([stop])
        devices = [torch.cuda.current_device()] if self.device == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed if seed is not None else 0)
            # Only what every generator reads: a tokenizer may add token_type_ids (BERT's vocab).
            generated = self.model.generate(
                input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], **options
            )
        answers = self.tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
        return [cut_at_stops(a, settings.stop_sequences).strip() for a in answers]

    def held_out_loss(self, examples: Sequence[Example]) -> tuple[float, int]:
        """(mean token loss, tokens) of the examples, unpacked, as training validated."""
        sequences = samples_of(
            self.tokenizer, examples, self.layout, self.max_length, self.architecture
        )
        samples = [s for group in sequences for s in group]
        pad_id = int(self.tokenizer.pad_token_id)
        batches = (
            {
                k: v.to(self.device)
                for k, v in collate(
                    samples[start : start + EVAL_BATCH_SIZE], pad_id, self.architecture
                ).items()
            }
            for start in range(0, len(samples), EVAL_BATCH_SIZE)
        )
        result = GENERATION.objective(forward_of(self.architecture)).validate(self.model, batches)
        return result["val_loss"], int(result["val_tokens"])

    def evaluate(self, data: TrainingData, max_tokens: int) -> dict[str, Any]:
        """EvalMetrics on the inputs training held out (on the training inputs, saying so,
        when it held none out)."""
        held = set(self.meta.get(VALIDATION_IDS_KEY) or [])
        examples = [e for e in data.examples if e.input_id in held and e.kind == "text"]
        on_training = not examples
        if on_training:
            examples = [e for e in data.examples if e.kind == "text"]
        pairs = [e for e in examples if target_of(e) is not None][:MAX_EVAL_GENERATIONS]
        info: dict[str, Any] = {
            "held_out": not on_training,
            "inputs": len(examples),
            "prompt_format": self.layout,
        }
        # a held-out text shorter than two tokens gives no loss to average
        loss, tokens = self.held_out_loss(examples)
        if tokens:
            info[LOSS_KEY], info[TOKENS_KEY] = loss, tokens
        longest = max(
            (len(self.tokenizer(target_of(e) or "")["input_ids"]) for e in pairs), default=0
        )
        settings = InferenceParams(max_tokens=max(1, min(max_tokens, longest + EVAL_SPARE_TOKENS)))
        outputs: list[Output] = []
        for rows in batched(range(len(pairs)), PREDICT_BATCH_SIZE):
            texts = self.generate(self.prompts([pairs[r] for r in rows]), settings, None)
            outputs += [Output(text=text) for text in texts]
        return GENERATION.metrics(pairs, outputs, [], False, info)


class CausalLogits(torch.nn.Module):
    """(input_ids, attention_mask) → next-token logits: what the ONNX export traces. Positions
    count from each row's first kept token, as generation counts them for left-padded prompts
    (and computed here, not sliced from a table at the traced length)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=False,
        ).logits


def write_onnx_logits(model: torch.nn.Module, path: Path, vocab: int) -> dict[str, Any]:
    """model.onnx (dynamic batch and length) checked against PyTorch with onnxruntime on
    other shapes, at the positions the attention mask keeps; ExportMismatchError beyond
    the tolerance."""
    import warnings

    import numpy as np
    import onnxruntime

    module = CausalLogits(model.cpu().eval())
    generator = torch.Generator().manual_seed(0)

    def tokens(batch: int, length: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, vocab, (batch, length), generator=generator)
        attention = torch.ones_like(ids)
        attention[0, : length // 2] = 0  # one left-padded row, as generation pads prompts
        return {"input_ids": ids, "attention_mask": attention}

    axes = {"batch": 0, "tokens": 1}
    dynamic = {n: {v: k for k, v in axes.items()} for n in ("input_ids", "attention_mask")}
    with warnings.catch_warnings():
        # The TorchScript exporter: the torch.export one needs onnxscript, which we do not ship.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(tokens(*EXPORT_TRACE_SHAPE).values()),
            str(path),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=list(GENERATION.export_outputs),
            dynamic_axes={**dynamic, GENERATION.export_outputs[0]: {0: "batch", 1: "tokens"}},
            opset_version=OPSET_VERSION,
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    max_diff = 0.0
    for shape in EXPORT_CHECK_SHAPES:
        inputs = tokens(*shape)
        with torch.inference_mode():
            expected = module(**inputs).float().numpy()
        got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
        kept = inputs["attention_mask"].numpy().astype(bool)
        max_diff = max(max_diff, float(np.abs(got - expected)[kept].max()))
    if not max_diff <= LOGITS_TOLERANCE:  # also catches NaN
        raise ExportMismatchError(
            f"ONNX logits differ from PyTorch by up to {max_diff:.3g} "
            f"(tolerance {LOGITS_TOLERANCE:g})"
        )
    return {
        "max_abs_diff": max_diff,
        "tolerance": LOGITS_TOLERANCE,
        "opset": OPSET_VERSION,
        "inputs": ["input_ids", "attention_mask"],
        "outputs": list(GENERATION.export_outputs),
    }


def export_generator(name: str, model_type_id: str, artifacts: Path, out_dir: Path) -> Path:
    """The version as a zip: merged/ (safetensors, config and tokenizer: what
    AutoModelForCausalLM / AutoModelForSeq2SeqLM.from_pretrained reads), adapter/ (the LoRA
    adapter alone, peft's format, when trained with LoRA) and config.json (how to prompt it)."""
    checkpoint = find_checkpoint(artifacts)
    config = checkpoint.meta[CONFIG_KEY]
    predictor = GeneratorPredictor(checkpoint)
    staging = out_dir / f"{name}.export"
    shutil.rmtree(staging, ignore_errors=True)
    predictor.model.to("cpu").save_pretrained(str(staging / MERGED_DIR))
    predictor.tokenizer.save_pretrained(str(staging / MERGED_DIR))
    if (checkpoint.path / ADAPTER_DIR).is_dir():
        shutil.copytree(checkpoint.path / ADAPTER_DIR, staging / ADAPTER_DIR)
    onnx = None
    if config["architecture"] != SEQ2SEQ:
        vocab = int(predictor.model.config.vocab_size)
        try:
            onnx = write_onnx_logits(predictor.model, staging / ONNX_FILE, vocab)
        except ExportMismatchError as error:
            # Some architectures trace shape-dependent constants (BERT used as a decoder);
            # the merged model is the export that matters, so it ships without the ONNX file.
            (staging / ONNX_FILE).unlink(missing_ok=True)
            onnx = {"left_out": str(error)}
    (staging / CONCEPTS_FILE).write_text("[]")  # a text generator predicts no concepts
    gguf_note = None
    try:
        write_gguf(predictor.model, predictor.tokenizer, staging / MERGED_DIR, staging / GGUF_FILE)
    except GgufUnsupported as error:
        (staging / GGUF_FILE).unlink(missing_ok=True)
        gguf_note = str(error)
    manifest = {
        "template": checkpoint.meta.get(TEMPLATE_KEY, name),
        "model_type_id": model_type_id,
        "base_model": config["base_model"],
        "architecture": config["architecture"],
        "prompt_format": config["prompt_format"],
        "prompt_separator": "\n" if config["prompt_format"] == "separator" else "",
        "max_length": config["max_length"],
        "lora": config.get("adapter"),
        "onnx": onnx,
        **({"gguf_left_out": gguf_note} if gguf_note else {}),
        "files": {
            **({ONNX_FILE: "next-token logits of input_ids and attention_mask (no cache)"}
               if (staging / ONNX_FILE).is_file() else {}),
            MERGED_DIR: "the fine-tuned model with LoRA merged: transformers from_pretrained",
            **({GGUF_FILE: "the merged model, float32, for llama.cpp or transformers "
                "(gguf_file=)"} if (staging / GGUF_FILE).is_file() else {}),
            **({ADAPTER_DIR: "the LoRA adapter alone: peft PeftModel.from_pretrained on the "
                "base model"} if (staging / ADAPTER_DIR).is_dir() else {}),
        },
    }  # fmt: skip
    (staging / EXPORT_CONFIG).write_text(json.dumps(manifest, indent=1))
    archive = out_dir / f"{name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                bundle.write(path, path.relative_to(staging).as_posix())
    shutil.rmtree(staging)
    return archive
