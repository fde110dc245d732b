"""Texts → token sequences for a language model: the prompt format (the tokenizer's chat template,
a newline after the prompt, or none for plain texts), loss only on completion tokens, truncation
of over-long samples, packing of short ones, padded batches, and the held-out split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from modelmill.training.contract import Example
from modelmill.training.tasks.generation import (
    ANSWER_ROLE,
    IGNORE_INDEX,
    conversation,
    target_of,
)
from modelmill.training.templates.text_generator.model import SEQ2SEQ, end_token_id

PromptFormat = Literal["chat", "separator", "plain"]
PROMPT_SEPARATOR = "\n"  # between a prompt and its completion when there is no chat template
MIN_SEQUENCE_TOKENS = 2  # a causal sample needs a token to read and one to predict


@dataclass(frozen=True)
class Sample:
    """One training sequence: token ids and, per position, the label the loss reads
    (IGNORE_INDEX for prompt tokens). For encoder-decoders `labels` are the target ids."""

    input_ids: list[int]
    labels: list[int]

    @property
    def counted(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def prompt_format(tokenizer: Any, has_pairs: bool, use_chat_template: bool) -> PromptFormat:
    """How prompts are laid out, decided once per training and kept with the version."""
    if not has_pairs:
        return "plain"
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        return "chat"
    return "separator"


Turns = list[dict[str, str]]  # chat turns: {"role": ..., "content": ...}


def history_text(tokenizer: Any, turns: Turns, layout: PromptFormat) -> str:
    """What the model reads before it answers, for chat turns (training and prediction
    alike): the chat template with the assistant's turn opened, or the turns' contents one per
    line and a separator (no chat template), or the bare text (plain texts only)."""
    if layout == "chat":
        return str(tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False))
    text = "\n".join(turn["content"] for turn in turns)
    return text + PROMPT_SEPARATOR if layout == "separator" else text


def prompt_text(tokenizer: Any, prompt: str, layout: PromptFormat) -> str:
    """What the model reads before answering one prompt."""
    return history_text(tokenizer, [{"role": "user", "content": prompt}], layout)


def example_prompt(tokenizer: Any, example: Example, layout: PromptFormat) -> str:
    """The prompt of an input: the turns before its chat's answer, or its text."""
    chat = conversation(example)
    if chat is not None:
        return history_text(tokenizer, chat[0], layout)
    return prompt_text(tokenizer, str(example.load()), layout)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _completion_ids(
    tokenizer: Any, turns: Turns, head: str, target: str, layout: PromptFormat
) -> list[int]:
    if layout == "chat":
        answered = [*turns, {"role": ANSWER_ROLE, "content": target}]
        full = str(tokenizer.apply_chat_template(answered, tokenize=False))
        if full.startswith(head):  # the template's own end-of-turn tokens follow the answer
            return _encode(tokenizer, full[len(head) :])
    return [*_encode(tokenizer, target), end_token_id(tokenizer)]


def causal_samples(
    tokenizer: Any,
    text: str,
    target: str | None,
    layout: PromptFormat,
    max_length: int,
    turns: Turns | None = None,
) -> list[Sample]:
    """A pair (or a chat: `turns` before the answer `target`) → one sample, loss on the
    completion only; an over-long pair keeps the end of its prompt (at least half the length
    when the completion is long) and the start of its completion. A plain text → pieces of at
    most max_length tokens, loss on every token."""
    if target is None:
        ids = [*_encode(tokenizer, text), end_token_id(tokenizer)]
        pieces = [ids[start : start + max_length] for start in range(0, len(ids), max_length)]
        return [Sample(p, list(p)) for p in pieces if len(p) >= MIN_SEQUENCE_TOKENS]
    turns = turns if turns is not None else [{"role": "user", "content": text}]
    head = history_text(tokenizer, turns, layout)
    prompt_ids = _encode(tokenizer, head)
    completion = _completion_ids(tokenizer, turns, head, target, layout)
    if len(prompt_ids) + len(completion) > max_length:
        keep = min(len(prompt_ids), max(max_length - len(completion), max_length // 2))
        prompt_ids = prompt_ids[len(prompt_ids) - keep :]
        completion = completion[: max_length - keep]
    return [Sample([*prompt_ids, *completion], [IGNORE_INDEX] * len(prompt_ids) + completion)]


def seq2seq_samples(tokenizer: Any, text: str, target: str | None, max_length: int) -> list[Sample]:
    """A pair → encoder input and target ids (the tokenizer's special tokens included); an
    encoder-decoder learns nothing from a plain text, so that gives none."""
    if target is None:
        return []
    encode = lambda s: list(  # noqa: E731
        tokenizer(s, truncation=True, max_length=max_length)["input_ids"]
    )
    return [Sample(encode(text), encode(target))]


def samples_of(
    tokenizer: Any,
    examples: Sequence[Example],
    layout: PromptFormat,
    max_length: int,
    architecture: str,
) -> list[list[Sample]]:
    """Each example's samples (empty when it gives none): chats, pairs and plain texts."""
    result = []
    for example in examples:
        chat = conversation(example)
        if architecture == SEQ2SEQ:
            text = history_text(tokenizer, chat[0], "plain") if chat else str(example.load())
            result.append(seq2seq_samples(tokenizer, text, target_of(example), max_length))
        elif chat is not None:
            result.append(causal_samples(tokenizer, "", chat[1], layout, max_length, chat[0]))
        else:
            result.append(
                causal_samples(tokenizer, example.load(), example.target_text, layout, max_length)
            )
    return result


def pack(samples: Sequence[Sample], max_length: int) -> list[Sample]:
    """Consecutive samples joined while they fit in max_length tokens (each already ends with
    its end token), so fewer padding tokens are computed. Attention spans the whole pack, as
    in common causal-LM packing; the loss positions stay each sample's own."""
    packs: list[Sample] = []
    ids: list[int] = []
    labels: list[int] = []
    for sample in samples:
        if ids and len(ids) + len(sample.input_ids) > max_length:
            packs.append(Sample(ids, labels))
            ids, labels = [], []
        ids, labels = [*ids, *sample.input_ids], [*labels, *sample.labels]
    if ids:
        packs.append(Sample(ids, labels))
    return packs


def collate(samples: Sequence[Sample], pad_id: int, architecture: str) -> dict[str, torch.Tensor]:
    """A right-padded batch: input_ids, attention_mask and labels (IGNORE_INDEX on padding)."""
    width = max(len(s.input_ids) for s in samples)
    input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(samples), width), dtype=torch.long)
    label_width = width if architecture != SEQ2SEQ else max(len(s.labels) for s in samples)
    labels = torch.full((len(samples), label_width), IGNORE_INDEX, dtype=torch.long)
    for row, sample in enumerate(samples):
        input_ids[row, : len(sample.input_ids)] = torch.tensor(sample.input_ids)
        attention[row, : len(sample.input_ids)] = 1
        labels[row, : len(sample.labels)] = torch.tensor(sample.labels)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def _stable_key(input_id: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{input_id}".encode()).digest()


def split_held_out(
    examples: Sequence[Example], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Row indexes (train, held out): `fraction` of the pairs and of the plain texts each (at
    least one of a kind with two or more), chosen by input id and seed only, so a resumed job
    gets the same split."""
    if fraction <= 0 or len(examples) < 2:
        return list(range(len(examples))), []
    train: list[int] = []
    held: list[int] = []
    for pairs in (True, False):
        rows = [r for r, e in enumerate(examples) if (target_of(e) is not None) == pairs]
        rows.sort(key=lambda r: _stable_key(examples[r].input_id, seed))
        count = min(len(rows) - 1, max(1, round(fraction * len(rows)))) if len(rows) > 1 else 0
        held += rows[:count]
        train += rows[count:]
    return sorted(train), sorted(held)
