"""Running a workflow (PostWorkflowResults): each node on each request input, in graph order,
through the prediction path of PostModelOutputs; what a node emits (concepts, texts, regions)
decides what the nodes after it read."""

from __future__ import annotations

import io
import math
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from PIL import Image

from modelmill.domain.errors import ApiError
from modelmill.services import AppScope, Env
from modelmill.services.inputs import MAX_BATCH, NewInput, check_input
from modelmill.services.models import model_concepts
from modelmill.services.predictions import PredictorCache, predict, read_inputs
from modelmill.services.workflows import (
    IMAGE,
    REGIONS,
    TEXT,
    Node,
    Step,
    WorkflowView,
    describe_kinds,
    get_workflow,
    resolve_steps,
)
from modelmill.training.contract import Output, Region
from modelmill.training.embedders import get_embedder

MAX_INPUTS = 32  # Clarifai's limit of inputs in one PostWorkflowResults


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
    step: Step,
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


def _passes(step: Step, pieces: list[_Piece], output: Output) -> list[_Piece]:
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


def _matching(step: Step, item: list[_Piece] | ApiError) -> list[_Piece] | ApiError:
    """A request input as a first node takes it: skipped when of a kind the node does not read."""
    if isinstance(item, ApiError) or item[0].kind in step.reads:
        return item
    return ApiError(
        codes.WORKFLOW_NO_MATCHING_INPUT,
        f"Node '{step.node.id}' reads {describe_kinds(step.reads)} inputs, not {item[0].kind}.",
    )


def _outcome(
    step: Step, item: list[_Piece] | ApiError, done: list[tuple[_Piece, Output | ApiError]]
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
        steps = resolve_steps(session, app, workflow.nodes)  # its models may have gone since
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
