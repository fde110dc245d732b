"""Long fuzzing run over the REST bodies of the data and training calls.

    .venv/bin/python bench/fuzz.py [--examples 2000] [--seed 0]

Starts its own `modelmill serve` (SQLite, MODELMILL_WORKERS=0, a fresh data dir), makes a key
with `modelmill token create`, and sends hypothesis-generated bodies from
tests/api/fuzz_bodies.py (the strategies the default-tier test uses for its short run): random
types, huge and negative numbers, NaN and Infinity, deep nesting, bad base64, bad boxes and
polygons, unknown values. Every answer must be below 500 and not INTERNAL_SERVER_ISSUE, and a
refused call must leave the app as it was. Prints a table of calls and answers per RPC; exits 1
with the first failing case (hypothesis shrinks it) when a check fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
# The server is a `python -m modelmill` process: it must run this tree's code too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
)

from clarifai_grpc.grpc.api.status import status_code_pb2 as codes  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from api import fuzz_bodies  # noqa: E402
from conftest import Account, create_app, make_server  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="fuzzed calls to send")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed")
    args = parser.parse_args()

    answers: dict[str, Counter[str]] = {rpc: Counter() for rpc in fuzz_bodies.RPCS}
    send = fuzz_bodies.send

    def counted_send(app: Any, rpc: str, body: Any) -> Any:
        reply = send(app, rpc, body)
        try:
            code = reply.json()["status"]["code"]
            answers[rpc][
                codes.StatusCode.Name(code) if code in codes.StatusCode.values() else str(code)
            ] += 1
        except ValueError:
            answers[rpc][f"HTTP {reply.status_code}"] += 1
        return reply

    fuzz_bodies.send = counted_send  # check_answer sends through it
    with tempfile.TemporaryDirectory(prefix="modelmill-fuzz-") as folder:
        server = make_server(Path(folder) / "server").start()
        try:
            account = Account(fuzz_bodies.USER, server.token(fuzz_bodies.USER))
            app = fuzz_bodies.FuzzedApp(server.http_url, account.key, create_app(server, account))
            app.prepare()

            @settings(
                max_examples=args.examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(call=fuzz_bodies.calls)
            def fuzz(call: tuple[str, Any]) -> None:
                fuzz_bodies.check_answer(app, *call)

            started = time.monotonic()
            failed = False
            try:
                from hypothesis import seed

                seed(args.seed)(fuzz)()
            except AssertionError as error:
                failed = True
                print(f"FAILED: {error}", file=sys.stderr)
            elapsed = time.monotonic() - started
        finally:
            server.stop()

    table = Table(title=f"fuzzed calls ({elapsed:.0f} s, seed {args.seed})")
    table.add_column("RPC")
    table.add_column("calls", justify="right")
    table.add_column("answers")
    for rpc, counter in answers.items():
        table.add_row(
            rpc, str(sum(counter.values())), ", ".join(f"{k} {v}" for k, v in counter.most_common())
        )
    table.add_row("all", str(sum(sum(c.values()) for c in answers.values())), "")
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
