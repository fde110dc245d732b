"""The client commands of `modelmill`: import, train, status, predict, export, dataset export.

Each connects with --base-url (http(s):// for REST, grpc(s):// for gRPC) and --key, or the
MODELMILL_BASE_URL / MODELMILL_KEY environment variables, and exits 2 on a bad request (with the
server's words), 1 when the work itself failed (a refused input, a failed training).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import json_format, struct_pb2
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from modelmill.client.connection import DEFAULT_BASE_URL, ME, ApiFailure, Connection
from modelmill.client.exporters import EXPORTERS, dataset_inputs, download
from modelmill.client.importers import IMAGE_SUFFIXES, IMPORTERS, input_id, read_items
from modelmill.client.uploads import DEFAULT_BATCH, upload_items

LOG_WIDTH = 160  # piped output: one line per message, not wrapped at 80 columns
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else LOG_WIDTH)
POLL_S = 1.0
MAX_PREDICT_BATCH = 128
TRAINING = (codes.MODEL_QUEUED_FOR_TRAINING, codes.MODEL_TRAINING)
EXPORTING = (codes.MODEL_EXPORT_PENDING, codes.MODEL_EXPORTING)
SHOWN_REFUSALS = 10

BaseUrl = Annotated[
    str,
    typer.Option(
        envvar="MODELMILL_BASE_URL",
        help="Server: http(s)://HOST:PORT (REST) or grpc(s)://HOST:PORT (gRPC).",
    ),
]
Key = Annotated[
    str,
    typer.Option(envvar=["MODELMILL_KEY", "CLARIFAI_PAT"], help="API key (a PAT)."),
]
UserId = Annotated[
    str, typer.Option("--user", envvar="MODELMILL_USER", help="User id; 'me' is the key's own.")
]
AppId = Annotated[str, typer.Option("--app", help="App id.")]
ModelId = Annotated[str, typer.Option("--model", help="Model id.")]


def _connect(base_url: str, key: str, user_id: str, app_id: str) -> Connection:
    try:
        return Connection(base_url, key, app_id, user_id)
    except ValueError as error:
        _fail(str(error))


def _fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[red]{message}[/]", highlight=False)
    raise typer.Exit(code)


def _params(items: list[str] | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            _fail(f"--param takes KEY=VALUE, not '{item}'.")
        try:
            values[key] = json.loads(text)
        except ValueError:
            values[key] = text
    return values


# ---- import --------------------------------------------------------------------------------------


def import_(
    path: Annotated[
        Path,
        typer.Argument(
            help="An ImageFolder tree, a .csv or .jsonl file, a COCO .json, or a COCO, YOLO, "
            "VOC or mask-PNG folder."
        ),
    ],
    app_id: AppId,
    key: Key,
    dataset_id: Annotated[
        str, typer.Option("--dataset", help="Also add the inputs to this dataset (created).")
    ] = "",
    format_name: Annotated[
        str | None, typer.Option("--format", help=f"One of {', '.join(IMPORTERS)}; else guessed.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=128)] = DEFAULT_BATCH,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    user_id: UserId = ME,
) -> None:
    """Upload a dataset from files over the API; inputs already stored (same id) are skipped, so
    running it again continues an import that stopped."""
    try:
        items = read_items(path, format_name)
    except (ValueError, OSError) as error:
        _fail(str(error))
    connection = _connect(base_url, key, user_id, app_id)
    try:
        if connection.ensure_app():
            console.print(f"Created app '{app_id}'.")
        if dataset_id and connection.ensure_dataset(dataset_id):
            console.print(f"Created dataset '{dataset_id}'.")
        columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=not console.is_terminal) as progress:
            task = progress.add_task("import", total=len(items))
            summary = upload_items(
                connection,
                items,
                dataset_id,
                batch_size,
                lambda done: progress.advance(task, done),
            )
    except ApiFailure as failure:
        _fail(str(failure))
    console.print(
        f"{summary.uploaded} uploaded, {summary.skipped} already stored, "
        f"{len(summary.refused)} refused.",
        highlight=False,
    )
    clipped = sum(item.clipped for item in items)
    if clipped:
        console.print(f"  {clipped} boxes stuck out of their image: clipped to it.")
    for reason, count, examples in summary.reasons()[:SHOWN_REFUSALS]:
        console.print(f"  {count} × {reason} (e.g. {', '.join(examples)})", highlight=False)
    if summary.refused:
        raise typer.Exit(1)


# ---- train and status ----------------------------------------------------------------------------


def _ensure_model(connection: Connection, model_id: str, model_type: str) -> None:
    try:
        model = connection.call("GetModel", model_id=model_id).model
    except ApiFailure as failure:
        if failure.code not in (codes.MODEL_DOES_NOT_EXIST, codes.CONN_DOES_NOT_EXIST):
            raise
        connection.call("PostModels", model=pb.Model(id=model_id, model_type_id=model_type))
        console.print(f"Created model '{model_id}' ({model_type}).")
        return
    if model.model_type_id != model_type:
        _fail(f"Model '{model_id}' is a {model.model_type_id}, not a {model_type}.")


def progress_fields(version: pb.ModelVersion) -> dict[str, str]:
    progress = json_format.MessageToDict(version.metadata).get("progress", {})
    epoch = progress.get("epoch")
    epochs = progress.get("num_epochs") or progress.get("epochs")
    loss = next((v for k, v in progress.items() if "loss" in k and isinstance(v, float)), None)
    eta = progress.get("eta_s")
    return {
        "percent": float(progress.get("percent", 0.0)),
        "epoch": ""
        if epoch is None
        else f"epoch {int(epoch)}" + (f"/{int(epochs)}" if epochs else ""),
        "loss": "" if loss is None else f"loss {loss:.4f}",
        "eta": "" if eta is None else f"ETA {int(eta)} s",
    }


def estimate_lines(version: pb.ModelVersion) -> list[str]:
    """What a queued version's progress says of its wait: the parts of the training's estimate
    and, with trainings ahead, when a worker should take it."""
    progress = json_format.MessageToDict(version.metadata).get("progress", {})
    if not progress.get("estimated_s"):
        return []
    lines = [f"Estimated {int(progress['estimated_s'])} s from Train to trained on an idle server:"]
    lines += [f"  {seconds:8.0f} s  {part}" for part, seconds in progress.get("estimate_parts", [])]
    if progress.get("starts_in_s"):
        lines.append(
            f"{int(progress['jobs_ahead'])} trainings ahead: a worker should take it in about "
            f"{progress['starts_in_s']:.0f} s."
        )
    return lines


def wait_for_training(connection: Connection, model_id: str, version_id: str) -> pb.ModelVersion:
    """Poll the version, showing percent, epoch, loss and ETA, until it leaves training."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[epoch]} {task.fields[loss]} {task.fields[eta]}"),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("queued", total=100.0, epoch="", loss="", eta="")
        last_line = ""
        while True:
            version = connection.call(
                "GetModelVersion", model_id=model_id, version_id=version_id
            ).model_version
            fields = progress_fields(version)
            status_name = codes.StatusCode.Name(version.status.code)
            label = (
                "queued" if version.status.code == codes.MODEL_QUEUED_FOR_TRAINING else "training"
            )
            progress.update(
                task,
                completed=fields.pop("percent"),
                description=label,
                **fields,
            )
            line = f"{status_name} {version.status.details}".strip()
            if not console.is_terminal and line != last_line:
                console.print(line, highlight=False)  # a log gets a line per change
                last_line = line
            if version.status.code not in TRAINING:
                if version.status.code == codes.MODEL_TRAINED:
                    progress.update(task, completed=100.0, description="trained")
                return version
            time.sleep(POLL_S)


def train(
    app_id: AppId,
    model_id: ModelId,
    model_type: Annotated[str, typer.Option("--type", help="Model type, e.g. visual-classifier.")],
    key: Key,
    template: Annotated[str, typer.Option(help="Template (ListModelTypes lists them).")] = "",
    params: Annotated[
        list[str] | None,
        typer.Option("--param", help="KEY=VALUE hyperparameter (JSON values too); repeat."),
    ] = None,
    concepts: Annotated[
        list[str] | None,
        typer.Option("--concept", help="A concept to learn; repeat (default: the app's all)."),
    ] = None,
    dataset_id: Annotated[
        str, typer.Option("--dataset", help="Train on this dataset (default: the app's inputs).")
    ] = "",
    wait: Annotated[bool, typer.Option(help="Show progress until the training ends.")] = False,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    user_id: UserId = ME,
) -> None:
    """Train a new version of a model (created when missing) on the app's labelled inputs."""
    connection = _connect(base_url, key, user_id, app_id)
    values = _params(params)
    if template:
        values["template"] = template
    if dataset_id:
        values["dataset_id"] = dataset_id
    try:
        chosen = concepts or [c.id for c in connection.pages("ListConcepts", "concepts")]
        if not chosen:
            _fail(f"App '{app_id}' has no concepts yet: import labelled inputs, or name --concept.")
        _ensure_model(connection, model_id, model_type)
        version = pb.ModelVersion()
        version.train_info.params.CopyFrom(_struct(values))
        version.output_info.data.concepts.extend(pb.Concept(id=c) for c in chosen)
        reply = connection.call("PostModelVersions", model_id=model_id, model_versions=[version])
        version_id = reply.model.model_version.id
        console.print(
            f"Training version {version_id} of '{model_id}' on {len(chosen)} concepts.",
            highlight=False,
        )
        for line in estimate_lines(reply.model.model_version):
            console.print(line, highlight=False)
        if not wait:
            return
        done = wait_for_training(connection, model_id, version_id)
    except ApiFailure as failure:
        _fail(str(failure))
    status_name = codes.StatusCode.Name(done.status.code)
    if done.status.code != codes.MODEL_TRAINED:
        _fail(f"{version_id}: {status_name}: {done.status.description}", 1)
    console.print(f"{version_id}: {status_name}.", highlight=False)


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def status(
    app_id: AppId,
    key: Key,
    model_id: Annotated[
        str, typer.Option("--model", help="Show this model's versions (default: every model).")
    ] = "",
    base_url: BaseUrl = DEFAULT_BASE_URL,
    user_id: UserId = ME,
) -> None:
    """The app's models and their newest versions, or one model's versions."""
    connection = _connect(base_url, key, user_id, app_id)
    try:
        if model_id:
            rows = [
                (model_id, v)
                for v in connection.pages("ListModelVersions", "model_versions", model_id=model_id)
            ]
        else:
            rows = [(m.id, m.model_version) for m in connection.pages("ListModels", "models")]
    except ApiFailure as failure:
        _fail(str(failure))
    table = Table("model", "version", "status", "progress")
    for model, version in rows:
        fields = progress_fields(version)
        training = version.status.code in TRAINING
        shown = f"{fields['percent']:.0f}% {fields['epoch']} {fields['eta']}" if training else ""
        table.add_row(
            model,
            version.id or "-",
            codes.StatusCode.Name(version.status.code) if version.id else "no version",
            shown.strip(),
        )
    console.print(table)


# ---- predict and export --------------------------------------------------------------------------


def _file_input(path: Path) -> pb.Input:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return pb.Input(
            id=input_id(path.stem), data=pb.Data(image=pb.Image(base64=path.read_bytes()))
        )
    return pb.Input(id=input_id(path.stem), data=pb.Data(text=pb.Text(raw=path.read_text())))


def _result(output: pb.Output) -> dict[str, Any]:
    data = output.data
    if output.status.code != codes.SUCCESS:
        return {"error": output.status.description}
    if data.concepts:
        return {"concepts": {c.id: round(c.value, 4) for c in data.concepts}}
    if data.regions:
        return {"regions": json_format.MessageToDict(data)["regions"]}
    if data.embeddings:
        return {"embedding_dimensions": len(data.embeddings[0].vector)}
    return {"text": data.text.raw}


def predict(
    files: Annotated[list[Path], typer.Argument(help="Images or text files.", exists=True)],
    app_id: AppId,
    model_id: ModelId,
    key: Key,
    version_id: Annotated[str, typer.Option("--version", help="Default: newest trained.")] = "",
    max_concepts: Annotated[int, typer.Option(min=0, help="Keep the top N concepts.")] = 0,
    min_value: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per file.")] = False,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    user_id: UserId = ME,
) -> None:
    """Predict on files with a trained model."""
    connection = _connect(base_url, key, user_id, app_id)
    model = pb.Model()
    model.output_info.output_config.max_concepts = max_concepts
    model.output_info.output_config.min_value = min_value
    results: list[tuple[Path, dict[str, Any]]] = []
    try:
        for start in range(0, len(files), MAX_PREDICT_BATCH):
            chunk = files[start : start + MAX_PREDICT_BATCH]
            reply = connection.call(
                "PostModelOutputs",
                ok=(codes.MIXED_STATUS,),
                model_id=model_id,
                version_id=version_id,
                inputs=[_file_input(p) for p in chunk],
                model=model,
            )
            results += [(p, _result(o)) for p, o in zip(chunk, reply.outputs, strict=True)]
    except ApiFailure as failure:
        _fail(str(failure))
    if as_json:
        for path, result in results:
            print(json.dumps({"file": str(path), **result}))
    else:
        table = Table("file", "prediction")
        for path, result in results:
            shown = result.get("concepts") or result.get("error") or result
            table.add_row(str(path), json.dumps(shown, ensure_ascii=False))
        console.print(table)
    if any("error" in r for _, r in results):
        raise typer.Exit(1)


def _newest_trained(connection: Connection, model_id: str) -> str:
    for version in connection.pages("ListModelVersions", "model_versions", model_id=model_id):
        if version.status.code == codes.MODEL_TRAINED:
            return str(version.id)
    _fail(f"Model '{model_id}' has no trained version to export yet.")


def export(
    app_id: AppId,
    model_id: ModelId,
    key: Key,
    version_id: Annotated[
        str, typer.Option("--version", help="A trained version (default: the newest trained).")
    ] = "",
    out: Annotated[Path, typer.Option(help="Where to write the export archive.")] = Path(
        "model-export.zip"
    ),
    base_url: BaseUrl = DEFAULT_BASE_URL,
    user_id: UserId = ME,
) -> None:
    """Export a trained version (the template's format, e.g. ONNX plus its labels) and download
    it."""
    connection = _connect(base_url, key, user_id, app_id)
    try:
        version_id = version_id or _newest_trained(connection, model_id)
        connection.call("PutModelVersionExports", model_id=model_id, version_id=version_id)
        with console.status("exporting"):
            while True:
                found = connection.call(
                    "GetModelVersionExport", model_id=model_id, version_id=version_id
                ).export
                if found.status.code not in EXPORTING:
                    break
                time.sleep(POLL_S)
    except ApiFailure as failure:
        _fail(str(failure))
    if found.status.code != codes.MODEL_EXPORTED:
        _fail(f"{codes.StatusCode.Name(found.status.code)}: {found.status.description}", 1)
    out.write_bytes(download(found.url, key))
    console.print(
        f"Wrote {out}: version {version_id}, {out.stat().st_size:,} bytes.", highlight=False
    )


# ---- dataset export ------------------------------------------------------------------------------

dataset_app = typer.Typer(help="Datasets from the command line.", no_args_is_help=True)


@dataset_app.command("export")
def dataset_export(
    app_id: AppId,
    dataset_id: Annotated[str, typer.Option("--dataset", help="Dataset id.")],
    format_name: Annotated[str, typer.Option("--format", help=", ".join(EXPORTERS))],
    out: Annotated[Path, typer.Option(help="Folder (imagefolder, coco) or file (jsonl, csv).")],
    key: Key,
    version_id: Annotated[
        str, typer.Option("--version", help="A frozen version (default: the inputs now).")
    ] = "",
    base_url: BaseUrl = DEFAULT_BASE_URL,
    user_id: UserId = ME,
) -> None:
    """Write a dataset as files `modelmill import` reads back."""
    if format_name not in EXPORTERS:
        _fail(f"Unknown format '{format_name}'; choose one of {', '.join(EXPORTERS)}.")
    connection = _connect(base_url, key, user_id, app_id)
    try:
        notes = EXPORTERS[format_name](dataset_inputs(connection, dataset_id, version_id), out)
    except ApiFailure as failure:
        _fail(str(failure))
    console.print(f"Wrote {out}.", highlight=False)
    for note in notes[:SHOWN_REFUSALS]:
        console.print(f"  left out or changed: {note}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the client commands to the `modelmill` command."""
    app.command("import")(import_)
    app.command()(train)
    app.command()(status)
    app.command()(predict)
    app.command()(export)
    app.add_typer(dataset_app, name="dataset")
