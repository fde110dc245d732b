"""Hypothesis strategies for REST bodies of the data and training calls, and the checks every
answer must pass: never a 5xx or INTERNAL_SERVER_ISSUE, and never a half-written call (a refused
call leaves the app as it was; a batch stores exactly the items it reports as stored).

Shared by tests/api/test_fuzz_rest.py (a short run in the default tier) and bench/fuzz.py (long).
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from typing import Any

import requests
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from hypothesis import strategies as st
from PIL import Image

from modelmill.api.rest import _routes

USER = "fuzzer"
DATASET, MODEL = "d", "m"  # exist in the fuzzed app, so calls on them get past the lookup
HTTP_SERVER_ERROR = 500
# The calls fuzzed: the data and training calls of API.md, by the REST route of each.
RPCS = [
    "PostInputs",
    "PostAnnotations",
    "PostConcepts",
    "PatchConcepts",
    "PostDatasets",
    "PatchDatasets",
    "PostDatasetInputs",
    "PostDatasetVersions",
    "PostModels",
    "PatchModels",
    "PostModelVersions",
    "PostModelOutputs",
    "PostModelVersionsTrainingTimeEstimate",
    "DeleteInputs",
    "PostWorkflows",
    "PatchWorkflows",
    "PostWorkflowResults",
]
PATH_VALUES = {
    "user_id": USER,
    "app_id": "",
    "dataset_id": DATASET,
    "model_id": MODEL,
    "workflow_id": "Universal",  # every app's default workflow: the base embedding models
}


def route_of(rpc: str, app_id: str) -> tuple[str, str]:
    """(verb, path) of the first REST route of `rpc` that names its app in the path."""
    values = {**PATH_VALUES, "app_id": app_id}
    for verb, routes in _routes({rpc}).items():
        for route in routes:
            pairs = zip(route.segments, route.variables, strict=True)
            names = [s.rsplit(".", 1)[-1] for s, v in pairs if v]
            if "app_id" in names and all(n in values for n in names):
                parts = [
                    values[s.rsplit(".", 1)[-1]] if v else s
                    for s, v in zip(route.segments, route.variables, strict=True)
                ]
                return verb, "/" + "/".join(parts)
    raise LookupError(f"{rpc} has no REST route with the app in its path")


# ---- strategies --------------------------------------------------------------------------------


def _png(side: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (side % 256, 40, 90)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 0.5, 1e308, -1e308, 2**63, 2**64]),
)
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "cat", "a/b", "../../etc", "ünïcödé", "x" * 300, "null", "NaN"]),
)
base64_values = st.one_of(
    st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
    st.sampled_from(["", "====", "not base64!", "aGVsbG8", _png(4), _png(40)]),
    texts,
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
any_json = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=12,
)


@dataclass(frozen=True)
class Deep:
    """JSON nested `depth` levels ({"data": [{"data": [...]}]}). Written out as text when the
    body is sent: as Python objects it would overflow the client's own recursion limit."""

    depth: int

    @property
    def marker(self) -> str:
        return f"@@deep-{self.depth}@@"

    def text(self) -> str:
        opening = "".join("[" if level % 2 else '{"data": ' for level in range(self.depth))
        closing = "".join("]" if level % 2 else "}" for level in reversed(range(self.depth)))
        return opening + "1" + closing


deep = st.builds(Deep, st.integers(min_value=50, max_value=5000))


def to_json(body: Any) -> str:
    """The body as JSON text, NaN and Infinity included (what a careless client sends), each
    Deep written out in place."""
    found: list[Deep] = []

    def encode(value: Any) -> Any:
        if isinstance(value, Deep):
            found.append(value)
            return value.marker
        raise TypeError(type(value))

    text = json.dumps(body, allow_nan=True, default=encode)
    for nested in found:
        text = text.replace(json.dumps(nested.marker), nested.text(), 1)
    return text


STRUCTURED_SHARE = 8  # of every 10 values; the rest any JSON at all, or a deep one


def either(structured: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The field as the API expects it, most of the time (bodies nest several fields deep, and
    each level may break), else any JSON at all, or a deeply nested one."""
    # one_of would merge repeated branches, so the weights are drawn explicitly.
    choices = [structured] * STRUCTURED_SHARE + [any_json, deep]
    return st.sampled_from(choices).flatmap(lambda chosen: chosen)


ids = either(st.one_of(st.sampled_from(["i1", "i2", "c", DATASET, MODEL, "x" * 40]), texts))
concept = either(
    st.fixed_dictionaries({"id": ids}, optional={"name": texts, "value": either(numbers)})
)
box = st.fixed_dictionaries(
    {},
    optional={k: either(numbers) for k in ("top_row", "left_col", "bottom_row", "right_col")},
)
region = either(
    st.fixed_dictionaries(
        {
            "region_info": either(
                st.one_of(
                    st.fixed_dictionaries({"bounding_box": either(box)}),
                    st.fixed_dictionaries(
                        {
                            "polygon": either(
                                st.fixed_dictionaries(
                                    {
                                        "points": st.lists(
                                            either(
                                                st.fixed_dictionaries(
                                                    {"row": numbers, "col": numbers}
                                                )
                                            ),
                                            max_size=5,
                                        )
                                    }
                                )
                            )
                        }
                    ),
                    st.fixed_dictionaries(
                        {
                            "mask": st.fixed_dictionaries(
                                {"image": st.fixed_dictionaries({"base64": base64_values})}
                            )
                        }
                    ),
                )
            )
        },
        optional={"data": st.fixed_dictionaries({"concepts": st.lists(concept, max_size=2)})},
    )
)
data = either(
    st.fixed_dictionaries(
        {},
        optional={
            "image": either(
                st.fixed_dictionaries({}, optional={"base64": base64_values, "url": texts})
            ),
            "text": either(st.fixed_dictionaries({"raw": either(texts)})),
            "concepts": st.lists(concept, max_size=3),
            "regions": st.lists(region, max_size=2),
            "metadata": any_json,
        },
    )
)
an_input = either(
    st.fixed_dictionaries(
        {"data": data},
        optional={"id": ids, "dataset_ids": st.lists(ids, max_size=2), "status": any_json},
    )
)
params = either(
    st.dictionaries(
        st.sampled_from(
            [
                "template",
                "dataset_id",
                "dataset_version_id",
                "invalid_data_tolerance_percent",
                "max_training_minutes",
                "num_epochs",
                "batch_size",
                "learning_rate",
                "enrich_dataset",
                "image_size",
                "seed",
            ]
        ),
        either(scalars),
        max_size=4,
    )
)
model_version = either(
    st.fixed_dictionaries(
        {},
        optional={
            "id": ids,
            "train_info": either(st.fixed_dictionaries({"params": params})),
            "output_info": either(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "data": st.fixed_dictionaries({"concepts": st.lists(concept, max_size=3)}),
                        "output_config": any_json,
                        "params": any_json,
                    },
                )
            ),
        },
    )
)
model = either(
    st.fixed_dictionaries(
        {"id": ids},
        optional={
            "model_type_id": either(
                st.sampled_from(["embedding-classifier", "visual-classifier", "nope", ""])
            ),
            "output_info": any_json,
            "model_version": model_version,
        },
    )
)
node_ids = either(st.one_of(st.sampled_from(["a", "b"]), texts))
workflow_node = either(
    st.fixed_dictionaries(
        {"id": node_ids},
        optional={
            "model": either(
                st.fixed_dictionaries(
                    {
                        "id": either(
                            st.sampled_from(["all-minilm-l6-v2", "efficientnet-lite0", MODEL])
                        )
                    },
                    optional={"model_version": either(st.fixed_dictionaries({"id": ids}))},
                )
            ),
            "node_inputs": either(
                st.lists(st.fixed_dictionaries({"node_id": node_ids}), max_size=2)
            ),
        },
    )
)
workflow = either(
    st.fixed_dictionaries(
        {"id": ids},
        optional={"nodes": either(st.lists(workflow_node, max_size=3)), "description": texts},
    )
)
BODIES: dict[str, st.SearchStrategy[Any]] = {
    "PostInputs": st.fixed_dictionaries({"inputs": either(st.lists(an_input, max_size=4))}),
    "PostAnnotations": st.fixed_dictionaries(
        {
            "annotations": either(
                st.lists(
                    st.fixed_dictionaries({"input_id": ids, "data": data}, optional={"id": ids}),
                    max_size=3,
                )
            )
        }
    ),
    "PostConcepts": st.fixed_dictionaries({"concepts": either(st.lists(concept, max_size=3))}),
    "PatchConcepts": st.fixed_dictionaries(
        {"concepts": either(st.lists(concept, max_size=3)), "action": either(texts)}
    ),
    "PostDatasets": st.fixed_dictionaries(
        {"datasets": either(st.lists(st.fixed_dictionaries({"id": ids}), max_size=3))}
    ),
    "PatchDatasets": st.fixed_dictionaries(
        {
            "datasets": either(st.lists(st.fixed_dictionaries({"id": ids}), max_size=2)),
            "action": either(texts),
        }
    ),
    "PostDatasetInputs": st.fixed_dictionaries(
        {"dataset_inputs": either(st.lists(st.fixed_dictionaries({"input": an_input}), max_size=3))}
    ),
    "PostDatasetVersions": st.fixed_dictionaries(
        {
            "dataset_versions": either(
                st.lists(st.fixed_dictionaries({}, optional={"id": ids}), max_size=2)
            )
        }
    ),
    "PostModels": st.fixed_dictionaries({"models": either(st.lists(model, max_size=2))}),
    "PatchModels": st.fixed_dictionaries(
        {"models": either(st.lists(model, max_size=2)), "action": either(texts)}
    ),
    "PostModelVersions": st.fixed_dictionaries(
        {"model_versions": either(st.lists(model_version, max_size=2))}
    ),
    "PostModelOutputs": st.fixed_dictionaries({"inputs": either(st.lists(an_input, max_size=3))}),
    "PostModelVersionsTrainingTimeEstimate": st.fixed_dictionaries(
        {"model_versions": either(st.lists(model_version, max_size=2))},
        optional={"estimated_input_count": either(numbers)},
    ),
    "DeleteInputs": st.fixed_dictionaries({"ids": either(st.lists(ids, max_size=3))}),
    "PostWorkflows": st.fixed_dictionaries({"workflows": either(st.lists(workflow, max_size=2))}),
    "PatchWorkflows": st.fixed_dictionaries(
        {"workflows": either(st.lists(workflow, max_size=2)), "action": either(texts)}
    ),
    "PostWorkflowResults": st.fixed_dictionaries(
        {"inputs": either(st.lists(an_input, max_size=3))}, optional={"output_config": any_json}
    ),
}
calls = st.sampled_from(RPCS).flatmap(lambda rpc: st.tuples(st.just(rpc), BODIES[rpc]))


# ---- the checks --------------------------------------------------------------------------------


@dataclass
class FuzzedApp:
    """An app with a dataset and a model, and a raw REST client for it."""

    http_url: str
    key: str
    app_id: str
    last_snapshot: dict[str, Any] | None = None  # after the last call, when it was checked

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.key}"}

    def get(self, path: str) -> Any:
        url = f"{self.http_url}/v2/users/{USER}/apps/{self.app_id}/{path}"
        return requests.get(url, headers=self.headers, timeout=60).json()

    def prepare(self) -> None:
        base = f"{self.http_url}/v2/users/{USER}/apps/{self.app_id}"
        for path, body in (
            ("datasets", {"datasets": [{"id": DATASET}]}),
            ("models", {"models": [{"id": MODEL, "model_type_id": "embedding-classifier"}]}),
        ):
            reply = requests.post(f"{base}/{path}", json=body, headers=self.headers, timeout=60)
            assert reply.json()["status"]["code"] == codes.SUCCESS, reply.text

    def snapshot(self) -> dict[str, Any]:
        """Everything a call could write, as the API lists it."""
        pages = "?per_page=1000"
        return {
            "inputs": sorted(i["id"] for i in self.get(f"inputs{pages}").get("inputs", [])),
            "concepts": sorted(
                (c["id"], c.get("name", ""))
                for c in self.get(f"concepts{pages}").get("concepts", [])
            ),
            "datasets": sorted(d["id"] for d in self.get(f"datasets{pages}").get("datasets", [])),
            "models": sorted(
                json.dumps(m, sort_keys=True) for m in self.get(f"models{pages}").get("models", [])
            ),
            "annotations": len(self.get(f"annotations{pages}").get("annotations", [])),
            "versions": len(self.get(f"models/{MODEL}/versions{pages}").get("model_versions", [])),
            "workflows": sorted(
                json.dumps(w, sort_keys=True)
                for w in self.get(f"workflows{pages}").get("workflows", [])
            ),
            "dataset_versions": len(
                self.get(f"datasets/{DATASET}/versions{pages}").get("dataset_versions", [])
            ),
        }


def send(app: FuzzedApp, rpc: str, body: Any) -> requests.Response:
    verb, path = route_of(rpc, app.app_id)
    return requests.request(
        verb,
        app.http_url + path,
        data=to_json(body).encode(),
        headers={**app.headers, "Content-Type": "application/json"},
        timeout=120,
    )


def check_answer(app: FuzzedApp, rpc: str, body: Any) -> None:
    """Send one fuzzed call and check the answer and what it left in the app."""
    before = app.last_snapshot or app.snapshot()
    app.last_snapshot = None  # unknown until read again, should this call's checks fail
    reply = send(app, rpc, body)
    assert reply.status_code < HTTP_SERVER_ERROR, (rpc, reply.status_code, reply.text[:500])
    status = reply.json()["status"]
    assert status["code"] != codes.INTERNAL_SERVER_ISSUE, (rpc, status)
    after = app.snapshot()
    if status["code"] not in (codes.SUCCESS, codes.MIXED_STATUS):
        assert after == before, (rpc, status, "a refused call changed the app")
    if rpc == "PostInputs" and status["code"] in (codes.SUCCESS, codes.MIXED_STATUS):
        stored = [
            i["id"]
            for i in reply.json().get("inputs", [])
            if i.get("status", {}).get("code", codes.INPUT_DOWNLOAD_SUCCESS)
            in (codes.INPUT_DOWNLOAD_SUCCESS, codes.SUCCESS)
        ]
        assert sorted(set(after["inputs"]) - set(before["inputs"])) == sorted(stored), (
            status,
            "the inputs reported stored are not the inputs stored",
        )
    app.last_snapshot = after
