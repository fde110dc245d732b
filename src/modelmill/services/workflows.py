"""Workflows: graphs of trained model versions and base embedding models, checked when saved
(what each node reads and emits) and stored per app; `workflow_runs` runs them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from graphlib import CycleError, TopologicalSorter
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelmill.domain.errors import ApiError
from modelmill.domain.ids import check_id, new_id
from modelmill.services import AppScope, Env
from modelmill.services.models import find_version, newest_version
from modelmill.services.paging import Page
from modelmill.services.predictions import input_kinds
from modelmill.store.tables import Model, ModelVersion, Workflow
from modelmill.training.embedders import default_embedder, embedder_ids, get_embedder
from modelmill.training.registry import MODEL_TYPES, find_template

# Clarifai's base workflow of apps made through the API; here it says what happens on upload.
DEFAULT_WORKFLOW_ID = "Universal"
MAX_NODES = 20  # Clarifai's limit of models in one workflow
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
class Step:
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


def _step(session: Session, app: AppScope, node: Node) -> Step:
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
        return Step(pinned, frozenset({base.input_kind}), EMBEDDINGS + base.id, base)
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
    return Step(pinned, _reads(model, version), _emits(model.model_type_id))


def describe_kinds(kinds: frozenset[str]) -> str:
    names = sorted(
        f"{k[len(EMBEDDINGS) :]} embeddings" if k.startswith(EMBEDDINGS) else k for k in kinds
    )
    return " or ".join(names) or "nothing another node reads"


def _check_graph(steps: list[Step]) -> list[Step]:
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
    checked: dict[str, Step] = {}
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
                    f"{step.node.model_type_id}) reads {describe_kinds(step.reads)}, but node "
                    f"'{parent.node.id}' (model '{parent.node.model_id}', "
                    f"{parent.node.model_type_id}) gives {describe_kinds(given)}"
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


def resolve_steps(session: Session, app: AppScope, nodes: tuple[Node, ...]) -> list[Step]:
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


def _stored_nodes(steps: list[Step]) -> list[dict[str, Any]]:
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
            steps = resolve_steps(session, app, spec.nodes)
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
                row.nodes = _stored_nodes(resolve_steps(session, app, nodes))
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
