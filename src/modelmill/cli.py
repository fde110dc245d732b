"""The `modelmill` command: serve, token, and the tools that run without a server; the API
client commands (import, train, status, predict, export, dataset) live in modelmill.client."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from modelmill.client.commands import register as register_client_commands
from modelmill.settings import Settings

app = typer.Typer(
    help="modelmill: train custom models behind the Clarifai v2 API.", no_args_is_help=True
)
token_app = typer.Typer(help="Create and revoke personal access tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")
register_client_commands(app)
# Piped into a log file, rich would fit everything to 80 columns and cut the calibration
# tables' numbers short; a terminal (or COLUMNS) sets its own width.
LOG_WIDTH = 160
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else LOG_WIDTH)

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
    busy_machine: Annotated[
        bool,
        typer.Option(
            help="Time each trial once, without first waiting for other work on the machine to "
            "stop (the time it waited for a CPU is still taken off): for a machine that is never "
            "quiet. Say so beside the figures."
        ),
    ] = False,
) -> None:
    """Time short real trainings of each template on this machine (synthetic data) and fit its
    training-time estimate for this hardware; finished trainings refine it later."""
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
    from modelmill.training.trials import Quiet

    env = Env.open(_settings(data_dir))
    try:
        chosen = calibrations.templates_named(templates or [])
        overrides = _key_values(params)
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
            if not console.is_terminal:  # a log file gets a line per trial instead of a bar
                console.print(f"{key} [{done}/{total}] {what}", highlight=False)

        quiet = Quiet(wait_s=0.0, attempts=1) if busy_machine else None
        results = calibrations.calibrate_templates(
            env, chosen, overrides, time_scale, on_trial, quiet
        )
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


def _key_values(items: list[str] | None) -> dict[str, object]:
    """--param KEY=VALUE options as a dict; a VALUE that is JSON is parsed (30, 0.5, {...})."""
    import json

    values: dict[str, object] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param takes KEY=VALUE, not '{item}'")
        try:
            values[key] = json.loads(text)
        except ValueError:
            values[key] = text
    return values


@app.command()
def estimate(
    template_name: Annotated[str, typer.Argument(metavar="TEMPLATE", help="Template or alias.")],
    inputs: Annotated[int, typer.Option(min=1, help="How many inputs the training learns from.")],
    params: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="KEY=VALUE hyperparameter (JSON values too: trainer_config='{...}'); repeat.",
        ),
    ] = None,
    model_type: Annotated[
        str | None, typer.Option(help="The model type, where a template name has several.")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="image or text, for a template that takes both.")
    ] = None,
    megapixels: Annotated[
        float, typer.Option(min=0.001, help="Mean stored image size in megapixels.")
    ] = 0.3,
    chars: Annotated[float, typer.Option(min=1, help="Mean text length in characters.")] = 300,
    data_dir: DataDir = None,
) -> None:
    """How long a training would take on the hardware that trains, rounded to 15-minute steps
    as the web UI shows it, with its cost and peak memory (the API's estimate, without an app)."""
    from pydantic import ValidationError

    from modelmill.services import Env, calibrations
    from modelmill.services.estimates import estimate_workload
    from modelmill.services.queue_ahead import with_queue
    from modelmill.training.contract import DataError
    from modelmill.training.estimator import DataStats, input_kinds

    settings = _settings(data_dir)
    try:
        found = [
            t
            for t in calibrations.templates_named([template_name])
            if model_type in (None, t.model_type_id)
        ]
        if len(found) != 1:
            types = ", ".join(t.model_type_id for t in found) or "none"
            raise ValueError(f"'{template_name}' is a template of {types}: choose --model-type")
        template = found[0]
        values = _key_values(params)
        fields = template.Params.model_fields
        known = set(fields) | {f.alias for f in fields.values() if f.alias}
        if unknown := sorted(set(values) - known):
            raise ValueError(
                f"{template.name} has no parameter {', '.join(unknown)}; "
                f"it has {', '.join(sorted(known))}"
            )
        hyper = template.Params.model_validate(values)
        chosen = next(k for k in input_kinds(template) if kind in (None, k))
    except StopIteration:
        console.print(f"[red]{template.name} trains on {' or '.join(input_kinds(template))}[/]")
        raise typer.Exit(2) from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        console.print(f"[red]{problems}[/]")
        raise typer.Exit(2) from None
    except ValueError as error:
        console.print(f"[red]{error}[/]")
        raise typer.Exit(2) from None
    stats = DataStats(inputs, chosen, mean_megapixels=megapixels, mean_chars=chars)
    env = Env.open(settings)
    try:
        result = with_queue(env, estimate_workload(env, template, chosen, hyper, stats))
    except DataError as error:  # params the template cannot train with
        console.print(f"[red]{error}[/]")
        raise typer.Exit(2) from None
    memory = f" · {result.memory}" if result.memory else ""
    console.print(
        f"[bold]{result.display}[/] ({result.seconds:,.0f} s) · {result.cost} at "
        f"${settings.price_per_hour_usd:,.2f}/h{memory}",
        highlight=False,
    )
    console.print(
        f"{template.name} ({template.model_type_id}) on {result.input_count:,} {chosen}s, "
        f"on {result.hardware}: {result.basis}.",
        highlight=False,
    )
    for part, seconds in result.parts.items():
        console.print(f"  {seconds:8,.0f} s  {part}", highlight=False)
    if result.starts_in_s:
        console.print(
            f"{result.jobs_ahead} trainings ahead: it would start in about "
            f"{result.starts_in_s:,.0f} s.",
            highlight=False,
        )
