"""Rows and plain values ⇄ Clarifai protobuf messages. No logic beyond the shape change."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from clarifai_grpc.grpc.api.status import status_pb2
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from modelmill.services import AppScope, rows
from modelmill.services.evaluations import light
from modelmill.services.inputs import NewInput
from modelmill.services.links import Links
from modelmill.services.workflows import DEFAULT_WORKFLOW_ID, BaseEmbedModel, WorkflowView
from modelmill.training.contract import Output
from modelmill.training.registry import FieldSpec, ModelTypeSpec


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return stamp


def status(code: int, description: str = "", details: str = "") -> status_pb2.Status:
    return status_pb2.Status(
        code=code, description=description or codes.StatusCode.Name(code), details=details
    )


def struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    if value:
        message.update(value)
    return message


def to_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def parse(value: dict[str, Any], message: Any) -> Any:
    return json_format.ParseDict(value, message, ignore_unknown_fields=True)


# ---- proto → plain ----------------------------------------------------------------------------


def concept_labels(concepts: Any) -> list[dict[str, Any]]:
    # Built by hand, not with MessageToDict: a concept value of 0 is a negative label, and
    # MessageToDict would drop it as a default.
    return [{"id": c.id or c.name, "name": c.name, "value": c.value} for c in concepts]


def labels(data: pb.Data) -> dict[str, Any]:
    """The concepts and regions of a Data message, as the services' label dict."""
    result: dict[str, Any] = {}
    if data.concepts:
        result["concepts"] = concept_labels(data.concepts)
    if data.regions:
        result["regions"] = [
            {
                "id": region.id,
                "region_info": to_dict(region.region_info),
                "data": {"concepts": concept_labels(region.data.concepts)},
            }
            for region in data.regions
        ]
    return result


def annotation_labels(data: pb.Data) -> dict[str, Any]:
    """An annotation's labels: concepts and regions, and `data.text` as the wanted output of
    its input (a text-to-text training pair); on an input, data.text is its content instead."""
    result = labels(data)
    if data.text.raw:
        result["text"] = {"raw": data.text.raw}
    return result


def output_config(config: pb.OutputConfig) -> dict[str, Any]:
    """The prediction settings of an OutputConfig, as services read them."""
    return {
        "min_value": config.min_value,
        "max_concepts": config.max_concepts,
        "select_concepts": [c.id for c in config.select_concepts],
    }


def new_input(message: pb.Input) -> NewInput:
    data = message.data
    unsupported = next(
        (kind for kind in ("video", "audio") if data.HasField(kind)),
        "",  # type: ignore[arg-type]
    )
    return NewInput(
        id=message.id,
        image_bytes=data.image.base64 if data.image.base64 else None,
        image_url=data.image.url,
        text=data.text.raw if data.HasField("text") and not data.text.url else None,
        text_url=data.text.url,
        labels=labels(data),
        metadata=json_format.MessageToDict(data.metadata) if data.HasField("metadata") else {},
        dataset_ids=list(message.dataset_ids),
        unsupported=unsupported,
    )


# ---- rows → proto -----------------------------------------------------------------------------


def app(row: rows.App, user_id: str) -> pb.App:
    return pb.App(
        id=row.id,
        name=row.name,
        description=row.description,
        user_id=user_id,
        default_workflow_id=DEFAULT_WORKFLOW_ID,
        created_at=timestamp(row.created_at),
        modified_at=timestamp(row.modified_at),
    )


def data(labels_: dict[str, Any]) -> pb.Data:
    return parse(labels_, pb.Data()) if labels_ else pb.Data()


def input_(row: rows.Input, labels_: dict[str, Any], scope: AppScope, links: Links) -> pb.Input:
    message = pb.Input(
        id=row.id,
        # An annotation's target text is not the input's content: ListAnnotations shows it.
        data=data({k: v for k, v in labels_.items() if k != "text"}),
        status=status(row.status_code),
        created_at=timestamp(row.created_at),
        modified_at=timestamp(row.modified_at),
    )
    if row.kind == "image" and row.blob_key:
        message.data.image.url = links.blob(row.blob_key)
        message.data.image.image_info.width = row.width
        message.data.image.image_info.height = row.height
        message.data.image.image_info.format = row.mime.split("/")[-1].upper()
    elif row.kind == "text":
        message.data.text.raw = row.text or ""
    if row.metadata_:
        message.data.metadata.update(row.metadata_)
    return message


def concept(row: rows.Concept, scope: AppScope) -> pb.Concept:
    return pb.Concept(
        id=row.id,
        name=row.name,
        value=1.0,
        app_id=scope.app_id,
        user_id=scope.user_id,
        created_at=timestamp(row.created_at),
    )


def annotation(row: rows.Annotation, input_id: str, scope: AppScope) -> pb.Annotation:
    return pb.Annotation(
        id=row.id,
        input_id=input_id,
        data=data(row.data),
        status=status(row.status_code),
        user_id=scope.user_id,  # Annotation has no app_id field
        created_at=timestamp(row.created_at),
        modified_at=timestamp(row.modified_at),
    )


def dataset(row: rows.Dataset, scope: AppScope) -> pb.Dataset:
    return pb.Dataset(
        id=row.id,
        app_id=scope.app_id,
        user_id=scope.user_id,
        description=row.description,
        metadata=struct(row.metadata_),
        created_at=timestamp(row.created_at),
        modified_at=timestamp(row.modified_at),
    )


def dataset_version(
    row: rows.DatasetVersion, dataset_id: str, scope: AppScope
) -> pb.DatasetVersion:
    message = pb.DatasetVersion(
        id=row.id,
        dataset_id=dataset_id,
        app_id=scope.app_id,
        user_id=scope.user_id,
        description=row.description,
        status=status(row.status_code),
        created_at=timestamp(row.created_at),
        modified_at=timestamp(row.created_at),
    )
    if row.metrics.get("summary"):
        parse(row.metrics["summary"], message.metrics["/"])
    return message


def metrics_groups(row: rows.DatasetVersion) -> list[pb.DatasetVersionMetricsGroup]:
    return [
        parse(group, pb.DatasetVersionMetricsGroup()) for group in row.metrics.get("groups", [])
    ]


def progress_line(code: int, progress: dict[str, Any]) -> str:
    """'45.0% · epoch 2 · ETA 30 s' while training; empty otherwise."""
    if code != codes.MODEL_TRAINING or not progress:
        return ""
    parts = [f"{progress.get('percent', 0.0):.1f}%"]
    for key in ("stage", "epoch", "step"):
        if key in progress:
            value = progress[key]
            parts.append(f"{key} {int(value) if isinstance(value, float) else value}")
    if progress.get("eta_s") is not None:
        parts.append(f"ETA {int(progress['eta_s'])} s")
    return " · ".join(parts)


def model_version(
    row: rows.ModelVersion, model: rows.Model, scope: AppScope, links: Links
) -> pb.ModelVersion:
    progress = row.progress or {}
    description = row.status_description or codes.StatusCode.Name(row.status_code)
    message = pb.ModelVersion(
        id=row.id,
        status=status(row.status_code, description, progress_line(row.status_code, progress)),
        description=row.description,
        app_id=scope.app_id,
        user_id=scope.user_id,
        created_at=timestamp(row.created_at),
        modified_at=timestamp(row.modified_at),
        completed_at=timestamp(row.completed_at),
        train_log=links.train_log(row.pk),
    )
    parse(row.train_info, message.train_info)
    parse(row.output_info, message.output_info)
    parse(row.input_info, message.input_info)
    if progress:
        message.metadata.update({"progress": progress})
    concepts = (row.output_info.get("data") or {}).get("concepts", [])
    message.active_concept_count = len(concepts)
    message.total_input_count = int(progress.get("total_inputs", 0))
    if row.metrics:
        parse(light(row.metrics), message.metrics)
        message.metrics.status.CopyFrom(status(codes.MODEL_EVALUATED))
    return message


def model(
    row: rows.Model, version: rows.ModelVersion | None, scope: AppScope, links: Links
) -> pb.Model:
    message = pb.Model(
        id=row.id,
        name=row.name,
        model_type_id=row.model_type_id,
        description=row.description,
        app_id=scope.app_id,
        user_id=scope.user_id,
        created_at=timestamp(row.created_at),
        modified_at=timestamp(row.modified_at),
    )
    parse(row.output_info, message.output_info)
    if version is not None:
        message.model_version.CopyFrom(model_version(version, row, scope, links))
    return message


def _field(spec: FieldSpec) -> pb.ModelTypeField:
    message = pb.ModelTypeField(
        path=spec.path,
        field_type=pb.ModelTypeField.ModelTypeFieldType.Value(spec.field_type),
        description=spec.description,
        required=spec.required,
        placeholder=spec.placeholder,
    )
    if spec.default is not None:
        json_format.ParseDict(spec.default, message.default_value)
    if spec.range is not None:
        low, high, step = spec.range
        message.model_type_range_info.CopyFrom(pb.ModelTypeRangeInfo(min=low, max=high, step=step))
    for option in spec.options:
        message.model_type_enum_options.append(
            pb.ModelTypeEnumOption(
                id=option.id,
                description=option.description,
                aliases=[pb.ModelTypeEnumOptionAlias(wildcard_string=a) for a in option.aliases],
                recommended=option.recommended,
                model_type_fields=[_field(f) for f in option.fields],
            )
        )
    return message


def model_type(spec: ModelTypeSpec) -> pb.ModelType:
    return pb.ModelType(
        id=spec.info.id,
        title=spec.info.title,
        description=spec.info.description,
        input_fields=list(spec.info.input_fields),
        output_fields=list(spec.info.output_fields),
        trainable=True,
        creatable=True,
        model_type_fields=[_field(f) for f in spec.fields],
    )


def output(result: Output, echo: pb.Input, names: dict[str, str]) -> pb.Output:
    """A predictor's Output as a Clarifai Output: concepts, regions (boxes, polygons, masks),
    embeddings, a heatmap or text."""
    message = pb.Output(input=echo, status=status(codes.SUCCESS, "Ok"))
    for concept_id, value in result.concepts:
        message.data.concepts.append(
            pb.Concept(id=concept_id, name=names.get(concept_id, concept_id), value=value)
        )
    for region in result.regions:
        item = message.data.regions.add()
        if region.box is not None:
            top, left, bottom, right = region.box
            item.region_info.bounding_box.CopyFrom(
                pb.BoundingBox(top_row=top, left_col=left, bottom_row=bottom, right_col=right)
            )
        if region.polygon:
            item.region_info.polygon.points.extend(
                pb.Point(row=row, col=col) for row, col in region.polygon
            )
        if region.mask_png is not None:
            item.region_info.mask.image.base64 = region.mask_png
        if region.value is not None:
            item.value = region.value
        for concept_id, value in sorted(region.concepts.items(), key=lambda kv: -kv[1]):
            item.data.concepts.append(
                pb.Concept(id=concept_id, name=names.get(concept_id, concept_id), value=value)
            )
    if result.embedding is not None:
        message.data.embeddings.append(
            pb.Embedding(
                vector=[float(v) for v in result.embedding], num_dimensions=len(result.embedding)
            )
        )
    if result.heatmap_png is not None:
        message.data.heatmaps.append(pb.Image(base64=result.heatmap_png))
    if result.text is not None:
        message.data.text.raw = result.text
    return message


def evaluation(
    row: rows.Evaluation,
    model_row: rows.Model,
    version: rows.ModelVersion,
    scope: AppScope,
    links: Links,
    fields: set[str],
) -> pb.EvalMetrics:
    message = pb.EvalMetrics()
    if row.metrics:
        parse(light(row.metrics, fields), message)
    message.id = row.id
    message.app_id, message.user_id = scope.app_id, scope.user_id
    message.status.CopyFrom(status(row.status_code, row.status_description))
    message.model.CopyFrom(model(model_row, version, scope, links))
    message.model.model_version.ClearField("metrics")
    return message


def export(row: rows.Export, links: Links) -> pb.ModelVersionExport:
    message = pb.ModelVersionExport(
        status=status(row.status_code, row.status_description), size=row.size
    )
    if row.blob_key:
        message.url = links.blob(row.blob_key)
    return message


def base_model(base: BaseEmbedModel, scope: AppScope) -> pb.Model:
    """A base embedding model as GetModel answers it: trained, in every app."""
    return pb.Model(
        id=base.id,
        name=base.id,
        model_type_id=base.model_type_id,
        description=f"Base embedding model: {base.dim}-dimension embeddings of {base.input_kind}s",
        app_id=scope.app_id,
        user_id=scope.user_id,
        model_version=pb.ModelVersion(
            id=base.version_id,
            status=status(codes.MODEL_TRAINED),
            app_id=scope.app_id,
            user_id=scope.user_id,
        ),
    )


def workflow(view: WorkflowView, scope: AppScope) -> pb.Workflow:
    message = pb.Workflow(
        id=view.id,
        app_id=scope.app_id,
        user_id=scope.user_id,
        description=view.description,
        version=pb.WorkflowVersion(id=view.version_id, workflow_id=view.id),
        created_at=timestamp(view.created_at),
        modified_at=timestamp(view.modified_at),
    )
    for node in view.nodes:
        message.nodes.append(
            pb.WorkflowNode(
                id=node.id,
                model=pb.Model(
                    id=node.model_id,
                    model_type_id=node.model_type_id,
                    app_id=scope.app_id,
                    user_id=scope.user_id,
                    model_version=pb.ModelVersion(id=node.version_id),
                ),
                node_inputs=[pb.NodeInput(node_id=i) for i in node.node_inputs],
            )
        )
    return message
