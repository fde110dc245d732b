"""The README's table of settings, generated from modelmill.settings.Settings and the CLI.

    .venv/bin/python scripts/settings_table.py            # print the table
    .venv/bin/python scripts/settings_table.py --write    # rewrite it in README.md
    .venv/bin/python scripts/settings_table.py --check    # exit 1 if README.md is out of date

The table sits in README.md between the two marker comments below. A setting's flag is listed
when a `modelmill` command has an option of the same name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import typer
from pydantic import AliasChoices

from modelmill.cli import app
from modelmill.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"
START = "<!-- settings-table:start (scripts/settings_table.py --write) -->"
END = "<!-- settings-table:end -->"


def command_options() -> dict[str, tuple[str, set[str]]]:
    """Option name → (its flag, the commands that take it), over every `modelmill` command."""
    found: dict[str, tuple[str, set[str]]] = {}

    # Duck-typed: recent typer versions carry their own copy of click's classes.
    def walk(command: Any, path: str) -> None:
        if hasattr(command, "commands"):
            for name, child in command.commands.items():
                walk(child, f"{path} {name}".strip())
            return
        for param in command.params:
            if getattr(param, "param_type_name", "") == "option" and param.name and param.opts:
                flag = max(param.opts, key=len)
                found.setdefault(param.name, (flag, set()))[1].add(path)

    walk(typer.main.get_command(app), "")
    return found


def table() -> str:
    options = command_options()
    prefix = Settings.model_config.get("env_prefix", "")
    rows = [
        "| flag | environment variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        flag = ""
        if name in options:
            text, commands = options[name]
            flag = f"`{text}` ({', '.join(sorted(commands))})"
        default = field.get_default()
        shown = "" if default in (None, "") else f"`{default}`"
        meaning = (field.description or "").replace("|", "\\|")
        names = [f"{prefix}{name.upper()}"]
        if isinstance(field.validation_alias, AliasChoices):  # also read from AWS_* variables
            names = [str(choice) for choice in field.validation_alias.choices]
        variables = ", ".join(f"`{variable}`" for variable in names)
        rows.append(f"| {flag} | {variables} | {shown} | {meaning} |")
    return "\n".join(rows)


def with_table(readme: str) -> str:
    head, start, rest = readme.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"README.md lacks the markers {START!r} … {END!r}")
    return f"{head}{START}\n{table()}\n{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description="The README's settings table.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite the table in README.md")
    group.add_argument("--check", action="store_true", help="fail if README.md is out of date")
    args = parser.parse_args()
    if not (args.write or args.check):
        print(table())
        return
    current = README.read_text()
    wanted = with_table(current)
    if args.write:
        README.write_text(wanted)
    elif current != wanted:
        print(
            "README.md's settings table is out of date with modelmill/settings.py: run "
            "`.venv/bin/python scripts/settings_table.py --write`.",
            file=sys.stderr,
        )
        raise SystemExit(1)


if __name__ == "__main__":
    main()
