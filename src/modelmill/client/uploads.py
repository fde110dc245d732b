"""Uploading ImportItems over the API in batches: ids already stored are skipped (so an import
that stopped half-way continues where it was), and every refusal is kept with its reason."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import json_format

from modelmill.client.connection import ApiFailure, Connection
from modelmill.client.importers import ImportItem

DEFAULT_BATCH = 32  # inputs per PostInputs; the server takes up to 128
STORED = (codes.INPUT_DOWNLOAD_SUCCESS, codes.SUCCESS)


@dataclass
class ImportSummary:
    uploaded: int = 0
    skipped: int = 0  # already stored under the same id
    refused: list[tuple[str, str]] = field(default_factory=list)  # (id, why)

    def reasons(self) -> list[tuple[str, int, list[str]]]:
        """(reason, count, first ids) for each distinct reason, most frequent first."""
        counts = Counter(reason for _, reason in self.refused)
        return [
            (reason, count, [i for i, r in self.refused if r == reason][:3])
            for reason, count in counts.most_common()
        ]


def to_input(item: ImportItem, content: bytes | str, dataset_id: str) -> pb.Input:
    message = pb.Input(id=item.id)
    if item.kind == "image":
        message.data.image.base64 = content if isinstance(content, bytes) else content.encode()
    else:
        message.data.text.raw = content if isinstance(content, str) else content.decode()
    message.data.concepts.extend(pb.Concept(id=c, value=1.0) for c in item.concepts)
    for region in item.regions:
        json_format.ParseDict(region, message.data.regions.add())
    if item.metadata:
        message.data.metadata.update(item.metadata)
    if dataset_id:
        message.dataset_ids.append(dataset_id)
    return message


def _stored_ids(connection: Connection, ids: list[str]) -> set[str]:
    reply = connection.call("ListInputs", ids=ids, per_page=len(ids))
    return {i.id for i in reply.inputs}


def _upload_batch(
    connection: Connection, batch: Sequence[ImportItem], dataset_id: str, summary: ImportSummary
) -> None:
    stored = _stored_ids(connection, [item.id for item in batch])
    messages = []
    for item in batch:
        if item.id in stored:
            summary.skipped += 1
            continue
        try:
            messages.append(to_input(item, item.load(), dataset_id))
        except (OSError, UnicodeDecodeError) as error:
            summary.refused.append((item.id, f"cannot read the file: {error.strerror or error}"))
    if not messages:
        return
    request = connection.request("PostInputs", inputs=messages)
    reply = connection.send("PostInputs", request, ok=tuple(codes.StatusCode.values()))
    if len(reply.inputs) != len(messages):  # the whole request was refused: nothing to resume
        raise ApiFailure("PostInputs", reply.status)
    for answer in reply.inputs:
        if answer.status.code in STORED:
            summary.uploaded += 1
        elif answer.status.code == codes.INPUT_DUPLICATE:
            summary.skipped += 1  # stored meanwhile, e.g. by an import running in parallel
        else:
            summary.refused.append((answer.id, answer.status.description))


def upload_items(
    connection: Connection,
    items: Sequence[ImportItem],
    dataset_id: str = "",
    batch_size: int = DEFAULT_BATCH,
    on_progress: Callable[[int], None] = lambda done: None,
) -> ImportSummary:
    """Upload `items` in batches; `on_progress(n)` after each batch with how many it covered."""
    summary = ImportSummary()
    seen: set[str] = set()
    batch: list[ImportItem] = []
    for item in items:
        if item.problem or item.id in seen:
            reason = item.problem or "the same id appears twice in the source"
            summary.refused.append((item.id, reason))
            on_progress(1)
            continue
        seen.add(item.id)
        batch.append(item)
        if len(batch) == batch_size:
            _upload_batch(connection, batch, dataset_id, summary)
            on_progress(len(batch))
            batch = []
    if batch:
        _upload_batch(connection, batch, dataset_id, summary)
        on_progress(len(batch))
    return summary
