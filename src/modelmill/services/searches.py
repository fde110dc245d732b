"""Searches over an app's inputs and annotations: filters by concept, metadata, input type,
dataset and status, ranked by visual or text similarity over the base models' cached embeddings
(the built-in one of the inputs' kind, or a trained embedder a rank names).

Filters are ANDed; the values listed inside one filter (concepts, input types, datasets) are
ORed, as on Clarifai. Similarity is exact: a numpy matrix product below FAISS_MIN_VECTORS
candidates, a faiss flat inner-product index above (embeddings are unit vectors, so the inner
product is the cosine); indexes are kept per set of contents, so a repeated search is cheap.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import select

from modelmill.domain.errors import ApiError
from modelmill.services import AppScope, Env
from modelmill.services.embedders import resolve_embedder_version
from modelmill.services.embeddings import EmbeddingCache
from modelmill.services.examples import content_key, from_snapshot, image_example, text_example
from modelmill.services.inputs import NewInput, check_input, merged_labels
from modelmill.services.paging import Page
from modelmill.store.tables import Annotation, Dataset, DatasetInput, Input
from modelmill.training.contract import Example
from modelmill.training.embedders import cache_key, default_embedder, get_embedder

# From this many distinct contents on, a kept faiss flat index answers faster than numpy's
# matrix product (1.3-1.6x at 20k-100k vectors, bench/RESULTS.md); below, numpy is as fast.
FAISS_MIN_VECTORS = 20_000
KEPT_INDEXES = 8  # VectorIndexes kept per server process
# Inputs without a cached embedding are embedded during the search up to this many; beyond it,
# the search covers the embedded ones and says how many it left out (the background job catches up).
EMBED_DURING_SEARCH = 512


@dataclass
class Condition:
    """One Clarifai Filter (or a label Rank): every part given must hold; `negate` inverts it."""

    concepts: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list)
    dataset_ids: list[str] = field(default_factory=list)
    status_code: int = 0
    negate: bool = False


@dataclass
class Similar:
    """A similarity rank: new content (image bytes or URL, text) or a stored input's id."""

    image_bytes: bytes | None = None
    image_url: str = ""
    text: str | None = None
    input_id: str = ""


@dataclass
class SearchQuery:
    conditions: list[Condition] = field(default_factory=list)
    similar: list[Similar] = field(default_factory=list)
    min_value: float = 0.0
    # A trained embedder model's version whose embeddings rank by similarity; empty: the
    # built-in embedder of the inputs' kind.
    embed_model_version_id: str = ""


@dataclass
class Hit:
    score: float
    input: Input
    labels: dict[str, Any]
    annotation: Annotation | None = None


@dataclass
class SearchResult:
    hits: list[Hit]
    note: str = ""  # what the search could not cover, for the reply's status description


# ---- matching ------------------------------------------------------------------------------------


def _contains(stored: Any, wanted: Any) -> bool:
    """Metadata match: every key of `wanted` is in `stored` with an equal (or containing) value."""
    if isinstance(wanted, dict):
        return isinstance(stored, dict) and all(
            k in stored and _contains(stored[k], v) for k, v in wanted.items()
        )
    return bool(stored == wanted)


def _label_concepts(labels: dict[str, Any]) -> list[dict[str, Any]]:
    found = list(labels.get("concepts", []))
    for region in labels.get("regions", []):
        found.extend(region["data"]["concepts"])
    return found


def _concept_matches(wanted: dict[str, Any], labels: list[dict[str, Any]]) -> bool:
    key = wanted.get("id") or ""
    name = wanted.get("name") or ""
    positive = float(wanted.get("value", 1.0)) > 0
    return any(
        ((key and c["id"] == key) or (not key and name and c.get("name", c["id"]) == name))
        and (float(c["value"]) > 0) == positive
        for c in labels
    )


def matches(condition: Condition, row: Input, labels: dict[str, Any], datasets: set[str]) -> bool:
    checks = []
    if condition.concepts:
        concepts = _label_concepts(labels)
        checks.append(any(_concept_matches(c, concepts) for c in condition.concepts))
    if condition.metadata:
        checks.append(_contains(row.metadata_ or {}, condition.metadata))
    if condition.kinds:
        checks.append(row.kind in condition.kinds)
    if condition.dataset_ids:
        checks.append(bool(datasets & set(condition.dataset_ids)))
    if condition.status_code:
        checks.append(row.status_code == condition.status_code)
    return all(checks) != condition.negate


# ---- similarity ----------------------------------------------------------------------------------


def nearest(
    vectors: np.ndarray, query: np.ndarray, count: int, use_faiss: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The `count` rows of `vectors` most similar to `query` (unit vectors): (indices, cosines),
    best first. Exact either way. A faiss index built for one query costs more than it saves
    (bench/search_nearest.py); VectorIndex keeps one instead."""
    count = min(count, len(vectors))
    if count <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    if use_faiss:
        import faiss  # a large import, needed only for large sets

        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        scores, indices = index.search(np.ascontiguousarray(query[None, :], np.float32), count)
        return indices[0].astype(np.int64), scores[0]
    scores = vectors @ query
    top = np.argpartition(-scores, count - 1)[:count]
    order = top[np.argsort(-scores[top], kind="stable")]
    return order, scores[order]


def _query_example(env: Env, app: AppScope, similar: Similar) -> tuple[Example, str | None]:
    """The rank's content as an Example, and its content key when it is a stored input."""
    if similar.input_id:
        with env.db.session() as session:
            row = session.scalar(
                select(Input).where(Input.app_pk == app.app_pk, Input.id == similar.input_id)
            )
        if row is None:
            raise ApiError(
                codes.INPUT_DOES_NOT_EXIST,
                f"Input '{similar.input_id}' to rank by does not exist in app '{app.app_id}'.",
            )
        return from_snapshot(env, _snapshot_item(row), []), content_key(_snapshot_item(row))
    spec = NewInput(
        id="query",
        image_bytes=similar.image_bytes,
        image_url=similar.image_url,
        text=similar.text,
    )
    checked = check_input(spec, env.settings)
    if checked.image is not None:
        return image_example("query", checked.image), None
    return text_example("query", checked.text or ""), None


class VectorIndex:
    """The unit vectors of distinct contents (rows in `keys` order), searched by inner product:
    a faiss flat index kept for large sets, a numpy matrix product below."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.keys = sorted(vectors)
        self.matrix = np.stack([vectors[k] for k in self.keys]).astype(np.float32)
        self.faiss_index: Any = None
        if len(self.keys) >= FAISS_MIN_VECTORS:
            import faiss  # a large import, needed only for large sets

            self.faiss_index = faiss.IndexFlatIP(self.matrix.shape[1])
            self.faiss_index.add(self.matrix)

    def best(self, queries: np.ndarray, count: int) -> dict[str, float]:
        """The `count` best contents' mean cosine over the query vectors."""
        if len(queries) == 1 and self.faiss_index is not None:
            cosines, indices = self.faiss_index.search(queries[:1], min(count, len(self.keys)))
            indices, cosines = indices[0], cosines[0]
        elif len(queries) == 1:
            indices, cosines = nearest(self.matrix, queries[0], count, use_faiss=False)
        else:  # several ranks: the mean cosine over them, so every content is scored
            mean = (self.matrix @ queries.T).mean(axis=1)
            indices = np.argsort(-mean, kind="stable")[:count]
            cosines = mean[indices]
        return {self.keys[i]: float(c) for i, c in zip(indices, cosines, strict=True)}


class VectorIndexCache:
    """Kept VectorIndexes by (embedder, set of contents): searching the same inputs again loads
    no vectors from the database and builds nothing. Least recently used dropped first."""

    def __init__(self, size: int = KEPT_INDEXES) -> None:
        self.size = size
        self._items: OrderedDict[str, VectorIndex] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, fingerprint: str) -> VectorIndex | None:
        with self._lock:
            if fingerprint in self._items:
                self._items.move_to_end(fingerprint)
            return self._items.get(fingerprint)

    def put(self, fingerprint: str, index: VectorIndex) -> None:
        with self._lock:
            self._items[fingerprint] = index
            if len(self._items) > self.size:
                self._items.popitem(last=False)


def _fingerprint(tag: str, keys: set[str]) -> str:
    return hashlib.sha256("\n".join([tag, *sorted(keys)]).encode()).hexdigest()


def _build_index(
    env: Env, kind: str, embedder_id: str, rows: list[Input], keys: dict[str, str]
) -> tuple[VectorIndex | None, str]:
    """An index over the rows' cached embeddings (computing up to EMBED_DURING_SEARCH missing
    ones), and a note when some were left out."""
    cache = EmbeddingCache(env, keys)
    known = cache.stored(embedder_id)
    missing = [r for r in rows if r.id not in known]
    note = ""
    if missing:
        embed_now, left = missing[:EMBED_DURING_SEARCH], missing[EMBED_DURING_SEARCH:]
        examples = [from_snapshot(env, _snapshot_item(r), []) for r in embed_now]
        for row, vector in zip(embed_now, cache(examples, embedder_id), strict=True):
            known[row.id] = vector
        if left:
            note = (
                f"{len(left)} {kind} inputs have no embedding yet and were not searched; "
                "search again later (uploads are embedded in the background by the built-in "
                f"embedders; each search embeds up to {EMBED_DURING_SEARCH} more)."
            )
    by_content = {keys[input_id]: vector for input_id, vector in known.items()}
    return (VectorIndex(by_content) if by_content else None), note


def _similarities(
    env: Env,
    app: AppScope,
    similar: list[Similar],
    candidates: list[Input],
    count: int,
    indexes: VectorIndexCache | None,
    embed_model_version_id: str = "",
) -> tuple[dict[int, float], str]:
    """The `count` best candidates' scores (by pk), averaged over the ranks, and a note on what
    was left out. A score is (1 + cosine) / 2, which for unit vectors is
    1 - (euclidean distance)² / 4: in [0, 1], 1 for the same content, and the same order under
    either of Clarifai's metrics."""
    queries = [_query_example(env, app, s) for s in similar]
    kinds = {example.kind for example, _ in queries}
    if len(kinds) > 1:
        raise ApiError(
            codes.SEARCH_INVALID_REQUEST,
            "Rank by images or by texts in one search, not both: they are compared in different "
            "embedding spaces.",
        )
    kind = kinds.pop()
    embedder = default_embedder(kind)  # type: ignore[arg-type]
    if embed_model_version_id:
        trained = resolve_embedder_version(env, app, embed_model_version_id)
        embedder = get_embedder(trained.embedder_id)
        if embedder.input_kind != kind:
            raise ApiError(
                codes.SEARCH_INVALID_REQUEST,
                f"Model '{trained.model_id}' embeds {embedder.input_kind} inputs; rank by "
                f"{embedder.input_kind}s to search with it, not by {kind}s.",
            )
    of_kind = [r for r in candidates if r.kind == kind]
    keys = {r.id: content_key({"blob_key": r.blob_key, "text": r.text}) for r in of_kind}
    fingerprint = _fingerprint(cache_key(embedder), set(keys.values()))
    index = indexes.get(fingerprint) if indexes is not None else None
    note = ""
    if index is None:
        index, note = _build_index(env, kind, embedder.id, of_kind, keys)
        if index is not None and not note and indexes is not None:
            indexes.put(fingerprint, index)  # only complete indexes: later searches may add
    if index is None:
        return {}, note
    query_cache = EmbeddingCache(env, {ex.input_id: key for ex, key in queries if key is not None})
    best = index.best(query_cache([ex for ex, _ in queries], embedder.id), count)
    return {r.pk: (1.0 + best[keys[r.id]]) / 2.0 for r in of_kind if keys[r.id] in best}, note


def _snapshot_item(row: Input) -> dict[str, Any]:
    return {"id": row.id, "kind": row.kind, "blob_key": row.blob_key, "text": row.text}


# ---- the searches --------------------------------------------------------------------------------


def _dataset_ids(session: Any, input_pks: Sequence[int]) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    rows = session.execute(
        select(DatasetInput.input_pk, Dataset.id)
        .join(Dataset, Dataset.pk == DatasetInput.dataset_pk)
        .where(DatasetInput.input_pk.in_(list(input_pks)))
    )
    for input_pk, dataset_id in rows:
        found.setdefault(input_pk, set()).add(dataset_id)
    return found


def _rank(
    env: Env,
    app: AppScope,
    query: SearchQuery,
    items: list[Hit],
    page: Page,
    indexes: VectorIndexCache | None,
    annotations_share_inputs: bool = False,
) -> SearchResult:
    note = ""
    if query.similar:
        inputs = list({h.input.pk: h.input for h in items}.values())
        # Hits past this page are never shown; annotations share inputs, so they score them all.
        wanted = page.page * page.per_page if not annotations_share_inputs else len(inputs)
        scores, note = _similarities(
            env, app, query.similar, inputs, wanted, indexes, query.embed_model_version_id
        )
        items = [h for h in items if h.input.pk in scores]
        for hit in items:
            hit.score = scores[hit.input.pk]
        items.sort(key=lambda h: -h.score)
    items = [h for h in items if h.score >= query.min_value]
    start = (page.page - 1) * page.per_page
    return SearchResult(items[start : start + page.per_page], note)


def search_inputs(
    env: Env,
    app: AppScope,
    query: SearchQuery,
    page: Page,
    indexes: VectorIndexCache | None = None,
) -> SearchResult:
    """PostInputsSearches: matching inputs, newest first, or most similar first when ranked."""
    with env.db.session() as session:
        rows = list(
            session.scalars(
                select(Input).where(Input.app_pk == app.app_pk).order_by(Input.pk.desc())
            )
        )
        pks = [r.pk for r in rows]
        labels = merged_labels(session, pks)
        datasets = _dataset_ids(session, pks)
    hits = [
        Hit(1.0, row, labels.get(row.pk, {}))
        for row in rows
        if all(
            matches(c, row, labels.get(row.pk, {}), datasets.get(row.pk, set()))
            for c in query.conditions
        )
    ]
    return _rank(env, app, query, hits, page, indexes)


def search_annotations(
    env: Env,
    app: AppScope,
    query: SearchQuery,
    page: Page,
    indexes: VectorIndexCache | None = None,
) -> SearchResult:
    """PostAnnotationsSearches: matching annotations (their own labels are matched), with their
    inputs; ranked by their inputs' similarity when asked."""
    with env.db.session() as session:
        rows = list(
            session.execute(
                select(Annotation, Input)
                .join(Input, Input.pk == Annotation.input_pk)
                .where(Annotation.app_pk == app.app_pk)
                .order_by(Annotation.pk.desc())
            )
        )
        datasets = _dataset_ids(session, sorted({i.pk for _, i in rows}))
    hits = [
        Hit(1.0, input_row, annotation.data or {}, annotation)
        for annotation, input_row in rows
        if all(
            matches(c, input_row, annotation.data or {}, datasets.get(input_row.pk, set()))
            for c in query.conditions
        )
    ]
    return _rank(env, app, query, hits, page, indexes, annotations_share_inputs=True)
