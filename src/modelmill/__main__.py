"""`python -m modelmill` runs the CLI."""

from modelmill.cli import app

app()
