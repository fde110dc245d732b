"""Searches over an app's inputs and annotations: filters by concept, metadata, input type,
dataset and status, ranked by visual or text similarity over the base models' cached embeddings.

Filters are ANDed; the values listed inside one filter (concepts, input types, datasets) are
ORed, as on Clarifai. Similarity is exact: numpy below FAISS_MIN_VECTORS candidates, a faiss
inner-product index above (embeddings are unit vectors, so the inner product is the cosine).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import select

from modelmill.domain.errors import ApiError
from modelmill.services import AppScope, Env
from modelmill.services.embeddings import EmbeddingCache
from modelmill.services.examples import content_key, from_snapshot, image_example, text_example
from modelmill.services.inputs import NewInput, check_input, merged_labels
from modelmill.services.paging import Page
from modelmill.store.tables import Annotation, Dataset, DatasetInput, Input
from modelmill.training.contract import Example
from modelmill.training.embedders import default_embedder

FAISS_MIN_VECTORS = 20_000  # below this, one numpy matrix product is as fast as building an index
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
    vectors: np.ndarray, query: np.ndarray, count: int, use_faiss: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The `count` rows of `vectors` most similar to `query` (unit vectors): (indices, cosines),
    best first. Exact either way; faiss is chosen for large sets unless `use_faiss` says."""
    count = min(count, len(vectors))
    if count <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    if use_faiss is None:
        use_faiss = len(vectors) >= FAISS_MIN_VECTORS
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


def _similarities(
    env: Env, app: AppScope, similar: list[Similar], candidates: list[Input]
) -> tuple[dict[int, float], str]:
    """The score of each candidate (by pk), averaged over the ranks, and a note on what was
    left out. A score is (1 + cosine) / 2, which for unit vectors is 1 - (euclidean distance)² / 4:
    in [0, 1], 1 for the same content, and the same order under either of Clarifai's metrics."""
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
    of_kind = [r for r in candidates if r.kind == kind]
    keys = {r.id: content_key({"blob_key": r.blob_key, "text": r.text}) for r in of_kind}
    cache = EmbeddingCache(env, keys)
    known = cache.stored(embedder.id)
    missing = [r for r in of_kind if r.id not in known]
    note = ""
    if missing:
        embed_now, left = missing[:EMBED_DURING_SEARCH], missing[EMBED_DURING_SEARCH:]
        examples = [from_snapshot(env, _snapshot_item(r), []) for r in embed_now]
        for row, vector in zip(embed_now, cache(examples, embedder.id), strict=True):
            known[row.id] = vector
        if left:
            note = (
                f"{len(left)} {kind} inputs have no embedding yet and were not searched; "
                "they are embedded in the background, search again later."
            )
    searchable = [r for r in of_kind if r.id in known]
    if not searchable:
        return {}, note
    matrix = np.stack([known[r.id] for r in searchable]).astype(np.float32)
    query_cache = EmbeddingCache(env, {ex.input_id: key for ex, key in queries if key is not None})
    vectors = query_cache([ex for ex, _ in queries], embedder.id)
    total = np.zeros(len(searchable), np.float32)
    for vector in vectors:
        indices, scores = nearest(matrix, vector, len(searchable))
        total[indices] += (1.0 + scores) / 2.0
    total /= len(vectors)
    return {r.pk: float(s) for r, s in zip(searchable, total, strict=True)}, note


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
    env: Env, app: AppScope, query: SearchQuery, items: list[Hit], page: Page
) -> SearchResult:
    note = ""
    if query.similar:
        inputs = list({h.input.pk: h.input for h in items}.values())
        scores, note = _similarities(env, app, query.similar, inputs)
        items = [h for h in items if h.input.pk in scores]
        for hit in items:
            hit.score = scores[hit.input.pk]
        items.sort(key=lambda h: -h.score)
    items = [h for h in items if h.score >= query.min_value]
    start = (page.page - 1) * page.per_page
    return SearchResult(items[start : start + page.per_page], note)


def search_inputs(env: Env, app: AppScope, query: SearchQuery, page: Page) -> SearchResult:
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
    return _rank(env, app, query, hits, page)


def search_annotations(env: Env, app: AppScope, query: SearchQuery, page: Page) -> SearchResult:
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
    return _rank(env, app, query, hits, page)
