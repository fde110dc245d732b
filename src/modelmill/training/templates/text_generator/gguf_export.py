"""A fine-tuned Llama-family model (SmolLM2, Llama, and their kin) as one GGUF file, float32,
with its byte-level BPE tokenizer and chat template: what llama.cpp and transformers
(`gguf_file=`) load. Other architectures are left out (`GgufUnsupported`), saying why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

LLAMA_MODEL_TYPES = ("llama",)
TOP_LEVEL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
BLOCK_NAMES = {  # layer part in transformers → in GGUF
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
BLOCK_PREFIX_PARTS = 3  # model.layers.<i>.


class GgufUnsupported(Exception):
    """This model cannot be written as GGUF here; the message says why."""


def _rope_permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """GGML's rotary layout for q and k rows (pairs interleaved per head), the inverse of
    what readers undo when loading."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _rope_theta(config: Any) -> float:
    parameters = getattr(config, "rope_parameters", None) or {}
    return float(parameters.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)


def _gguf_name(key: str) -> str:
    if key in TOP_LEVEL_NAMES:
        return TOP_LEVEL_NAMES[key]
    parts = key.split(".")
    block, part = parts[2], ".".join(parts[BLOCK_PREFIX_PARTS:-1])
    if part not in BLOCK_NAMES:
        raise GgufUnsupported(f"no GGUF name for the tensor {key}")
    return f"blk.{block}.{BLOCK_NAMES[part]}.{parts[-1]}"


def write_gguf(model: nn.Module, tokenizer: Any, tokenizer_folder: Path, path: Path) -> None:
    """Writes `model` (a transformers Llama-family causal LM) to `path`; `tokenizer_folder`
    holds the saved tokenizer (its merges and special tokens are read from there)."""
    import gguf

    config = model.config
    if config.model_type not in LLAMA_MODEL_TYPES:
        raise GgufUnsupported(f"GGUF export covers Llama-family models, not {config.model_type}")
    if type(tokenizer).__name__ != "PreTrainedTokenizerFast" and not getattr(
        tokenizer, "is_fast", False
    ):
        raise GgufUnsupported("GGUF export needs a fast (tokenizer.json) BPE tokenizer")
    tensors = []  # named first: an unknown tensor stops the export before a file is opened
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and config.tie_word_embeddings:
            continue  # readers tie it to token_embd again
        weights = tensor.detach().float().cpu().numpy()
        if key.endswith("q_proj.weight"):
            weights = _rope_permute(weights, int(config.num_attention_heads))
        elif key.endswith("k_proj.weight"):
            weights = _rope_permute(weights, int(config.num_key_value_heads))
        tensors.append((_gguf_name(key), np.ascontiguousarray(weights)))
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(config.num_attention_heads))
    writer.add_head_count_kv(int(config.num_key_value_heads))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(int(config.vocab_size))
    vocab = tokenizer.get_vocab()
    tokens = [""] * max(len(vocab), int(config.vocab_size))
    for token, index in vocab.items():
        tokens[index] = token
    special = set(tokenizer.all_special_tokens)
    writer.add_tokenizer_model("gpt2")  # byte-level BPE
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    )
    gguf.SpecialVocab(tokenizer_folder, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer)
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)
    for name, weights in tensors:
        writer.add_tensor(name, weights)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
