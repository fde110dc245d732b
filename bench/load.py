"""Load: client threads at once on one `modelmill serve` with two training workers, each mixing
PostInputs (batches of new labelled texts), PostModelOutputs on a trained transfer-learning model
and, every tenth call, a new training of it. It checks that every input is stored exactly once
and that no call fails with a server error, and records each call's latency percentiles.

    .venv/bin/python bench/load.py [--threads 8] [--seconds 60] [--postgres-url URL]

The server is started fresh (SQLite, or a new database on the PostgreSQL server named), over
gRPC with the official clarifai-grpc stub. A benchmark: it measures and prints a table; it exits
non-zero when an input was lost or doubled or a call failed with a server error.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from clarifai_grpc.grpc.api import resources_pb2, service_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import struct_pb2

from ingest import APP, USER, fresh_postgres_database, make_text, running_servers, stub_for

CONCEPTS = ["cat", "dog", "bird"]
BATCH = 16
SEED_INPUTS = 60
TRAIN_EVERY = 10  # one call in this many starts a training
SERVER_ERRORS = {codes.INTERNAL_SERVER_ISSUE, codes.DATABASE_FAIL_TO_GET_CONNECTIONS}
TRAINED_WAIT_S = 600.0
PERCENTILES = (50, 95, 99)


@dataclass
class Calls:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # non-SUCCESS
    server_errors: list[str] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def text_input(input_id: str, rng: np.random.Generator) -> resources_pb2.Input:
    concept = CONCEPTS[int(rng.integers(len(CONCEPTS)))]
    return resources_pb2.Input(
        id=input_id,
        data=resources_pb2.Data(
            text=resources_pb2.Text(raw=f"{concept} {make_text(rng)}"),
            concepts=[resources_pb2.Concept(id=concept, value=1.0)],
        ),
    )


def client(stub, key: str, number: int, deadline: float, calls: Calls) -> None:
    metadata = (("authorization", f"Key {key}"),)
    app = resources_pb2.UserAppIDSet(user_id=USER, app_id=APP)
    rng = np.random.default_rng(number)
    for count in itertools.count():
        if time.monotonic() > deadline:
            return
        if count % TRAIN_EVERY == TRAIN_EVERY - 1:
            kind = "PostModelVersions"
            request = service_pb2.PostModelVersionsRequest(
                user_app_id=app,
                model_id="load",
                model_versions=[resources_pb2.ModelVersion(output_info=resources_pb2.OutputInfo(
                    data=resources_pb2.Data(concepts=[resources_pb2.Concept(id=c)
                                                      for c in CONCEPTS])))],
            )  # fmt: skip
            call = stub.PostModelVersions
        elif count % 2:
            kind = "PostModelOutputs"
            inputs = [resources_pb2.Input(data=resources_pb2.Data(
                text=resources_pb2.Text(raw=make_text(rng)))) for _ in range(4)]  # fmt: skip
            request = service_pb2.PostModelOutputsRequest(
                user_app_id=app, model_id="load", inputs=inputs
            )
            call = stub.PostModelOutputs
        else:
            kind = "PostInputs"
            ids = [f"c{number}-{count}-{k}" for k in range(BATCH)]
            request = service_pb2.PostInputsRequest(
                user_app_id=app, inputs=[text_input(i, rng) for i in ids]
            )
            call = stub.PostInputs
        started = time.perf_counter()
        try:
            reply = call(request, metadata=metadata)
        except Exception as error:  # a transport failure: the server did not answer properly
            with calls.lock:
                calls.server_errors.append(f"{kind}: {type(error).__name__} {str(error)[:200]}")
            continue
        elapsed = time.perf_counter() - started
        with calls.lock:
            calls.latencies[kind].append(elapsed)
            if reply.status.code in SERVER_ERRORS:
                calls.server_errors.append(f"{kind}: {reply.status.description}")
            elif reply.status.code != codes.SUCCESS:
                calls.refused[kind] += 1
            elif kind == "PostInputs":
                calls.stored += ids
            elif kind == "PostModelVersions":
                calls.versions.append(reply.model.model_version.id)


def stored_ids(stub, key: str) -> list[str]:
    metadata = (("authorization", f"Key {key}"),)
    app = resources_pb2.UserAppIDSet(user_id=USER, app_id=APP)
    found = []
    for page in itertools.count(1):
        reply = stub.ListInputs(
            service_pb2.ListInputsRequest(user_app_id=app, page=page, per_page=1000),
            metadata=metadata,
        )
        if not reply.inputs:
            return found
        found += [i.id for i in reply.inputs]


def wait_trained(stub, key: str, version_ids: list[str]) -> dict[str, int]:
    """Each version's final status, waiting for the queue to drain."""
    metadata = (("authorization", f"Key {key}"),)
    app = resources_pb2.UserAppIDSet(user_id=USER, app_id=APP)
    final: dict[str, int] = {}
    deadline = time.monotonic() + TRAINED_WAIT_S
    while len(final) < len(version_ids) and time.monotonic() < deadline:
        for version_id in version_ids:
            if version_id in final:
                continue
            reply = stub.GetModelVersion(
                service_pb2.GetModelVersionRequest(
                    user_app_id=app, model_id="load", version_id=version_id
                ),
                metadata=metadata,
            )
            code = reply.model_version.status.code
            if code not in (codes.MODEL_QUEUED_FOR_TRAINING, codes.MODEL_TRAINING):
                final[version_id] = code
        time.sleep(1.0)
    return final


def prepare(stub, key: str) -> None:
    """Labelled texts, a transfer-learning model and its first trained version."""
    metadata = (("authorization", f"Key {key}"),)
    app = resources_pb2.UserAppIDSet(user_id=USER, app_id=APP)
    rng = np.random.default_rng(1000)
    seed = [text_input(f"seed-{n}", rng) for n in range(SEED_INPUTS)]
    reply = stub.PostInputs(service_pb2.PostInputsRequest(user_app_id=app, inputs=seed),
                            metadata=metadata)  # fmt: skip
    assert reply.status.code == codes.SUCCESS, reply.status
    model = resources_pb2.Model(id="load", model_type_id="embedding-classifier")
    model.output_info.data.concepts.extend(resources_pb2.Concept(id=c) for c in CONCEPTS)
    stub.PostModels(service_pb2.PostModelsRequest(user_app_id=app, models=[model]),
                    metadata=metadata)  # fmt: skip
    version = resources_pb2.ModelVersion(train_info=resources_pb2.TrainInfo(
        params=struct_pb2.Struct()))  # fmt: skip
    request = service_pb2.PostModelVersionsRequest(
        user_app_id=app, model_id="load", model_versions=[version]
    )
    reply = stub.PostModelVersions(request, metadata=metadata)
    assert reply.status.code == codes.SUCCESS, reply.status
    final = wait_trained(stub, key, [reply.model.model_version.id])
    assert set(final.values()) == {codes.MODEL_TRAINED}, final


def run(database_url: str, threads: int, seconds: float) -> bool:
    with running_servers(database_url, None, "load", workers=2) as [server]:
        stub = stub_for(server, "gRPC")
        prepare(stub, server.key)
        calls = Calls()
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        deadline = started + seconds
        workers = [
            threading.Thread(target=client, args=(stub, server.key, n, deadline, calls))
            for n in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        wall = time.monotonic() - started
        final = wait_trained(stub, server.key, calls.versions)
        ids = stored_ids(stub, server.key)
    backend = "PostgreSQL" if database_url else "SQLite"
    print(f"\n{backend}: {threads} client threads for {wall:.0f} s, 2 workers, load "
          f"{load_before:.1f} → {os.getloadavg()[0]:.1f}")  # fmt: skip
    print("| call | calls | refused | p50 ms | p95 ms | p99 ms |")
    print("|---|--:|--:|--:|--:|--:|")
    for kind, latencies in sorted(calls.latencies.items()):
        p50, p95, p99 = (1000 * np.percentile(latencies, q) for q in PERCENTILES)
        print(f"| {kind} | {len(latencies)} | {calls.refused[kind]} | {p50:.0f} | {p95:.0f} "
              f"| {p99:.0f} |")  # fmt: skip
    expected = sorted([f"seed-{n}" for n in range(SEED_INPUTS)] + calls.stored)
    duplicated = len(ids) - len(set(ids))
    lost = sorted(set(expected) - set(ids))
    unexpected = sorted(set(ids) - set(expected))
    trained = sum(code == codes.MODEL_TRAINED for code in final.values())
    print(f"inputs: {len(calls.stored)} stored by the clients ({len(calls.stored) / wall:.0f}/s), "
          f"{len(ids)} listed; lost {len(lost)}, doubled {duplicated}, unexpected "
          f"{len(unexpected)}")  # fmt: skip
    print(f"trainings: {len(calls.versions)} queued, {trained} trained, "
          f"{len(calls.versions) - len(final)} unfinished after the wait")  # fmt: skip
    print(f"server errors: {len(calls.server_errors)}")
    for error in calls.server_errors[:10]:
        print("  ", error)
    return not (lost or duplicated or unexpected or calls.server_errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--postgres-url", default="")
    args = parser.parse_args()
    ok = run("", args.threads, args.seconds)
    if args.postgres_url:
        with fresh_postgres_database(args.postgres_url) as url:
            ok = run(url, args.threads, args.seconds) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
