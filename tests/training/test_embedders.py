"""Base embedders: the packaged MiniLM and EfficientNet-Lite0, and loading from local folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from modelmill.training.contract import Output
from modelmill.training.embedders import (
    CACHE_KEY_LENGTH,
    EmbedderWeightsError,
    TrainedEmbedder,
    cache_key,
    default_embedder,
    get_embedder,
    map_state_dict_by_position,
    register_embedder,
    resolve_model_dir,
    sentence_transformer_embedder,
)


def test_similar_sentences_are_closer_than_unrelated_ones():
    embedder = default_embedder("text")
    assert (embedder.id, embedder.dim, embedder.input_kind) == ("all-minilm-l6-v2", 384, "text")
    cat, kitten, stocks = embedder.embed(
        ["A cat sits on the mat.", "A kitten is lying on a rug.", "Share prices fell sharply."]
    )
    assert cat @ kitten > cat @ stocks + 0.3
    np.testing.assert_allclose(np.linalg.norm([cat, kitten, stocks], axis=1), 1.0, atol=1e-5)


def test_text_embeddings_do_not_depend_on_batch_order():
    embedder = get_embedder("all-minilm-l6-v2")
    texts = ["short", "a much longer sentence about the weather in spring", "mid length text"]
    together = embedder.embed(texts)
    alone = np.concatenate([embedder.embed([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_image_embedder_recognises_the_sample_photos():
    from sklearn.datasets import load_sample_images
    from timm.data import ImageNetInfo

    embedder = default_embedder("image")
    china, flower = (Image.fromarray(a) for a in load_sample_images().images)
    embeddings = embedder.embed([china, flower, flower.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    assert embeddings.shape == (3, 1280) and embeddings.dtype == np.float32
    assert embeddings[1] @ embeddings[2] > embeddings[0] @ embeddings[1]
    # The mapped ImageNet head must make sense of the photos: that checks the weight mapping.
    info = ImageNetInfo()
    top5 = [
        {info.index_to_description(i) for i in np.argsort(-logits)[:5]}
        for logits in embedder.logits([china, flower])
    ]
    assert {"palace", "monastery"} & top5[0]
    assert "daisy" in top5[1]


def test_positional_mapping_refuses_weights_of_another_shape():
    target = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2)}
    mapped = map_state_dict_by_position({"x": torch.ones(2, 3), "y": torch.ones(2)}, target, "w")
    assert list(mapped) == ["a.weight", "a.bias"]
    with pytest.raises(EmbedderWeightsError, match="does not fit"):
        map_state_dict_by_position({"x": torch.ones(3, 2), "y": torch.ones(2)}, target, "w")
    with pytest.raises(EmbedderWeightsError, match="tensors"):
        map_state_dict_by_position({"x": torch.ones(2, 3)}, target, "w")


@pytest.fixture
def tiny_sentence_transformer(tmp_path):
    """A random two-layer BERT saved like a sentence-transformers model folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path / "sentence-transformer"
    folder.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "dog", "sat", "ran"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 16, "pooling_mode_mean_tokens": True})
    )
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32}))
    return folder


def test_embedder_loads_from_a_local_sentence_transformer_folder(tiny_sentence_transformer):
    embedder = sentence_transformer_embedder("tiny", tiny_sentence_transformer)
    assert (embedder.dim, embedder.pooling, embedder.max_length) == (16, "mean", 32)
    vectors = embedder.embed(["the cat sat", "the dog ran", "the cat sat"])
    assert vectors.shape == (3, 16)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # The folder's content is the version: another weight file gives another cache key.
    version = embedder.version
    assert version.startswith("sha256:")
    (tiny_sentence_transformer / "model.safetensors").write_bytes(b"changed")
    assert sentence_transformer_embedder("tiny", tiny_sentence_transformer).version != version


def test_model_dir_resolves_from_a_hugging_face_style_cache(tmp_path, tiny_sentence_transformer):
    revision = "0" * 40
    repo = tmp_path / "cache" / "models--acme--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for path in tiny_sentence_transformer.rglob("*"):
        if path.is_file():
            target = snapshot / path.relative_to(tiny_sentence_transformer)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    resolved = resolve_model_dir("acme/tiny", cache_dir=tmp_path / "cache")
    assert resolved == snapshot
    assert sentence_transformer_embedder("acme/tiny", resolved).embed(["the cat"]).shape == (1, 16)
    assert resolve_model_dir(str(tiny_sentence_transformer)) == tiny_sentence_transformer


def test_unknown_embedder_names_the_known_ones():
    with pytest.raises(KeyError, match="all-minilm-l6-v2"):
        get_embedder("nope")


class MeanColour:
    """A predictor whose embedding is an image's mean colour, scaled: as a template's is read."""

    dim = 3

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def predict(self, examples, params):
        return [
            Output(embedding=self.scale * np.asarray(e.load(), np.float32).mean(axis=(0, 1)))
            for e in examples
        ]


def test_trained_embedders_of_one_model_id_in_two_apps_stay_apart():
    loads = []

    def embedder(app: str, scale: float) -> TrainedEmbedder:
        def load() -> MeanColour:
            loads.append(app)
            return MeanColour(scale)

        return TrainedEmbedder(f"ada/{app}/emb@v1", f"{app}-digest" * 8, "image", load)

    first = register_embedder(embedder("shop", 1.0))
    second = register_embedder(embedder("lab", 2.0))
    assert get_embedder("ada/shop/emb@v1") is first and get_embedder("ada/lab/emb@v1") is second
    assert register_embedder(embedder("shop", 3.0)) is first  # a scoped id names fixed artifacts
    assert cache_key(first) != cache_key(second)
    assert max(len(cache_key(first)), len(cache_key(second))) <= CACHE_KEY_LENGTH
    assert loads == []  # weights load on first use
    red = Image.new("RGB", (4, 4), (200, 0, 0))
    np.testing.assert_allclose(first.embed([red]), [[200.0, 0.0, 0.0]])
    np.testing.assert_allclose(second.embed([red]), [[400.0, 0.0, 0.0]])
    assert second.dim == 3 and first.embed([]).shape == (0, 3) and sorted(loads) == ["lab", "shop"]
