"""The `modelmill` command: serve, token, and the tools that run without a server."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from modelmill.settings import Settings

app = typer.Typer(
    help="modelmill: train custom models behind the Clarifai v2 API.", no_args_is_help=True
)
token_app = typer.Typer(help="Create and revoke personal access tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")
console = Console()

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Data directory [env MODELMILL_DATA_DIR; default ./modelmill-data]."
    ),
]


def _settings(data_dir: Path | None, **overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)  # type: ignore[arg-type]


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[
        str | None, typer.Option(help="Bind address [MODELMILL_HOST; 127.0.0.1].")
    ] = None,
    http_port: Annotated[
        int | None, typer.Option(help="REST + web port [MODELMILL_HTTP_PORT; 8080].")
    ] = None,
    grpc_port: Annotated[
        int | None, typer.Option(help="gRPC port [MODELMILL_GRPC_PORT; 18080].")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Training workers to start [MODELMILL_WORKERS; 1].")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate for gRPC TLS [MODELMILL_TLS_CERT].")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="PEM key for gRPC TLS [MODELMILL_TLS_KEY].")
    ] = None,
) -> None:
    """Run the gRPC and REST API, the web UI and training workers on the embedded defaults."""
    from modelmill.server import serve as run

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = _settings(
        data_dir,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        workers=workers,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    run(settings, announce=lambda line: console.print(f"[bold green]modelmill[/] {line}"))


@app.command()
def worker(data_dir: DataDir = None) -> None:
    """Run one training worker (start several on one or more machines sharing the database)."""
    from modelmill.jobs.worker import main

    main(_settings(data_dir))


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option("--user", help="User id; created if missing.")],
    data_dir: DataDir = None,
    app_id: Annotated[
        str | None, typer.Option("--app", help="Limit the key to this app (created if missing).")
    ] = None,
) -> None:
    """Create a personal access token; the key is the last line printed."""
    from modelmill.services import Env, auth

    env = Env.open(_settings(data_dir))
    token = auth.create_token(env, user, app_id)
    scope = f"app '{app_id}'" if app_id else "all apps"
    console.print(
        f"Created a key for user '{user}' ({scope}). Send it as 'authorization: Key <key>'."
    )
    print(token)


@token_app.command("revoke")
def token_revoke(
    key: Annotated[str, typer.Argument(help="The key to revoke.")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a personal access token."""
    from modelmill.services import Env, auth

    env = Env.open(_settings(data_dir))
    if not auth.revoke_token(env, key):
        console.print("[red]No such key.[/]")
        raise typer.Exit(1)
    console.print("Revoked.")


@app.command()
def calibrate(
    data_dir: DataDir = None,
    templates: Annotated[
        list[str] | None,
        typer.Option(
            "--template",
            help="A template to calibrate, by name or alias; repeat for several (all when none).",
        ),
    ] = None,
    params: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="KEY=VALUE set in every trial of the templates that have KEY, "
            "e.g. pretrained_weights=None where no weights can be had.",
        ),
    ] = None,
    time_scale: Annotated[
        float,
        typer.Option(help="Scales each trial's length: 0.5 halves the time calibrating takes."),
    ] = 1.0,
    export: Annotated[
        Path | None,
        typer.Option(
            help="Also write the runs to this calibration file (how the ones modelmill ships "
            "are made)."
        ),
    ] = None,
) -> None:
    """Time short real trainings of each template on this machine (synthetic data) and fit its
    training-time estimate for this hardware; finished trainings refine it later."""
    import sys

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    from modelmill.services import Env, calibrations
    from modelmill.training.calibrate import fit_report

    env = Env.open(_settings(data_dir))
    try:
        chosen = calibrations.templates_named(templates or [])
        overrides = dict(item.split("=", 1) for item in params or [])
    except ValueError as error:
        console.print(f"[red]{error}[/] (--param takes KEY=VALUE)")
        raise typer.Exit(2) from None
    tasks: dict[str, TaskID] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:

        def on_trial(key: str, done: int, total: int, what: str) -> None:
            if key not in tasks:
                tasks[key] = progress.add_task(key, total=total)
            progress.update(tasks[key], completed=done, total=total, description=f"{key}: {what}")

        results = calibrations.calibrate_templates(env, chosen, overrides, time_scale, on_trial)
    for result in results:
        title = f"{result.template.model_type_id}/{result.template.name}/{result.kind}"
        if result.skipped:
            console.print(f"[yellow]{title}: not calibrated: {result.skipped}[/]")
        else:
            console.print(*fit_report(title, result.measured))
    if export is not None:
        command = "modelmill calibrate " + " ".join(sys.argv[2:])
        calibrations.export_calibration(export, results, command=command)
        console.print(f"Wrote {export}.")
