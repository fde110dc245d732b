"""text-classifier templates: deep fine-tuning of Hugging Face encoders on labelled texts (a full
fine-tune of all-MiniLM-L6-v2 by default, Clarifai's HuggingFace_AdvancedConfig, GPT-Neo LoRA).
"""

from modelmill.training.templates.text_classifier.params import (
    AdvancedParams,
    FineTuneParams,
    GPTNeoLoraParams,
)
from modelmill.training.templates.text_classifier.template import TextClassifier

# Estimate coefficients (A s/text/epoch at 128 tokens, B s) per device: CPU for MiniLM from
# bench/finetune_step_time.py on the 2-core VM (GPT-Neo 125M scaled by its size); CUDA rough
# guesses, until the estimator issue calibrates them.
MINILM_ESTIMATE = {"cpu": (0.1, 5.0), "cuda": (0.001, 15.0)}
GPT_NEO_125M_ESTIMATE = {"cpu": (0.6, 10.0), "cuda": (0.004, 30.0)}

BERT_FINE_TUNE = TextClassifier(
    "HF_BERT_FullFineTune",
    FineTuneParams,
    "Full fine-tune of a BERT-style encoder (all-MiniLM-L6-v2 by default, shipped with "
    "modelmill) with a new classification layer.",
    MINILM_ESTIMATE,
    recommended=True,
)
HUGGINGFACE_ADVANCED = TextClassifier(
    "HuggingFace_AdvancedConfig",
    AdvancedParams,
    "Any Hugging Face sequence-classification model, configured with model_config, "
    "tokenizer_config, trainer_config and (for LoRA) peft_config, as on Clarifai.",
    MINILM_ESTIMATE,
)
GPT_NEO_125M_LORA = TextClassifier(
    "HF_GPTNeo_125m_lora",
    GPTNeoLoraParams,
    "GPT-Neo 125M with LoRA adapters (HuggingFace_AdvancedConfig defaults for it); needs the "
    "EleutherAI/gpt-neo-125m weights in the weights folder, the cache, or internet access.",
    GPT_NEO_125M_ESTIMATE,
)

__all__ = [
    "BERT_FINE_TUNE",
    "GPT_NEO_125M_LORA",
    "HUGGINGFACE_ADVANCED",
    "AdvancedParams",
    "FineTuneParams",
    "GPTNeoLoraParams",
    "TextClassifier",
]
