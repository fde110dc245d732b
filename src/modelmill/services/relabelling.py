"""Relabelling stored inputs: PatchInputs (metadata, concepts), PatchAnnotations, DeleteAnnotations.

Each call checks everything first and changes nothing when anything is wrong. Dataset versions
are frozen snapshots in the blob store, so they keep the labels they were made with.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from modelmill.domain.errors import ApiError
from modelmill.domain.ids import new_id
from modelmill.services import AppScope, Env
from modelmill.services.concepts import ensure_concepts
from modelmill.services.labels import check_concepts, check_labels, concept_names
from modelmill.store.tables import Annotation, Input

ACTIONS = ("merge", "overwrite", "remove")


@dataclass
class InputPatch:
    """What PatchInputs asks of one input: metadata and concept labels (None: untouched)."""

    id: str
    metadata: dict[str, Any] | None = None
    concepts: list[dict[str, Any]] | None = None
    other: str = ""  # a part of the input that cannot be patched (image, text, regions)


def check_action(action: str, code: int) -> str:
    action = action or "merge"
    if action not in ACTIONS:
        raise ApiError(code, f"Action '{action}' is not one of {', '.join(ACTIONS)}.")
    return action


# ---- metadata ------------------------------------------------------------------------------------


def merge_metadata(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Nested merge: the patch's keys replace the stored ones, dicts merged key by key."""
    merged = copy.deepcopy(old)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_metadata(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def remove_metadata(old: dict[str, Any], named: dict[str, Any]) -> dict[str, Any]:
    """The stored metadata without the keys the patch names (nested dicts name nested keys)."""
    kept = copy.deepcopy(old)
    for key, value in named.items():
        if isinstance(value, dict) and value and isinstance(kept.get(key), dict):
            kept[key] = remove_metadata(kept[key], value)
        else:
            kept.pop(key, None)
    return kept


PATCH_METADATA = {
    "merge": merge_metadata,
    "overwrite": lambda old, new: copy.deepcopy(new),
    "remove": remove_metadata,
}


# ---- concept labels on inputs --------------------------------------------------------------------


def _annotations_by_input(session: Session, input_pks: list[int]) -> dict[int, list[Annotation]]:
    found: dict[int, list[Annotation]] = {pk: [] for pk in input_pks}
    for row in session.scalars(
        select(Annotation).where(Annotation.input_pk.in_(input_pks)).order_by(Annotation.pk)
    ):
        found[row.input_pk].append(row)
    return found


def _with_concepts(row: Annotation, concepts: list[dict[str, Any]]) -> None:
    data = {k: v for k, v in row.data.items() if k != "concepts"}
    if concepts:
        data["concepts"] = concepts
    row.data = data  # a new dict: JSON columns do not see changes made in place


def _patch_input_concepts(
    session: Session,
    app: AppScope,
    input_row: Input,
    annotations: list[Annotation],
    concepts: list[dict[str, Any]],
    action: str,
) -> None:
    """Input-level concept labels are the `concepts` of the input's annotations (regions keep
    theirs): merge updates a label's value wherever it is or adds it, overwrite leaves exactly
    the patch's labels, remove drops the named ones."""
    patched = {c["id"]: c for c in concepts}
    if action == "merge":
        labelled: set[str] = set()  # a label may sit in several annotations: update each
        for row in annotations:
            current = row.data.get("concepts") or []
            if any(c["id"] in patched for c in current):
                _with_concepts(row, [patched.get(c["id"], c) for c in current])
                labelled.update(c["id"] for c in current if c["id"] in patched)
        new = [c for concept_id, c in patched.items() if concept_id not in labelled]
        if new:
            target = next((r for r in annotations if not r.data.get("regions")), None)
            if target is None:
                target = Annotation(
                    app_pk=app.app_pk,
                    id=new_id(),
                    input_pk=input_row.pk,
                    data={},
                    status_code=codes.ANNOTATION_SUCCESS,
                )
                session.add(target)
            _with_concepts(target, [*(target.data.get("concepts") or []), *new])
        return
    for row in annotations:
        current = row.data.get("concepts") or []
        if action == "remove":
            _with_concepts(row, [c for c in current if c["id"] not in patched])
        elif current:
            _with_concepts(row, [])
    if action == "overwrite" and concepts:
        target = next((r for r in annotations if not r.data.get("regions")), None)
        if target is None:
            session.add(
                Annotation(
                    app_pk=app.app_pk,
                    id=new_id(),
                    input_pk=input_row.pk,
                    data={"concepts": concepts},
                    status_code=codes.ANNOTATION_SUCCESS,
                )
            )
        else:
            _with_concepts(target, concepts)


def patch_inputs(env: Env, app: AppScope, patches: list[InputPatch], action: str) -> list[str]:
    """PatchInputs: change metadata and concept labels of stored inputs; returns their ids.

    >>> patch_inputs(env, app, [InputPatch("cat-1", concepts=[{"id": "dog", "value": 1}])], "merge")
    """
    code = codes.INPUT_INVALID_ARGUMENT
    action = check_action(action, code)
    if not patches:
        raise ApiError(codes.INPUT_INVALID_REQUEST, "The request has no inputs to patch.")
    ids = [p.id for p in patches]
    if len(set(ids)) != len(ids):
        raise ApiError(code, "The request patches one input twice; send each input once.")
    checked: dict[str, list[dict[str, Any]]] = {}
    for patch in patches:
        if patch.other:
            raise ApiError(
                code,
                f"Input '{patch.id}': PatchInputs changes metadata and concepts only, not "
                f"{patch.other}; delete the input and add it again to change its content, or use "
                "PatchAnnotations for regions.",
            )
        if patch.concepts is not None:
            checked[patch.id] = check_concepts(patch.concepts, code)
    with env.db.session() as session:
        rows = {
            r.id: r
            for r in session.scalars(
                select(Input).where(Input.app_pk == app.app_pk, Input.id.in_(ids))
            )
        }
        missing = [i for i in ids if i not in rows]
        if missing:
            raise ApiError(
                codes.INPUT_DOES_NOT_EXIST,
                f"Inputs {', '.join(missing[:10])} do not exist in app '{app.app_id}'; "
                "nothing was patched.",
            )
        names: dict[str, str] = {}
        for concepts in checked.values():
            names.update(concept_names({"concepts": concepts}))
        if action != "remove":
            ensure_concepts(session, app.app_pk, names)
        annotations = _annotations_by_input(session, [r.pk for r in rows.values()])
        for patch in patches:
            row = rows[patch.id]
            if patch.metadata is not None:
                row.metadata_ = PATCH_METADATA[action](row.metadata_ or {}, patch.metadata)
            if patch.id in checked:
                _patch_input_concepts(
                    session, app, row, annotations[row.pk], checked[patch.id], action
                )
    return ids


# ---- annotations ---------------------------------------------------------------------------------


def _merge_regions(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Regions with the id of a stored one replace it; the others are added."""
    by_id = {r["id"]: r for r in new if r.get("id")}
    kept = [by_id.pop(r["id"], r) if r.get("id") else r for r in old]
    return kept + [r for r in new if not r.get("id") or r["id"] in by_id]


def patch_annotation_data(old: dict[str, Any], new: dict[str, Any], action: str) -> dict[str, Any]:
    """An annotation's labels after a merge, overwrite or remove with checked labels `new`."""
    if action == "overwrite":
        return dict(new)
    result = {k: list(v) for k, v in old.items()}
    new_concepts = {c["id"]: c for c in new.get("concepts", [])}
    region_ids = {r.get("id") for r in new.get("regions", []) if r.get("id")}
    if action == "merge":
        concepts = [new_concepts.pop(c["id"], c) for c in old.get("concepts", [])]
        result["concepts"] = concepts + list(new_concepts.values())
        result["regions"] = _merge_regions(old.get("regions", []), new.get("regions", []))
    else:  # remove the named concepts and the regions with the named ids
        result["concepts"] = [c for c in old.get("concepts", []) if c["id"] not in new_concepts]
        result["regions"] = [r for r in old.get("regions", []) if r.get("id") not in region_ids]
    return {k: v for k, v in result.items() if v}


def patch_annotations(
    env: Env, app: AppScope, items: list[tuple[str, str, dict[str, Any]]], action: str
) -> list[tuple[Annotation, str]]:
    """PatchAnnotations: (annotation id, input id or "", Data dict) items; returns the patched
    rows with their input ids. All or nothing."""
    code = codes.ANNOTATION_INVALID_ARGUMENT
    action = check_action(action, code)
    if not items:
        raise ApiError(code, "The request has no annotations to patch.")
    ids = [annotation_id for annotation_id, _, _ in items]
    if not all(ids):
        raise ApiError(code, "Each annotation to patch needs its id (ListAnnotations shows them).")
    if len(set(ids)) != len(ids):
        raise ApiError(code, "The request patches one annotation twice; send each once.")
    labels = {}
    for annotation_id, _, data in items:
        try:
            labels[annotation_id] = check_labels(data, code, env.settings.max_image_pixels)
        except ApiError as error:
            raise ApiError(code, f"Annotation '{annotation_id}': {error.description}") from None
    with env.db.session() as session:
        found = {
            row.id: (row, input_id)
            for row, input_id in session.execute(
                select(Annotation, Input.id)
                .join(Input, Input.pk == Annotation.input_pk)
                .where(Annotation.app_pk == app.app_pk, Annotation.id.in_(ids))
            )
        }
        for annotation_id, input_id, _ in items:
            if annotation_id not in found:
                raise ApiError(
                    codes.ANNOTATION_INVALID_ARGUMENT,
                    f"Annotation '{annotation_id}' does not exist in app '{app.app_id}'; "
                    "nothing was patched.",
                )
            if input_id and found[annotation_id][1] != input_id:
                raise ApiError(
                    code,
                    f"Annotation '{annotation_id}' belongs to input '{found[annotation_id][1]}', "
                    f"not '{input_id}'; nothing was patched.",
                )
        names: dict[str, str] = {}
        for annotation_id, _, _ in items:
            row = found[annotation_id][0]
            row.data = patch_annotation_data(row.data or {}, labels[annotation_id], action)
            names.update(concept_names(row.data))
        ensure_concepts(session, app.app_pk, names)
        return [found[i] for i in ids]


def delete_annotations(
    env: Env, app: AppScope, annotation_ids: list[str], input_ids: list[str]
) -> int:
    """DeleteAnnotations as the SDK sends it: annotation ids paired with their inputs' ids, or
    only input ids (then every annotation of those inputs). Returns how many were deleted."""
    code = codes.ANNOTATION_INVALID_ARGUMENT
    if not annotation_ids and not input_ids:
        raise ApiError(code, "Name the annotations (ids) or the inputs (input_ids) to clear.")
    if annotation_ids and input_ids and len(annotation_ids) != len(input_ids):
        raise ApiError(
            code,
            f"{len(annotation_ids)} annotation ids but {len(input_ids)} input ids: send one input "
            "id per annotation id, in the same order, or input ids alone.",
        )
    with env.db.session() as session:
        inputs = {
            row.id: row.pk
            for row in session.scalars(
                select(Input).where(Input.app_pk == app.app_pk, Input.id.in_(input_ids))
            )
        }
        missing_inputs = [i for i in input_ids if i not in inputs]
        if missing_inputs:
            raise ApiError(
                codes.INPUT_DOES_NOT_EXIST,
                f"Inputs {', '.join(missing_inputs[:10])} do not exist in app '{app.app_id}'; "
                "nothing was deleted.",
            )
        if not annotation_ids:
            result = session.execute(
                delete(Annotation).where(Annotation.input_pk.in_(list(inputs.values())))
            )
            return int(result.rowcount or 0)
        rows = {
            row.id: row
            for row in session.scalars(
                select(Annotation).where(
                    Annotation.app_pk == app.app_pk, Annotation.id.in_(annotation_ids)
                )
            )
        }
        for index, annotation_id in enumerate(annotation_ids):
            row = rows.get(annotation_id)
            if row is None:
                raise ApiError(
                    code,
                    f"Annotation '{annotation_id}' does not exist in app '{app.app_id}'; "
                    "nothing was deleted.",
                )
            if input_ids and row.input_pk != inputs[input_ids[index]]:
                raise ApiError(
                    code,
                    f"Annotation '{annotation_id}' is not on input '{input_ids[index]}'; "
                    "nothing was deleted.",
                )
        session.execute(delete(Annotation).where(Annotation.pk.in_([r.pk for r in rows.values()])))
        return len(rows)
