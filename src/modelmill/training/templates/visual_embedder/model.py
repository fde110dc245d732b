"""The torch side of the visual-embedder templates: the network (EfficientNet-Lite0's pooled
features → a linear layer → L2 normalisation), the metric-learning objective (ArcFace, or a
multi-similarity loss on mined pairs; pytorch-metric-learning), training on the shared loop
with class-balanced batches, the predictor and the ONNX export.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from torch import nn

from modelmill.training.checkpoint_keys import (
    CONCEPTS_KEY,
    CONFIG_KEY,
    FINGERPRINT_KEY,
    PARAMS_KEY,
    TEMPLATE_KEY,
    VALIDATION_IDS_KEY,
)
from modelmill.training.checkpoints import Checkpoint, find_checkpoint
from modelmill.training.contract import (
    DataError,
    Example,
    Output,
    TrainContext,
    TrainingData,
    TrainResult,
)
from modelmill.training.data import (
    ImageBatches,
    batched,
    flip_images,
    label_targets,
    normalise_images,
    split_train_validation,
    square_pixels,
    training_batches,
)
from modelmill.training.finetune.fields import LoopSettings
from modelmill.training.finetune.loop import LoopData, checkpoint_saver, fit
from modelmill.training.finetune.onnx_export import export_zip
from modelmill.training.finetune.resume import (
    artifacts_from_best,
    continued_state,
    plan_resume,
    training_fingerprint,
)
from modelmill.training.tasks.embedding import EMBEDDING, UNSEEN_KEY, first_concept
from modelmill.training.templates.visual_classifier.backbones import EFFICIENTNET_LITE0
from modelmill.training.templates.visual_classifier.model import (
    create_model,
    normalisation,
    train_keeping_batchnorm_statistics,
)
from modelmill.training.weights import WeightsLocation

BACKBONE = EFFICIENTNET_LITE0
ARCFACE, MULTI_SIMILARITY = "arcface", "multi_similarity"
PER_CLASS = 2  # images of one concept next to each other in a batch: every batch has pairs
CLASS_CENTRES_KEY = "loss_head.W"  # ArcFace's (embedding, concepts) matrix: a column each
PREDICT_BATCH_SIZE = 32
EXPORT_TRACE_BATCH, EXPORT_CHECK_BATCHES = 2, (3, 1)
MONITOR = "val_recall_at_1"


class EmbeddingNet(nn.Module):
    """Normalised (0-1 scaled, then mean/std) images → L2-normalised embeddings."""

    def __init__(self, backbone: nn.Module, features: int, size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = nn.Linear(features, size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.neck(self.backbone(images)), dim=1)


class Trainable(nn.Module):
    """The network and the loss's own parameters (ArcFace's concept centres), trained together."""

    def __init__(self, net: EmbeddingNet, loss_head: nn.Module, miner: Any) -> None:
        super().__init__()
        self.net = net
        self.loss_head = loss_head
        self.miner = miner

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of a batch: called as the module, as DDP needs (see finetune/loop.py)."""
        embeddings = self.net(images)
        pairs = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss_head(embeddings, labels, pairs)


def build(loss: str, p: Any, classes: int, pretrained: WeightsLocation | None) -> Trainable:
    from pytorch_metric_learning import losses, miners

    backbone: Any = create_model(BACKBONE, 0, pretrained)  # num_classes 0: pooled features
    net = EmbeddingNet(backbone, backbone.num_features, p.embedding_size)
    if loss == ARCFACE:
        head = losses.ArcFaceLoss(classes, p.embedding_size, margin=p.margin, scale=p.scale)
        return Trainable(net, head, None)
    head = losses.MultiSimilarityLoss(alpha=p.alpha, beta=p.beta, base=p.margin)
    return Trainable(net, head, miners.MultiSimilarityMiner(epsilon=p.miner_epsilon))


def recall_at_1(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of inputs whose nearest other input has the same label (0 with fewer than two)."""
    if len(labels) < 2:
        return 0.0
    similarity = embeddings @ embeddings.T
    similarity.fill_diagonal_(-float("inf"))
    return float((labels[similarity.argmax(dim=1)] == labels).float().mean())


class MetricObjective:
    """Batches are (normalised images, concept indices). The best epoch has the highest
    recall@1 among the validation images (ties keep the earlier epoch)."""

    monitor = MONITOR
    higher_is_better = True

    def loss(self, model: Trainable, batch: Any) -> torch.Tensor:
        images, labels = batch
        return model(images, labels)

    def validate(self, model: Trainable, batches: Iterable[Any]) -> dict[str, float]:
        vectors, labels, total, count = [], [], 0.0, 0
        with torch.inference_mode():
            for images, batch_labels in batches:
                embeddings = model.net(images)
                vectors.append(embeddings)
                labels.append(batch_labels)
                pairs = model.miner(embeddings, batch_labels) if model.miner is not None else None
                total += float(model.loss_head(embeddings, batch_labels, pairs)) * len(images)
                count += len(images)
        if not vectors:
            return {MONITOR: 0.0, "val_loss": 0.0}
        return {
            MONITOR: recall_at_1(torch.cat(vectors), torch.cat(labels)),
            "val_loss": total / max(1, count),
        }


def _stable(text: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{text}".encode()).digest()


def unseen_concepts(concepts: Sequence[str], fraction: float, seed: int) -> list[str]:
    """Concepts kept out of training to measure retrieval on unseen ones: round(fraction ·
    concepts), at least one when fraction > 0, always leaving two to train on."""
    if fraction <= 0 or len(concepts) < 3:
        return []
    count = min(len(concepts) - 2, max(1, round(fraction * len(concepts))))
    return sorted(concepts, key=lambda c: _stable(c, seed))[:count]


def balanced_order(
    rows: Sequence[int], labels: Sequence[int], generator: torch.Generator
) -> list[int]:
    """The rows shuffled in runs of PER_CLASS images of one concept, so that every batch has
    positive pairs for the loss (a multi-similarity loss learns nothing from a batch without)."""
    by_class: dict[int, list[int]] = {}
    for row in rows:
        by_class.setdefault(labels[row], []).append(row)
    runs = []
    for members in by_class.values():
        permutation = torch.randperm(len(members), generator=generator).tolist()
        shuffled = [members[i] for i in permutation]
        runs += [shuffled[i : i + PER_CLASS] for i in range(0, len(shuffled), PER_CLASS)]
    order = torch.randperm(len(runs), generator=generator).tolist()
    return [row for i in order for row in runs[i]]


def train_embedder(
    name: str,
    loss: str,
    ctx: TrainContext,
    data: TrainingData,
    p: Any,
    find_pretrained: Callable[[], WeightsLocation | None],
) -> TrainResult:
    """Fine-tunes the backbone and the embedding layer with the metric-learning loss; returns
    the artifacts of the epoch with the best validation recall@1. Incremental training starts
    from an earlier version's network (and ArcFace centres of the concepts it kept)."""
    concepts = list(data.concepts)
    EMBEDDING.check_data(data.examples, concepts, False)
    unseen = unseen_concepts(concepts, p.unseen_concepts_fraction, p.seed)
    trained = [c for c in concepts if c not in unseen]
    examples = [
        e for e in data.examples if e.kind == "image" and first_concept(e, concepts) in trained
    ]
    held_unseen = [e.input_id for e in data.examples if first_concept(e, concepts) in set(unseen)]
    labels = [trained.index(str(first_concept(e, concepts))) for e in examples]
    input_ids = [e.input_id for e in examples]
    one_hot = label_targets(examples, trained)
    train_rows, val_rows = split_train_validation(input_ids, one_hot, p.validation_fraction, p.seed)
    if len({labels[r] for r in train_rows}) < 2:
        raise DataError(
            codes.MODEL_TRAINING_INSUFFICIENT_DATA,
            "After holding inputs out, fewer than two concepts are left to train on; label "
            "more images, or lower validation_fraction or unseen_concepts_fraction.",
        )
    fingerprint = training_fingerprint(name, p.model_dump(), concepts, input_ids)
    plan = plan_resume(ctx.resume_from, ctx.warm_start, name, fingerprint)
    torch.manual_seed(p.seed)
    pretrained = None if plan or p.pretrained_weights == "None" else find_pretrained()
    model = build(loss, p, len(trained), pretrained)
    if plan is not None:
        old = plan.checkpoint.model_state()
        if plan.continues:
            model.load_state_dict(old)
        else:
            _carry_over(model, old, plan.checkpoint.meta[CONFIG_KEY]["trained_concepts"], trained)
    model.to(ctx.device)
    mean, std = normalisation(BACKBONE)
    keep_statistics = plan is not None or pretrained is not None
    meta = {
        TEMPLATE_KEY: name,
        CONFIG_KEY: {
            "architecture": BACKBONE.architecture,
            "image_size": p.image_size,
            "mean": list(mean),
            "std": list(std),
            "embedding_size": p.embedding_size,
            "loss": loss,
            "trained_concepts": trained,
            UNSEEN_KEY: unseen,
        },
        CONCEPTS_KEY: concepts,
        PARAMS_KEY: p.model_dump(),
        FINGERPRINT_KEY: fingerprint,
        VALIDATION_IDS_KEY: [input_ids[r] for r in val_rows] + held_unseen,
    }
    save = checkpoint_saver(model, meta)
    images = ImageBatches(examples, p.image_size)
    label_tensor = torch.tensor(labels, device=ctx.device)
    steps = len(training_batches(train_rows, p.batch_size))

    def train_batches(generator: torch.Generator) -> Iterator[Any]:
        batches = training_batches(balanced_order(train_rows, labels, generator), p.batch_size)
        for rows, pixels in zip(batches, images.batches(batches), strict=True):
            pixels = flip_images(pixels, p.flip_probability, "horizontal", generator)
            yield normalise_images(pixels.to(ctx.device), mean, std), label_tensor[rows]

    def validation_batches() -> Iterator[Any]:
        batches = list(batched(val_rows, p.batch_size))
        for rows, pixels in zip(batches, images.batches(batches), strict=True):
            yield normalise_images(pixels.to(ctx.device), mean, std), label_tensor[rows]

    loop_data = LoopData(train_batches, steps, validation_batches if val_rows else None)
    state, optimizer_state = continued_state(ctx, plan)
    state = fit(
        ctx,
        model,
        MetricObjective(),
        loop_data,
        LoopSettings.of(p, False),
        save,
        state,
        optimizer_state,
        train_mode=train_keeping_batchnorm_statistics if keep_statistics else nn.Module.train,
    )
    return TrainResult(artifacts_from_best(ctx), state.stopped_at_cap, state.epochs_done)


def _carry_over(
    model: Trainable, old: dict[str, torch.Tensor], old_concepts: list[str], concepts: list[str]
) -> None:
    """Every tensor of the same name and shape, and ArcFace's centres (columns) of the
    concepts kept; new concepts keep their fresh centres."""
    state = model.state_dict()
    for key, tensor in state.items():
        if key not in old:
            continue
        if key == CLASS_CENTRES_KEY:
            for column, concept in enumerate(concepts):
                if concept in old_concepts:
                    tensor[:, column] = old[key][:, old_concepts.index(concept)]
        elif old[key].shape == tensor.shape:
            state[key] = old[key]
    model.load_state_dict(state)


class EmbedderPredictor:
    """A trained embedder, loaded once: an L2-normalised embedding per image."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        from types import SimpleNamespace

        self.meta = checkpoint.meta
        config = checkpoint.meta[CONFIG_KEY]
        self.image_size: int = config["image_size"]
        self.mean, self.std = config["mean"], config["std"]
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        params = SimpleNamespace(**checkpoint.meta[PARAMS_KEY])
        model = build(config["loss"], params, len(config["trained_concepts"]), None)
        model.load_state_dict(checkpoint.model_state())
        self.net = model.net.to(self.device).eval()

    @property
    def dim(self) -> int:
        return int(self.net.neck.out_features)

    def embed(self, examples: Sequence[Example]) -> np.ndarray:
        parts = [np.zeros((0, self.dim), np.float32)]
        for rows in batched(range(len(examples)), PREDICT_BATCH_SIZE):
            pixels = np.stack([square_pixels(examples[r].load(), self.image_size) for r in rows])
            images = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(self.device)
            with torch.inference_mode():
                vectors = self.net(normalise_images(images, self.mean, self.std))
            parts.append(vectors.float().cpu().numpy())
        return np.concatenate(parts)

    def predict(self, examples: Sequence[Example], params: dict[str, Any]) -> list[Output]:
        return [Output(embedding=vector) for vector in self.embed(examples)]

    def evaluate(self, template: str, data: TrainingData) -> dict[str, Any]:
        """Retrieval among the inputs held out of training (validation split and unseen
        concepts); among all inputs, saying so, when none were."""
        held_out = set(self.meta[VALIDATION_IDS_KEY])
        examples = [e for e in data.examples if e.input_id in held_out]
        split = "held out of training" if examples else "training inputs (none were held out)"
        examples = examples or list(data.examples)
        config = self.meta[CONFIG_KEY]
        info = {
            "template": template,
            "split": split,
            "loss": config["loss"],
            "embedding_size": config["embedding_size"],
            UNSEEN_KEY: config[UNSEEN_KEY],
        }
        outputs = self.predict(examples, {})
        return EMBEDDING.metrics(examples, outputs, self.meta[CONCEPTS_KEY], False, info)


class PixelEmbeddings(nn.Module):
    """RGB pixels 0-255 (N, 3, size, size) → embeddings: what the ONNX export traces."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: EmbeddingNet, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        pixel_scale = 255.0
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * pixel_scale)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * pixel_scale)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


def export_embedder(name: str, model_type_id: str, artifacts: Any, out_dir: Any) -> Any:
    predictor = EmbedderPredictor(find_checkpoint(artifacts))
    module = PixelEmbeddings(predictor.net, predictor.mean, predictor.std)
    size, generator = predictor.image_size, torch.Generator().manual_seed(0)

    def images(batch: int) -> dict[str, torch.Tensor]:
        pixels = torch.randint(0, 256, (batch, 3, size, size), generator=generator)
        return {"images": pixels.float()}

    config = {
        "template": name,
        "model_type_id": model_type_id,
        "architecture": BACKBONE.architecture,
        "input": f"images: float32 (batch, 3, {size}, {size}) RGB pixels 0-255; resize the "
        "shorter side to the size, then centre-crop",
        "output": f"embeddings: (batch, {predictor.dim}) L2-normalised",
        "image_size": size,
        "embedding_size": predictor.dim,
    }
    return export_zip(
        module,
        images(EXPORT_TRACE_BATCH),
        [images(batch) for batch in EXPORT_CHECK_BATCHES],
        {"images": {0: "batch"}},
        out_dir,
        name,
        config,
        predictor.meta[CONCEPTS_KEY],
        EMBEDDING.export_outputs,
    )
