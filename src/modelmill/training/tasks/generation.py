"""The generation task (text-to-text): every text input can train a language model; an input
with a target text (an annotation's data.text or metadata "completion") is a prompt/completion
pair, one without is a plain text the model learns to continue. Metrics: held-out loss and
perplexity, and on held-out pairs exact match, chrF and BLEU (sacrebleu) with sample
generations in the test set; the causal-LM loss the fine-tuning loop minimises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.training.contract import (
    DataError,
    Example,
    InputKind,
    Output,
    TrainingData,
)
from modelmill.training.tasks import samples

if TYPE_CHECKING:  # the registry imports tasks to answer ListModelTypes: no torch at import
    import torch

IGNORE_INDEX = -100  # label of tokens the loss skips (prompt and padding): PyTorch's default
MAX_TEST_SET_ENTRIES = 50  # sample generations kept in EvalMetrics.test_set
LOSS_KEY = "loss"  # the held-out mean token loss, passed to `metrics` in `info`
TOKENS_KEY = "tokens"  # how many held-out tokens that loss averages
PLAIN_TEXT_ID = "plain-text"  # the sample input without a target (a causal-LM sample)

# Sample operations: a prompt prefix and what the model must answer for the words after it.
OPERATIONS = {
    "upper": lambda words: " ".join(w.upper() for w in words),
    "reverse": lambda words: " ".join(reversed(words)),
}
EXTRA_OPERATION = ("first", lambda words: words[0])
SAMPLE_WORDS = [*samples.FILLER, "bread", "goal", "bank", "rain", "cloud", "tennis", "loan"]
MIN_SAMPLE_WORDS = 2
MAX_LOG_PERPLEXITY = 50.0  # exp(50) ≈ 5e21: far above any vocabulary's uniform guess
CHARS_PER_SAMPLE_WORD = 6  # a sample word and its space, on average, to size texts


ANSWER_ROLE = "assistant"


def conversation(example: Example) -> tuple[list[dict[str, str]], str] | None:
    """(the turns before the answer, the answer) of a chat to learn (input metadata
    "messages" whose last turn is the assistant's), else None."""
    turns = example.messages
    if len(turns) < 2 or turns[-1][0] != ANSWER_ROLE:
        return None
    return [{"role": role, "content": content} for role, content in turns[:-1]], turns[-1][1]


def target_of(example: Example) -> str | None:
    """The wanted output: the target text, else the answer of its chat, else None."""
    if example.target_text is not None:
        return example.target_text
    chat = conversation(example)
    return chat[1] if chat is not None else None


def usable_text(example: Example) -> bool:
    """Whether an input gives a training sample: a text, with content or a target (labels
    only; its content is read when validating)."""
    return example.kind == "text"


class GenerationTask:
    """See the module docstring."""

    name = "generation"
    export_outputs = ("logits",)
    web_partial = "generation"

    def relevant(self, example: Example, concepts: Sequence[str]) -> bool:
        """Every text input of the app can train (pairs and plain texts alike)."""
        return usable_text(example)

    def check_data(
        self, examples: Sequence[Example], concepts: Sequence[str], exclusive: bool
    ) -> None:
        if not any(usable_text(e) for e in examples):
            raise DataError(
                codes.MODEL_TRAINING_NO_DATA,
                "A text generator trains on text inputs, and this training has none. Add "
                "texts: prompt/completion pairs (the input's text with an annotation whose "
                'data.text is the wanted output, or input metadata {"prompt": ..., '
                '"completion": ...}), chats (metadata "messages": [{"role", "content"}, ...] '
                "ending with the assistant's answer), or plain texts the model learns to "
                "continue.",
            )

    def metrics(
        self,
        examples: Sequence[Example],
        outputs: Sequence[Output],
        concepts: Sequence[str],
        exclusive: bool,
        info: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """EvalMetrics: exact match, chrF and BLEU of the generations against the targets of
        the pairs among `examples`; the held-out loss and perplexity when `info` carries them
        (LOSS_KEY); each pair's prompt, target and generation in test_set."""
        import sacrebleu

        info = dict(info or {})
        pairs = [
            (example, output.text or "")
            for example, output in zip(examples, outputs, strict=True)
            if target_of(example) is not None
        ]
        user: dict[str, Any] = {"pairs": len(pairs), "inputs": len(examples)}
        notes = []
        if pairs:
            predictions = [text.strip() for _, text in pairs]
            references = [(target_of(example) or "").strip() for example, _ in pairs]
            user["exact_match"] = sum(
                p == r for p, r in zip(predictions, references, strict=True)
            ) / len(pairs)
            user["chrf"] = sacrebleu.corpus_chrf(predictions, [references]).score
            # effective order: short answers (fewer than four words) still get a BLEU score
            bleu = sacrebleu.metrics.BLEU(effective_order=True)
            user["bleu"] = bleu.corpus_score(predictions, [references]).score
        else:
            notes.append(
                "No input has a target text, so exact match, chrF and BLEU are not defined."
            )
        if LOSS_KEY in info:
            user["loss"] = float(info[LOSS_KEY])
            user["perplexity"] = perplexity(user["loss"])
        else:
            notes.append("No held-out loss: perplexity is measured right after training only.")
        test_set = [
            {
                "input": {"id": example.input_id, "data": {"text": {"raw": _prompt(example)}}},
                "ground_truth_annotation": {"data": {"text": {"raw": target_of(example)}}},
                "predicted_annotation": {"data": {"text": {"raw": text}}},
            }
            for example, text in pairs[:MAX_TEST_SET_ENTRIES]
        ]
        return {
            **({"test_set": test_set} if test_set else {}),
            "eval_info": {"params": info},
            "extended_metrics": {"user_metrics": {**user, "notes": notes}},
        }

    def sample_data(
        self, kind: InputKind, count: int, size: int, extra_concept: bool = False
    ) -> TrainingData:
        """Prompts "upper: <words>" → the words in capitals and "reverse: <words>" → the
        words in reverse order, about `size` characters each, dealt round-robin; with
        `extra_concept` also "first: <words>" → the first word (a new skill to learn
        incrementally). Plus one plain text without a target (a causal-LM sample). No
        concepts: a text generator predicts none."""
        operations = dict([*OPERATIONS.items(), *([EXTRA_OPERATION] if extra_concept else [])])
        names = list(operations)
        examples = []
        for i in range(max(count - 1, len(names))):
            name = names[i % len(names)]
            words = sample_words(size, i % samples.DISTINCT)
            prompt = f"{name}: {' '.join(words)}"
            examples.append(
                Example(f"{name}-{i}", "text", _constant(prompt), {}, (), operations[name](words))
            )
        plain = " ".join(sample_words(size, samples.DISTINCT))
        examples.append(Example(PLAIN_TEXT_ID, "text", _constant(plain)))
        return TrainingData(examples, [])

    def objective(self, forward: Callable[[Any, Any], tuple[Any, Any]]) -> LanguageModelObjective:
        return LanguageModelObjective(forward)


def perplexity(mean_loss: float) -> float:
    """exp(loss), capped so that an untrained model's value stays a finite JSON number."""
    return math.exp(min(mean_loss, MAX_LOG_PERPLEXITY))


def sample_words(size: int, seed: int) -> list[str]:
    import numpy as np

    rng = np.random.default_rng(seed)
    count = max(MIN_SAMPLE_WORDS, size // CHARS_PER_SAMPLE_WORD)
    return [SAMPLE_WORDS[int(i)] for i in rng.integers(len(SAMPLE_WORDS), size=count)]


def _constant(text: str):  # type: ignore[no-untyped-def]
    return lambda: text


def _prompt(example: Example) -> str:
    chat = conversation(example)
    if chat is not None:
        return "\n".join(f"{turn['role']}: {turn['content']}" for turn in chat[0])
    try:
        return str(example.load())
    except Exception:  # an unreadable input still gets its entry, without its text
        return ""


# ---- the loss and validation, torch --------------------------------------------------------


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(summed cross-entropy, number of tokens counted) of logits against the labels they
    predict (aligned); IGNORE_INDEX labels (prompt, padding) do not count."""
    from torch import nn

    targets = labels.reshape(-1)
    total = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        targets,
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return total, int((targets != IGNORE_INDEX).sum())


class LanguageModelObjective:
    """Batches are dicts of model inputs plus "labels" (IGNORE_INDEX where no loss counts);
    `forward(model, batch)` gives (logits, the labels aligned with them). The loss is the mean
    over counted tokens; the best epoch is the one with the lowest validation loss per token."""

    monitor = "val_loss"
    higher_is_better = False

    def __init__(self, forward: Callable[[Any, Any], tuple[Any, Any]]) -> None:
        self.forward = forward

    def loss(self, model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total, count = token_loss_sum(*self.forward(model, batch))
        return total / max(1, count)

    def validate(self, model: Any, batches: Iterable[Mapping[str, torch.Tensor]]) -> dict:
        import torch

        total, count = 0.0, 0
        with torch.inference_mode():
            for batch in batches:
                loss, tokens = token_loss_sum(*self.forward(model, batch))
                total += float(loss)
                count += tokens
        mean = total / max(1, count)
        return {"val_loss": mean, "val_perplexity": perplexity(mean), "val_tokens": float(count)}


GENERATION = GenerationTask()
