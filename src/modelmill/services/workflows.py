"""Workflows: graphs of trained model versions and base embedding models, checked when saved and
run node by node (through the prediction path of PostModelOutputs) by PostWorkflowResults."""

from __future__ import annotations

import hashlib
import io
import math
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime
from graphlib import CycleError, TopologicalSorter
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelmill.domain.errors import ApiError
from modelmill.domain.ids import check_id, new_id
from modelmill.services import AppScope, Env
from modelmill.services.inputs import MAX_BATCH, NewInput, check_input
from modelmill.services.models import find_version, model_concepts, newest_version
from modelmill.services.paging import Page
from modelmill.services.predictions import PredictorCache, input_kinds, predict, read_inputs
from modelmill.store.tables import Model, ModelVersion, Workflow
from modelmill.training.contract import Output, Region
from modelmill.training.embedders import default_embedder, embedder_ids, get_embedder
from modelmill.training.registry import MODEL_TYPES, find_template

# Clarifai's base workflow of apps made through the API; here it says what happens on upload.
DEFAULT_WORKFLOW_ID = "Universal"
MAX_NODES = 20  # Clarifai's limit of models in one workflow
MAX_INPUTS = 32  # Clarifai's limit of inputs in one PostWorkflowResults
IMAGE, TEXT, REGIONS = "image", "text", "regions"
SAME = "same"  # a node that only adds concepts passes what it read on to the nodes after it
EMBEDDINGS = "embeddings:"  # + a base embedding model's id
BASE_MODEL_TYPES = {IMAGE: "visual-embedder", TEXT: "text-embedder"}
PATCH_ACTIONS = ("merge", "overwrite")


@dataclass(frozen=True)
class BaseEmbedModel:
    """A base embedding model (training/embedders.py) seen as a model of every app; its version
    id changes with its weights and preprocessing."""

    id: str
    version_id: str
    input_kind: str
    dim: int

    @property
    def model_type_id(self) -> str:
        return BASE_MODEL_TYPES[self.input_kind]


def base_embed_model(model_id: str) -> BaseEmbedModel | None:
    if model_id not in embedder_ids():
        return None
    embedder = get_embedder(model_id)
    version = hashlib.sha256(f"{embedder.id}@{embedder.version}".encode()).hexdigest()[:32]
    return BaseEmbedModel(embedder.id, version, embedder.input_kind, embedder.dim)


@dataclass(frozen=True)
class Node:
    """One node: a model version, and the node whose output it reads (none: the request's)."""

    id: str
    model_id: str
    version_id: str = ""
    node_inputs: tuple[str, ...] = ()
    model_type_id: str = ""


@dataclass(frozen=True)
class WorkflowView:
    id: str
    version_id: str
    description: str
    nodes: tuple[Node, ...]
    created_at: datetime | None = None
    modified_at: datetime | None = None


@dataclass(frozen=True)
class WorkflowSpec:
    """A workflow as a client sent it (PostWorkflows, PatchWorkflows)."""

    id: str
    description: str
    nodes: tuple[Node, ...]


def default_workflow() -> WorkflowView:
    """What modelmill does with every upload: each input is embedded by the base model of its
    kind (for search and transfer learning)."""
    nodes = []
    for kind in (IMAGE, TEXT):
        base = base_embed_model(default_embedder(kind).id)  # type: ignore[arg-type]
        assert base is not None
        nodes.append(Node(f"{kind}-embedding", base.id, base.version_id, (), base.model_type_id))
    version = hashlib.sha256("".join(n.version_id for n in nodes).encode()).hexdigest()[:32]
    return WorkflowView(
        DEFAULT_WORKFLOW_ID,
        version,
        "Embeds every uploaded input with the base model of its kind; searches and transfer "
        "learning read these embeddings.",
        tuple(nodes),
    )


# ---- checking a graph ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    """A node resolved: what it reads, what it gives the nodes after it, and (once the graph is
    checked) what reaches it: request inputs (image, text) or a detector's regions."""

    node: Node
    reads: frozenset[str]
    emits: str | None  # SAME, TEXT, REGIONS, EMBEDDINGS + id; None: nothing can follow it
    base: BaseEmbedModel | None = None
    content: frozenset[str] = frozenset()


def _reads(model: Model, version: ModelVersion) -> frozenset[str]:
    kinds = (input_kinds(version) or set(MODEL_TYPES[model.model_type_id].input_fields)) & {
        IMAGE,
        TEXT,
    }
    params = version.train_info.get("params") or {}
    template = find_template(model.model_type_id, params.get("template"))
    if template is None or "base_embed_model" not in template.Params.model_fields:
        return frozenset(kinds)
    # It classifies a base model's embeddings, so it may follow that base model's node.
    chosen = ((version.input_info or {}).get("base_embed_model") or {}).get("id")
    embedders = {chosen} if chosen else {default_embedder(k).id for k in kinds}  # type: ignore[arg-type]
    return frozenset(kinds | {EMBEDDINGS + e for e in embedders})


def _emits(model_type_id: str) -> str | None:
    fields = MODEL_TYPES[model_type_id].output_fields
    if TEXT in fields:
        return TEXT
    if any("bounding_box" in f for f in fields):
        return REGIONS
    if set(fields) <= {"concepts", "heatmaps"}:
        return SAME
    return None  # masks, a trained embedder's vectors: no node here reads them


def _step(session: Session, app: AppScope, node: Node) -> _Step:
    where = f"Node '{node.id}'"
    model = session.scalar(
        select(Model).where(Model.app_pk == app.app_pk, Model.id == node.model_id)
    )
    if model is None:
        base = base_embed_model(node.model_id)
        if base is None:
            raise ApiError(
                codes.MODEL_DOES_NOT_EXIST,
                f"{where}: model '{node.model_id}' does not exist in app '{app.app_id}' and is "
                f"not a base embedding model ({', '.join(embedder_ids())}).",
            )
        if node.version_id not in ("", base.version_id):
            raise ApiError(
                codes.MODEL_DOES_NOT_EXIST,
                f"{where}: base model '{base.id}' has one version, '{base.version_id}', not "
                f"'{node.version_id}'.",
            )
        pinned = replace(node, version_id=base.version_id, model_type_id=base.model_type_id)
        return _Step(pinned, frozenset({base.input_kind}), EMBEDDINGS + base.id, base)
    if node.version_id:
        try:
            version = find_version(session, model, node.version_id)
        except ApiError as error:
            raise ApiError(error.code, f"{where}: {error.description}") from None
    else:
        found = newest_version(session, model, trained_only=True)
        if found is None:
            raise ApiError(
                codes.WORKFLOW_REQUIRE_TRAINED_MODEL,
                f"{where}: model '{model.id}' has no trained version yet; train one "
                "(PostModelVersions) and wait until its status is MODEL_TRAINED.",
            )
        version = found
    if version.status_code != codes.MODEL_TRAINED:
        raise ApiError(
            codes.WORKFLOW_REQUIRE_TRAINED_MODEL,
            f"{where}: version '{version.id}' of model '{model.id}' is not trained "
            f"({codes.StatusCode.Name(version.status_code)}).",
        )
    pinned = replace(node, version_id=version.id, model_type_id=model.model_type_id)
    return _Step(pinned, _reads(model, version), _emits(model.model_type_id))


def _describe(kinds: frozenset[str]) -> str:
    names = sorted(
        f"{k[len(EMBEDDINGS) :]} embeddings" if k.startswith(EMBEDDINGS) else k for k in kinds
    )
    return " or ".join(names) or "nothing another node reads"


def _check_graph(steps: list[_Step]) -> list[_Step]:
    """The steps in graph order, each knowing what reaches it; WORKFLOW_INVALID_GRAPH naming the
    node whose input is missing, part of a cycle, or of a kind it cannot read."""
    by_id = {s.node.id: s for s in steps}
    for step in steps:
        if len(step.node.node_inputs) > 1:
            raise ApiError(
                codes.WORKFLOW_INVALID_GRAPH,
                f"Node '{step.node.id}' has {len(step.node.node_inputs)} node_inputs; a node reads "
                "the request's input (no node_inputs) or the output of one node.",
            )
        for parent_id in step.node.node_inputs:
            if parent_id not in by_id:
                raise ApiError(
                    codes.WORKFLOW_INVALID_GRAPH,
                    f"Node '{step.node.id}' reads node '{parent_id}', not in this workflow.",
                )
    try:
        order = list(
            TopologicalSorter({s.node.id: s.node.node_inputs for s in steps}).static_order()
        )
    except CycleError as error:
        cycle = error.args[1]
        raise ApiError(
            codes.WORKFLOW_INVALID_GRAPH,
            f"Node '{cycle[0]}' is in a cycle ({' → '.join(reversed(cycle))}); each node must "
            "read the request's input or a node before it.",
        ) from None
    offers: dict[str, frozenset[str]] = {}
    checked: dict[str, _Step] = {}
    for node_id in order:
        step = by_id[node_id]
        if not step.node.node_inputs:
            content = step.reads & {IMAGE, TEXT}
        else:
            parent = checked[step.node.node_inputs[0]]
            given = offers[parent.node.id]
            fits = (
                IMAGE in step.reads and step.emits == SAME
                if REGIONS in given
                else bool(given & step.reads)
            )
            if not fits:
                raise ApiError(
                    codes.WORKFLOW_INVALID_GRAPH,
                    f"Node '{step.node.id}' (model '{step.node.model_id}', "
                    f"{step.node.model_type_id}) reads {_describe(step.reads)}, but node "
                    f"'{parent.node.id}' (model '{parent.node.model_id}', "
                    f"{parent.node.model_type_id}) gives {_describe(given)}"
                    + (
                        "; only a model that adds concepts to an image may run on the regions "
                        "of a detector."
                        if REGIONS in given
                        else "."
                    ),
                )
            content = parent.content if parent.emits == SAME or parent.base else given
        step = replace(step, content=content)
        if step.emits == SAME:
            offers[node_id] = content
        else:
            offers[node_id] = frozenset({step.emits}) if step.emits else frozenset()
        checked[node_id] = step
    return list(checked.values())


def _resolve(session: Session, app: AppScope, nodes: tuple[Node, ...]) -> list[_Step]:
    if not nodes or len(nodes) > MAX_NODES:
        raise ApiError(
            codes.WORKFLOW_INVALID_ARGUMENT,
            f"A workflow has 1 to {MAX_NODES} nodes; this one has {len(nodes)}.",
        )
    seen: set[str] = set()
    for node in nodes:
        if not node.id or node.id in seen:
            raise ApiError(
                codes.WORKFLOW_INVALID_ARGUMENT,
                f"Node id {node.id!r} is empty or used twice; give each node its own id.",
            )
        seen.add(node.id)
        if not node.model_id:
            raise ApiError(
                codes.WORKFLOW_INVALID_ARGUMENT, f"Node '{node.id}' names no model (model.id)."
            )
    return _check_graph([_step(session, app, node) for node in nodes])


# ---- stored workflows ----------------------------------------------------------------------------


def _stored_nodes(steps: list[_Step]) -> list[dict[str, Any]]:
    return [
        {
            "id": s.node.id,
            "model": {
                "id": s.node.model_id,
                "model_type_id": s.node.model_type_id,
                "model_version": {"id": s.node.version_id},
            },
            "node_inputs": [{"node_id": i} for i in s.node.node_inputs],
        }
        for s in steps
    ]


def _view(row: Workflow) -> WorkflowView:
    nodes = tuple(
        Node(
            n["id"],
            n["model"]["id"],
            n["model"]["model_version"]["id"],
            tuple(i["node_id"] for i in n["node_inputs"]),
            n["model"]["model_type_id"],
        )
        for n in row.nodes
    )
    return WorkflowView(
        row.id, row.version_id, row.description, nodes, row.created_at, row.modified_at
    )


def _find(session: Session, app: AppScope, workflow_id: str) -> Workflow:
    row = session.scalar(
        select(Workflow).where(Workflow.app_pk == app.app_pk, Workflow.id == workflow_id)
    )
    if row is None:
        raise ApiError(
            codes.WORKFLOW_DOES_NOT_EXIST,
            f"Workflow '{workflow_id}' does not exist in app '{app.app_id}'.",
        )
    return row


def _refuse_default(workflow_id: str) -> None:
    if workflow_id == DEFAULT_WORKFLOW_ID:
        raise ApiError(
            codes.WORKFLOW_PERMISSION_DENIED,
            f"Workflow '{DEFAULT_WORKFLOW_ID}' says what modelmill does on upload; it cannot be "
            "changed or deleted. Create a workflow of your own (PostWorkflows).",
        )


def create_workflows(env: Env, app: AppScope, specs: list[WorkflowSpec]) -> list[WorkflowView]:
    """PostWorkflows: every workflow is checked and stored, or none is."""
    if not specs:
        raise ApiError(codes.WORKFLOW_INVALID_ARGUMENT, "Send the workflows to create.")
    with env.db.session() as session:
        rows: list[Workflow] = []
        for spec in specs:
            check_id(spec.id, "workflow", codes.WORKFLOW_INVALID_ARGUMENT)
            taken = spec.id == DEFAULT_WORKFLOW_ID or any(r.id == spec.id for r in rows)
            if taken or session.scalar(
                select(Workflow.pk).where(Workflow.app_pk == app.app_pk, Workflow.id == spec.id)
            ):
                raise ApiError(
                    codes.WORKFLOW_DUPLICATE,
                    f"Workflow '{spec.id}' already exists in app '{app.app_id}'.",
                )
            steps = _resolve(session, app, spec.nodes)
            rows.append(
                Workflow(
                    app_pk=app.app_pk,
                    id=spec.id,
                    version_id=new_id(),
                    description=spec.description,
                    nodes=_stored_nodes(steps),
                )
            )
        session.add_all(rows)
        session.flush()
        return [_view(r) for r in rows]


def get_workflow(env: Env, app: AppScope, workflow_id: str) -> WorkflowView:
    if workflow_id == DEFAULT_WORKFLOW_ID:
        return default_workflow()
    with env.db.session() as session:
        return _view(_find(session, app, workflow_id))


def list_workflows(env: Env, app: AppScope, page: Page) -> list[WorkflowView]:
    """The app's default workflow first, then its own by creation."""
    start = (page.page - 1) * page.per_page
    first = [default_workflow()] if start == 0 else []
    offset = max(start - 1, 0)
    with env.db.session() as session:
        rows = session.scalars(
            select(Workflow)
            .where(Workflow.app_pk == app.app_pk)
            .order_by(Workflow.pk)
            .offset(offset)
            .limit(page.per_page - len(first))
        )
        return first + [_view(r) for r in rows]


def _merged(nodes: tuple[Node, ...], changes: tuple[Node, ...]) -> tuple[Node, ...]:
    by_id = {n.id: n for n in changes}
    return tuple(by_id.pop(n.id, n) for n in nodes) + tuple(by_id.values())


def patch_workflows(
    env: Env, app: AppScope, patches: list[WorkflowSpec], action: str
) -> list[WorkflowView]:
    """PatchWorkflows: "merge" replaces the nodes sent by id and adds new ones; "overwrite"
    replaces every node. A workflow whose nodes change gets a new version id."""
    if action not in PATCH_ACTIONS:
        raise ApiError(
            codes.WORKFLOW_INVALID_ARGUMENT,
            f"Action {action!r} is not one of {', '.join(PATCH_ACTIONS)}.",
        )
    with env.db.session() as session:
        rows = []
        for patch in patches:
            _refuse_default(patch.id)
            row = _find(session, app, patch.id)
            if patch.nodes:
                current = _view(row).nodes
                nodes = patch.nodes if action == "overwrite" else _merged(current, patch.nodes)
                row.nodes = _stored_nodes(_resolve(session, app, nodes))
                row.version_id = new_id()
            if patch.description or action == "overwrite":
                row.description = patch.description
            rows.append(row)
        session.flush()
        return [_view(r) for r in rows]


def delete_workflows(env: Env, app: AppScope, workflow_ids: list[str], every: bool = False) -> None:
    with env.db.session() as session:
        if every:
            rows = list(session.scalars(select(Workflow).where(Workflow.app_pk == app.app_pk)))
        else:
            for workflow_id in workflow_ids:
                _refuse_default(workflow_id)
            rows = [_find(session, app, workflow_id) for workflow_id in workflow_ids]
        for row in rows:
            session.delete(row)


# ---- running a workflow --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Piece:
    """What one node reads of one request input: the input itself, a text a node wrote, or the
    crop of a detected region (with that region)."""

    kind: str
    content: NewInput
    region: Region | None = None


@dataclass
class WorkflowRun:
    """PostWorkflowResults' answer: per request input, one result per node in graph order."""

    workflow: WorkflowView
    nodes: list[Node]
    concept_names: list[dict[str, str]]  # per node
    results: list[list[Output | ApiError]]  # per input, per node


def _crop(image: bytes, box: tuple[float, float, float, float]) -> bytes:
    top, left, bottom, right = box
    with Image.open(io.BytesIO(image)) as opened:
        picture = opened.convert("RGB")
    width, height = picture.size
    x0 = min(max(int(left * width), 0), width - 1)
    y0 = min(max(int(top * height), 0), height - 1)
    x1 = max(min(math.ceil(right * width), width), x0 + 1)
    y1 = max(min(math.ceil(bottom * height), height), y0 + 1)
    buffer = io.BytesIO()
    picture.crop((x0, y0, x1, y1)).save(buffer, format="PNG")
    return buffer.getvalue()


def _run_step(
    env: Env,
    cache: PredictorCache,
    app: AppScope,
    step: _Step,
    pieces: list[_Piece],
    output_config: dict[str, Any],
) -> list[Output | ApiError]:
    inputs = [p.content for p in pieces]
    if step.base is not None:
        read = read_inputs(env, inputs, {step.base.input_kind}, f"Base model '{step.base.id}'")
        good = [r for r in read if not isinstance(r, ApiError)]
        vectors = iter(get_embedder(step.base.id).embed([e.load() for e in good]) if good else [])
        return [r if isinstance(r, ApiError) else Output(embedding=next(vectors)) for r in read]
    results: list[Output | ApiError] = []
    for start in range(0, len(inputs), MAX_BATCH):
        chunk = inputs[start : start + MAX_BATCH]
        try:
            node = step.node
            results += predict(
                env, cache, app, node.model_id, node.version_id, chunk, output_config, {}
            )[2]
        except ApiError as error:
            results += [error] * len(chunk)
    return results


def _passes(step: _Step, pieces: list[_Piece], output: Output) -> list[_Piece]:
    """What the nodes after `step` read of one input, given its output."""
    if step.emits == TEXT:
        return [_Piece(TEXT, NewInput(id=pieces[0].content.id, text=output.text or ""))]
    if step.emits == REGIONS:
        source = pieces[0].content
        assert source.image_bytes is not None
        return [
            _Piece(IMAGE, NewInput(id=source.id, image_bytes=_crop(source.image_bytes, r.box)), r)
            for r in output.regions
            if r.box is not None
        ]
    return pieces  # SAME, or a base model's embeddings: the classifier after it embeds the same


def _matching(step: _Step, item: list[_Piece] | ApiError) -> list[_Piece] | ApiError:
    """A request input as a first node takes it: skipped when of a kind the node does not read."""
    if isinstance(item, ApiError) or item[0].kind in step.reads:
        return item
    return ApiError(
        codes.WORKFLOW_NO_MATCHING_INPUT,
        f"Node '{step.node.id}' reads {_describe(step.reads)} inputs, not {item[0].kind}.",
    )


def _outcome(
    step: _Step, item: list[_Piece] | ApiError, done: list[tuple[_Piece, Output | ApiError]]
) -> tuple[Output | ApiError, list[_Piece] | ApiError]:
    """One input's output of `step` (from its pieces' results), and what the nodes after it read
    of that input; an error goes on to them."""
    if isinstance(item, ApiError):
        return item, item
    failed = next((r for _, r in done if isinstance(r, ApiError)), None)
    if failed is not None:
        error = ApiError(failed.code, f"Node '{step.node.id}': {failed.description}")
        return error, error
    outputs = [r for _, r in done if isinstance(r, Output)]
    if REGIONS in step.content:  # the detector's regions, each with this node's concepts
        regions = [p.region for p, _ in done if p.region is not None]
        output = Output(
            regions=[
                replace(r, concepts=dict(o.concepts)) for r, o in zip(regions, outputs, strict=True)
            ]
        )
    else:
        output = outputs[0]
    return output, _passes(step, item, output)


def _request_pieces(env: Env, inputs: list[NewInput]) -> list[list[_Piece] | ApiError]:
    """Each request input read once (a URL fetched once), or why it cannot be read."""
    read: list[list[_Piece] | ApiError] = []
    for spec in inputs:
        try:
            checked = check_input(spec, env.settings)
        except ApiError as error:
            read.append(error)
            continue
        content = (
            NewInput(id=spec.id, image_bytes=checked.image)
            if checked.image is not None
            else NewInput(id=spec.id, text=checked.text)
        )
        read.append([_Piece(checked.kind, content)])
    return read


def run_workflow(
    env: Env,
    cache: PredictorCache,
    app: AppScope,
    workflow_id: str,
    version_id: str,
    inputs: list[NewInput],
    output_config: dict[str, Any],
) -> WorkflowRun:
    """PostWorkflowResults: every node on every input, in graph order. A node that reads another
    kind of input than the one sent answers WORKFLOW_NO_MATCHING_INPUT for it (so the default
    workflow embeds an image with the image model only); a node after a detector runs on the
    crop of each region, and its concepts come back inside the regions."""
    if not inputs or len(inputs) > MAX_INPUTS:
        raise ApiError(
            codes.WORKFLOW_INVALID_REQUEST,
            f"Send 1 to {MAX_INPUTS} inputs to a workflow; this request has {len(inputs)}.",
        )
    workflow = get_workflow(env, app, workflow_id)
    if version_id and version_id != workflow.version_id:
        raise ApiError(
            codes.WORKFLOW_DOES_NOT_EXIST,
            f"Workflow '{workflow_id}' has no version '{version_id}'; its version is "
            f"'{workflow.version_id}'.",
        )
    with env.db.session() as session:
        steps = _resolve(session, app, workflow.nodes)  # its models may have gone since
    names = [
        {}
        if s.base is not None
        else {c.id: c.name for c in model_concepts(env, app, s.node.model_id, s.node.version_id)}
        for s in steps
    ]
    request = _request_pieces(env, inputs)
    passed: dict[str, list[list[_Piece] | ApiError]] = {}
    outcomes: list[list[Output | ApiError]] = []
    for step in steps:
        node = step.node
        if node.node_inputs:
            incoming = passed[node.node_inputs[0]]
        else:
            incoming = [_matching(step, item) for item in request]
        flat = [
            (index, piece)
            for index, item in enumerate(incoming)
            if not isinstance(item, ApiError)
            for piece in item
        ]
        results = _run_step(env, cache, app, step, [p for _, p in flat], output_config)
        by_input: dict[int, list[tuple[_Piece, Output | ApiError]]] = defaultdict(list)
        for (index, piece), result in zip(flat, results, strict=True):
            by_input[index].append((piece, result))
        answers = [_outcome(step, item, by_input[i]) for i, item in enumerate(incoming)]
        outcomes.append([output for output, _ in answers])
        passed[node.id] = [passing for _, passing in answers]
    return WorkflowRun(
        workflow,
        [s.node for s in steps],
        names,
        [[outcomes[n][i] for n in range(len(steps))] for i in range(len(inputs))],
    )
