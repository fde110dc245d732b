"""The Clarifai dataset export archive (format CLARIFAI_DATA_PROTOBUF), as the clarifai SDK's
DatasetExportReader reads it: a zip with a `mimetype` entry, then InputBatch protos in entries
named `SPLIT/batch-N_nCOUNT` (the reader sums COUNT); each input's content at
`hosted.prefix/orig/hosted.suffix`."""

from __future__ import annotations

import io
import zipfile

from clarifai_grpc.grpc.api import resources_pb2 as pb

from modelmill.api import convert
from modelmill.services.dataset_exports import ExportedInput
from modelmill.services.links import Links

MIMETYPE = b"application/x.clarifai-data+protobuf"
INPUTS_PER_BATCH = 128
SPLIT = "all"
# A fixed time stamp makes the same version export to the same bytes (and so the same blob).
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _input(exported: ExportedInput, dataset_id: str, links: Links) -> pb.Input:
    item = exported.item
    message = pb.Input(id=item["id"], data=convert.data(item.get("labels") or {}))
    message.dataset_ids.append(dataset_id)
    prefix, suffix = links.hosted(exported.content_key)
    hosted = pb.HostedURL(prefix=prefix, suffix=suffix, sizes=["orig"])
    if item["kind"] == "image":
        message.data.image.hosted.CopyFrom(hosted)
        message.data.image.image_info.width = item.get("width") or 0
        message.data.image.image_info.height = item.get("height") or 0
    else:
        message.data.text.hosted.CopyFrom(hosted)
    if item.get("metadata"):
        message.data.metadata.update(item["metadata"])
    return message


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def clarifai_archive(inputs: list[ExportedInput], dataset_id: str, links: Links) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(_entry("mimetype"), MIMETYPE)
        for number, start in enumerate(range(0, len(inputs), INPUTS_PER_BATCH)):
            chunk = inputs[start : start + INPUTS_PER_BATCH]
            batch = pb.InputBatch(inputs=[_input(e, dataset_id, links) for e in chunk])
            name = f"{SPLIT}/batch-{number:05d}_n{len(chunk)}"
            archive.writestr(_entry(name), batch.SerializeToString())
    return buffer.getvalue()
