"""The web UI without a browser: pages render from the services, sessions and CSRF protect every
form, errors come back as words on the page, and the settings form follows the registry.

Runs in the default tier: the HTTP app in process, driven by starlette's TestClient.
"""

from __future__ import annotations

import base64
import io
import re
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import BaseModel, Field

from modelmill.api.servicer import Servicer
from modelmill.server import create_app
from modelmill.services import (
    AppScope,
    Env,
    apps,
    auth,
    datasets,
    models,
    queue_ahead,
    training,
    workflows,
)
from modelmill.services.auth import resolve_app
from modelmill.services.inputs import NewInput, get_input_with_labels, post_inputs
from modelmill.settings import Settings
from modelmill.training import registry
from modelmill.web import rendering
from modelmill.web import session as sessions
from web.helpers import COLOURS, png, yolo_zip

USER = "grace"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Site:
    env: Env
    client: TestClient
    key: str

    def csrf(self, path: str = "/apps") -> str:
        match = CSRF.search(self.client.get(path).text)
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def post(self, path: str, data: dict[str, Any] | None = None, **options: Any) -> Any:
        """A form post as the page would send it, with this session's CSRF token."""
        return self.client.post(path, data={**(data or {}), "csrf_token": self.csrf()}, **options)

    def sign_in(self) -> None:
        token = self.csrf("/login")
        reply = self.client.post(
            "/login", data={"token": self.key, "csrf_token": token}, follow_redirects=False
        )
        assert reply.status_code == 303, reply.text

    def app(self, app_id: str) -> AppScope:
        principal = auth.authenticate(self.env, f"Key {self.key}")
        apps.create_apps(self.env, principal, USER, [(app_id, "", "")])
        return resolve_app(self.env, principal, USER, app_id)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    env = Env.open(Settings(data_dir=tmp_path, embed_on_upload=False, workers=0))
    key = auth.create_token(env, USER)
    with TestClient(create_app(Servicer(env))) as client:
        yield Site(env, client, key)
    env.db.dispose()


def errors(html: str) -> list[str]:
    """The error messages a page shows, as a person reads them."""
    found = re.findall(r'class="alert error"[^>]*>(.*?)</p>', html, re.S)
    return [unescape(re.sub(r"\s+", " ", message).strip()) for message in found]


def unescape(html: str) -> str:
    return (
        html.replace("&#39;", "'")
        .replace("&#34;", '"')
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
    )


def labelled_images(env: Env, app: AppScope, per_concept: int = 4) -> None:
    specs = [
        NewInput(image_bytes=png(colour, seed=i), labels={"concepts": [{"id": name, "value": 1}]})
        for name, colour in COLOURS.items()
        for i in range(per_concept)
    ]
    post_inputs(env, app, specs)


# ---- sessions and CSRF ------------------------------------------------------------------------


def test_visitor_is_sent_to_sign_in(site: Site) -> None:
    reply = site.client.get("/apps/anything/models", follow_redirects=False)
    assert reply.status_code == 303
    assert reply.headers["location"] == "/login?next=%2Fapps%2Fanything%2Fmodels"


def test_sign_in_with_a_bad_token_says_why(site: Site) -> None:
    reply = site.client.post("/login", data={"token": "nope", "csrf_token": site.csrf("/login")})
    assert reply.status_code == 400
    assert errors(reply.text) == ["The API key is not valid for this server."]
    assert 'type="password"' in reply.text


def test_sign_in_goes_back_to_the_page_asked_for(site: Site) -> None:
    site.app("zoo")
    token = site.csrf("/login")
    reply = site.client.post(
        "/login",
        data={"token": site.key, "csrf_token": token, "next": "/apps/zoo/models"},
        follow_redirects=False,
    )
    assert reply.headers["location"] == "/apps/zoo/models"
    reply = site.client.post(
        "/login",
        data={"token": site.key, "csrf_token": site.csrf("/login"), "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert reply.headers["location"] == "/apps"


def test_session_cookie_is_http_only_and_same_site_lax(site: Site) -> None:
    token = site.csrf("/login")
    reply = site.client.post(
        "/login", data={"token": site.key, "csrf_token": token}, follow_redirects=False
    )
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith(f"{sessions.COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert site.key not in cookie, "the key travels encrypted"


def test_post_without_the_csrf_token_is_refused(site: Site) -> None:
    site.sign_in()
    reply = site.client.post("/apps", data={"id": "forged"})
    assert reply.status_code == 403
    assert "This form has expired or did not come from this site" in reply.text
    reply = site.client.post("/apps", data={"id": "forged", "csrf_token": "guessed"})
    assert reply.status_code == 403
    reply = site.client.post("/apps", data={"id": "forged"}, headers={"X-CSRF-Token": "guessed"})
    assert reply.status_code == 403
    assert "forged" not in site.client.get("/apps").text


def test_post_with_the_csrf_token_is_done(site: Site) -> None:
    site.sign_in()
    reply = site.post("/apps", {"id": "real"})
    assert reply.status_code == 200 and str(reply.url).endswith("/apps/real")
    assert "Created app &#39;real&#39;." in reply.text


def test_csrf_token_of_another_session_is_refused(site: Site, tmp_path: Path) -> None:
    site.sign_in()
    other = TestClient(site.client.app)
    stolen = CSRF.search(other.get("/login").text).group(1)  # type: ignore[union-attr]
    reply = site.client.post("/apps", data={"id": "x", "csrf_token": stolen})
    assert reply.status_code == 403


def test_forged_session_cookie_is_ignored(site: Site) -> None:
    site.sign_in()
    value = site.client.cookies[sessions.COOKIE]
    site.client.cookies.clear()
    site.client.cookies.set(
        sessions.COOKIE, value[:-4] + ("AAAA" if value[-4:] != "AAAA" else "BBBB")
    )
    assert site.client.get("/apps", follow_redirects=False).status_code == 303


def test_revoked_key_ends_the_session(site: Site) -> None:
    site.sign_in()
    auth.revoke_token(site.env, site.key)
    reply = site.client.get("/apps")
    assert str(reply.url).endswith("/login")
    assert any("revoked" in e for e in errors(reply.text))


def test_sign_out_ends_the_session(site: Site) -> None:
    site.sign_in()
    reply = site.post("/logout", follow_redirects=False)
    assert reply.headers["location"] == "/login?signed_out=1"
    assert site.client.get("/apps", follow_redirects=False).status_code == 303


def test_session_cookie_round_trip_and_expiry(site: Site) -> None:
    session = sessions.WebSession.sign_in("secret-key", USER)
    value = sessions.encode(site.env, session)
    assert sessions.decode(site.env, value) == session
    assert sessions.decode(site.env, value[:-1]) is None
    session.expires_at = time.time() - 1
    assert sessions.decode(site.env, sessions.encode(site.env, session)) is None


# ---- pages ------------------------------------------------------------------------------------


def test_every_page_renders_with_data(site: Site) -> None:
    app = site.app("shop")
    box = {
        "region_info": {
            "bounding_box": {"top_row": 0.1, "left_col": 0.1, "bottom_row": 0.5, "right_col": 0.5}
        },
        "data": {"concepts": [{"id": "logo", "value": 1}]},
    }
    post_inputs(
        site.env,
        app,
        [
            NewInput(id="img", image_bytes=png((10, 200, 10)), labels={"regions": [box]}),
            NewInput(
                id="txt",
                text="A <b>bold</b> review",
                labels={"concepts": [{"id": "good", "value": 1}]},
            ),
        ],
    )
    datasets.create_datasets(site.env, app, [("all", "everything", {})])
    datasets.add_dataset_inputs(site.env, app, "all", ["img", "txt"])
    (version,) = datasets.create_versions(site.env, app, "all", [("", "first")])
    models.create_model(site.env, app, "reviews", "embedding-classifier")
    _, queued = training.create_version(
        site.env, app, "reviews", training.TrainRequest(concepts=["good"])
    )
    site.sign_in()
    pages = {
        "/apps": "shop",
        "/apps/shop": "Inputs",
        "/apps/shop/inputs": 'data-input-id="img"',
        "/apps/shop/concepts": "logo",
        "/apps/shop/datasets": "everything",
        "/apps/shop/datasets/all": version.id[:8],
        "/apps/shop/models": "reviews",
        "/apps/shop/models/reviews": "Create New Model Version",
        "/apps/shop/models/reviews/versions/new": "Train Model",
        f"/apps/shop/models/reviews/versions/{queued.id}": "Cancel training",
    }
    for path, expected in pages.items():
        reply = site.client.get(path)
        assert reply.status_code == 200, (path, reply.text[:500])
        assert expected in reply.text, path
        assert "Traceback" not in reply.text
    grid = site.client.get("/apps/shop/inputs").text
    assert (
        '<rect x="6.4" y="4.0" width="19.2" height="16.0" class="region"/>'
        in grid.replace("\n", "").replace("  ", "")
        or 'class="region"' in grid
    )
    assert "A &lt;b&gt;bold&lt;/b&gt; review" in grid, "texts are escaped"


def test_the_workflows_page_shows_each_node_and_what_it_reads(site: Site) -> None:
    app = site.app("shop")
    nodes = (workflows.Node("embed", "all-minilm-l6-v2"),)
    spec = workflows.WorkflowSpec("search", "Text search", nodes)
    workflows.create_workflows(site.env, app, [spec])
    site.sign_in()

    page = site.client.get("/apps/shop/workflows")

    assert page.status_code == 200
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.text))
    assert "Universal (default: runs on upload)" in text
    assert "search Text search" in text
    assert "embed all-minilm-l6-v2 text-embedder" in text and "the input" in text


def test_missing_things_are_pages_with_words_not_stack_traces(site: Site) -> None:
    site.app("shop")
    site.sign_in()
    reply = site.client.get("/apps/shop/models/ghost")
    assert reply.status_code == 404
    assert errors(reply.text) == ["Model 'ghost' does not exist in app 'shop'."]
    reply = site.client.get("/apps/nowhere")
    assert errors(reply.text) == [f"App 'nowhere' does not exist for user '{USER}'."]
    reply = site.client.get("/apps/shop/inputs?page=many")
    assert reply.status_code == 400 and "Traceback" not in reply.text


def test_cancel_a_queued_training_from_its_page(site: Site) -> None:
    app = site.app("shop")
    labelled_images(site.env, app, per_concept=2)
    models.create_model(site.env, app, "colours", "embedding-classifier")
    _, version = training.create_version(
        site.env, app, "colours", training.TrainRequest(concepts=["red", "blue"])
    )
    site.sign_in()
    page = f"/apps/shop/models/colours/versions/{version.id}"
    assert 'hx-trigger="every 2s"' in site.client.get(page).text, "a running version polls"
    reply = site.post(f"{page}/cancel")
    assert "Training was cancelled by the user." in reply.text
    assert 'hx-trigger="every 2s"' not in reply.text and "Cancel training" not in reply.text


def test_inputs_grid_is_paged_with_a_thousand_inputs(site: Site) -> None:
    app = site.app("big")
    for start in range(0, 1000, 125):
        post_inputs(
            site.env,
            app,
            [
                NewInput(
                    text=f"review number {i}", labels={"concepts": [{"id": "review", "value": 1}]}
                )
                for i in range(start, start + 125)
            ],
        )
    site.sign_in()
    site.client.get("/apps/big/inputs")  # warm the templates
    started = time.perf_counter()
    first = site.client.get("/apps/big/inputs")
    elapsed = time.perf_counter() - started
    assert first.text.count('class="card input-card"') == 48
    assert "Page 1 of 21" in first.text and "review number 999" in first.text
    last = site.client.get("/apps/big/inputs?page=21")
    assert last.text.count('class="card input-card"') == 1000 - 20 * 48
    print(
        f"inputs page with 1,000 inputs rendered in {elapsed * 1000:.0f} ms"
    )  # measured, not asserted


# ---- forms keep their values and say what is wrong -----------------------------------------------


def test_upload_without_files_says_so_and_keeps_the_concept(site: Site) -> None:
    site.app("shop")
    site.sign_in()
    reply = site.post("/apps/shop/inputs/upload", {"concept": "cats"})
    assert reply.status_code == 400
    assert errors(reply.text)[0].startswith("Choose at least one file to upload")
    assert 'name="concept" list="concept-list" value="cats"' in reply.text


def test_upload_reports_each_bad_file_as_json_for_the_script(site: Site) -> None:
    site.app("shop")
    site.sign_in()
    files = [
        ("files", ("a.png", png((1, 2, 3)), "image/png")),
        ("files", ("b.png", b"junk", "image/png")),
    ]
    reply = site.client.post(
        "/apps/shop/inputs/upload",
        data={"concept": "dots", "csrf_token": site.csrf()},
        files=files,
        headers={"Accept": "application/json"},
    )
    body = reply.json()
    assert body["added"] == 1 and body["failed"] == 1
    assert body["errors"][0]["file"] == "b.png"
    assert "not an image" in body["errors"][0]["error"]


def test_upload_of_a_zipped_yolo_dataset_stores_the_boxes(site: Site) -> None:
    app = site.app("shop")
    site.sign_in()
    reply = site.client.post(
        "/apps/shop/inputs/upload",
        data={"concept": "", "csrf_token": site.csrf()},
        files=[("files", ("shapes.zip", yolo_zip(), "application/zip"))],
        headers={"Accept": "application/json"},
    )
    body = reply.json()
    assert body["added"] == 2 and body["failed"] == 2, body
    assert "class 5 is not one of 0-1" in body["errors"][0]["error"]
    _, labels = get_input_with_labels(site.env, app, "a")
    (region,) = labels["regions"]
    assert region["region_info"]["bounding_box"]["top_row"] == 0.25
    assert region["data"]["concepts"][0]["id"] == "red"


def test_upload_of_a_zipped_mask_folder_stores_a_mask_per_class(site: Site) -> None:
    app = site.app("shop")
    site.sign_in()
    indices = np.zeros((20, 40), np.uint8)
    indices[:10] = 1
    buffer, mask = io.BytesIO(), io.BytesIO()
    Image.fromarray(indices, "L").save(mask, "PNG")
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("images/a.png", png(COLOURS["red"], size=(40, 20)))
        archive.writestr("masks/a.png", mask.getvalue())
        archive.writestr("classes.txt", "background\nsky\n")
    reply = site.client.post(
        "/apps/shop/inputs/upload",
        data={"concept": "", "csrf_token": site.csrf()},
        files=[("files", ("seg.zip", buffer.getvalue(), "application/zip"))],
        headers={"Accept": "application/json"},
    )
    assert reply.json() == {"added": 1, "failed": 0, "errors": []}
    _, labels = get_input_with_labels(site.env, app, "a")
    (region,) = labels["regions"]
    stored = base64.b64decode(region["region_info"]["mask"]["image"]["base64"])
    assert ((np.asarray(Image.open(io.BytesIO(stored))) > 0) == (indices == 1)).all()
    assert region["data"]["concepts"][0]["id"] == "sky"


def test_training_without_concepts_shows_the_error_and_keeps_the_form(site: Site) -> None:
    app = site.app("shop")
    labelled_images(site.env, app)
    models.create_model(site.env, app, "colours", "embedding-classifier")
    site.sign_in()
    reply = site.post(
        "/apps/shop/models/colours/versions",
        {
            "output_info.params.min_value": "0.3",
            "train_info.params.enrich_dataset": "Disabled",
        },
    )
    assert reply.status_code == 400
    assert errors(reply.text) == [
        "Choose the concepts this version should predict (output_info.data.concepts)."
    ]
    assert 'name="output_info.params.min_value" value="0.3"' in reply.text
    assert '<option value="Disabled" selected>' in reply.text


def test_train_model_starts_training_and_goes_to_the_version(site: Site) -> None:
    app = site.app("shop")
    labelled_images(site.env, app)
    models.create_model(site.env, app, "colours", "embedding-classifier")
    site.sign_in()
    reply = site.post(
        "/apps/shop/models/colours/versions",
        {
            "output_info.data.concepts": ["red", "blue"],
            "output_info.output_config.concepts_mutually_exclusive": "on",
            "output_info.params.max_concepts": "1",
        },
        follow_redirects=False,
    )
    assert reply.status_code == 303
    version_id = reply.headers["location"].rsplit("/", 1)[-1]
    _, version = models.get_version(site.env, app, "colours", version_id)
    assert version.output_info["output_config"]["concepts_mutually_exclusive"] is True
    assert version.output_info["params"]["max_concepts"] == 1
    assert [c["id"] for c in version.output_info["data"]["concepts"]] == ["red", "blue"]


def test_estimate_is_rounded_to_15_minute_steps_with_its_cost(site: Site) -> None:
    app = site.app("shop")
    labelled_images(site.env, app)
    models.create_model(site.env, app, "colours", "embedding-classifier")
    site.sign_in()
    reply = site.client.get(
        "/apps/shop/models/colours/versions/new/estimate",
        params={"output_info.data.concepts": ["red"]},
    )
    assert "Estimated training time" in reply.text
    assert "under 15 min" in reply.text and re.search(r"\$\d+\.\d\d", reply.text)
    assert "For 4 inputs" in reply.text
    # The whole wait in parts (the job's start-up first), and what the embedding cache holds.
    assert "start-up: job process" in reply.text
    assert "from Train to trained, on an idle server" in reply.text
    assert "0 of 4 inputs&#39; embeddings cached" in reply.text


# ---- a deep fine-tuning template: the form comes from its Params --------------------------------


class AccurateParams(BaseModel):
    num_epochs: int = Field(10, ge=1, le=200, description="Passes over the training data.")
    learning_rate: float = Field(0.001, ge=1e-6, le=1.0, description="Step size of the optimiser.")
    augment: Literal["none", "light", "heavy"] = Field("light", description="Random image changes.")
    min_value: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Smallest score returned.",
        json_schema_extra={"path": "output_info.params"},
    )


class SmallParams(BaseModel):
    batch_size: int = Field(32, ge=1, le=512, description="Images per optimiser step.")


class FakeTemplate:
    model_type_id: ClassVar[str] = "visual-classifier"
    input_kind: ClassVar[str] = "image"
    aliases: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, name: str, params: type[BaseModel], recommended: bool, seconds: float
    ) -> None:
        self.name, self.Params, self.recommended, self.seconds = name, params, recommended, seconds
        self.description = f"The {name} recipe."

    def check_params(self, params: BaseModel, weights_dir: Path | None) -> None:
        pass

    def estimate(self, num_inputs: int, params: BaseModel, hardware: Any) -> float:
        return self.seconds


@pytest.fixture
def deep_templates(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(
        registry,
        "TEMPLATES",
        [
            # The fakes stand in for the real visual-classifier templates, so the test does not
            # change when those do.
            *(t for t in registry.TEMPLATES if t.model_type_id != FakeTemplate.model_type_id),
            FakeTemplate("accurate", AccurateParams, True, 75 * 60 + 20),
            FakeTemplate("small", SmallParams, False, 10 * 60),
        ],
    )
    registry.model_type_specs.cache_clear()
    yield
    registry.model_type_specs.cache_clear()


def test_deep_template_settings_come_from_its_params(site: Site, deep_templates: None) -> None:
    app = site.app("vision")
    labelled_images(site.env, app)
    models.create_model(site.env, app, "classes", "visual-classifier")
    site.sign_in()
    page = site.client.get("/apps/vision/models/classes/versions/new").text
    labels = re.findall(r'class="label-text">([^<]+)<', page)
    assert labels[:4] == ["Dataset", "Concepts", "Invalid data_tolerance_percent", "Template"]
    assert "Training and inference settings" in page
    for name, hint in [
        ("num_epochs", "Default 10; from 1 to 200."),
        ("learning_rate", "Default 0.001; from 1e-06 to 1."),
    ]:
        assert f'name="train_info.params.{name}"' in page
        assert hint in page
    assert "Passes over the training data." in page and '<option value="heavy"' in page
    assert 'name="output_info.params.min_value"' in page
    assert "Base embed_model" not in page and "Enrich dataset" not in page

    fragment = site.client.get(
        "/apps/vision/models/classes/versions/new/template",
        params={"train_info.params.template": "small"},
    ).text
    assert 'name="train_info.params.batch_size"' in fragment and "num_epochs" not in fragment

    def estimate() -> str:
        return site.client.get(
            "/apps/vision/models/classes/versions/new/estimate",
            params={"train_info.params.template": "accurate", "output_info.data.concepts": "red"},
        ).text

    assert "1 h 15 min" in (shown := estimate()) and "$5.02" in shown
    site.env.settings.price_per_hour_usd = 8.0  # MODELMILL_PRICE_PER_HOUR_USD
    assert "1 h 15 min" in (shown := estimate()) and "$10.04" in shown


def test_tolerance_over_100_shows_the_error_and_keeps_the_form(
    site: Site, deep_templates: None
) -> None:
    app = site.app("vision")
    labelled_images(site.env, app)
    models.create_model(site.env, app, "classes", "visual-classifier")
    site.sign_in()
    reply = site.post(
        "/apps/vision/models/classes/versions",
        {
            "output_info.data.concepts": ["red", "blue"],
            "train_info.params.invalid_data_tolerance_percent": "150",
            "train_info.params.template": "accurate",
            "train_info.params.num_epochs": "3",
        },
    )
    assert reply.status_code == 400
    assert errors(reply.text) == [
        "invalid_data_tolerance_percent is 150; give a percentage from 0 to 100."
    ]
    assert 'name="train_info.params.invalid_data_tolerance_percent" value="150"' in reply.text
    assert 'name="train_info.params.num_epochs" value="3"' in reply.text
    assert re.search(r'value="red" checked', reply.text) and re.search(
        r'value="blue" checked', reply.text
    )


def test_out_of_range_hyperparameter_says_which(site: Site, deep_templates: None) -> None:
    app = site.app("vision")
    labelled_images(site.env, app)
    models.create_model(site.env, app, "classes", "visual-classifier")
    site.sign_in()
    reply = site.post(
        "/apps/vision/models/classes/versions",
        {
            "output_info.data.concepts": ["red"],
            "train_info.params.template": "accurate",
            "train_info.params.num_epochs": "lots",
        },
    )
    assert errors(reply.text) == ["num_epochs must be a number, not 'lots'."]
    reply = site.post(
        "/apps/vision/models/classes/versions",
        {
            "output_info.data.concepts": ["red"],
            "train_info.params.template": "accurate",
            "train_info.params.num_epochs": "500",
        },
    )
    (message,) = errors(reply.text)
    assert message.startswith("Invalid parameters for template 'accurate': num_epochs:")


def test_adding_nothing_to_a_dataset_says_so_and_keeps_the_ticks(site: Site) -> None:
    app = site.app("shop")
    post_inputs(
        site.env, app, [NewInput(id="one", text="first"), NewInput(id="two", text="second")]
    )
    datasets.create_datasets(site.env, app, [("picked", "", {})])
    site.sign_in()
    reply = site.post(
        "/apps/shop/inputs/add-to-dataset", {"input_id": ["one"], "dataset_id": "gone"}
    )
    assert reply.status_code == 400
    assert errors(reply.text) == ["Dataset 'gone' does not exist in app 'shop'."]
    assert 'value="one" checked' in reply.text and 'value="two" checked' not in reply.text
    reply = site.post("/apps/shop/inputs/add-to-dataset", {"dataset_id": "picked"})
    assert errors(reply.text) == ["Tick the inputs to add first."]
    reply = site.post(
        "/apps/shop/inputs/add-to-dataset", {"input_id": ["one", "two"], "dataset_id": "picked"}
    )
    assert "Added 2 of 2 inputs to &#39;picked&#39;" in reply.text


def test_a_training_version_shows_progress_and_time_left(site: Site) -> None:
    from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

    from modelmill.store.tables import ModelVersion

    app = site.app("shop")
    labelled_images(site.env, app, per_concept=2)
    models.create_model(site.env, app, "colours", "embedding-classifier")
    _, version = training.create_version(
        site.env, app, "colours", training.TrainRequest(concepts=["red", "blue"])
    )
    with site.env.db.session() as session:  # what a worker writes while it trains
        row = session.get(ModelVersion, version.pk)
        assert row is not None
        row.status_code = codes.MODEL_TRAINING
        row.status_description = "Model is currently training"
        row.progress = {
            "percent": 42.5,
            "eta_s": 75.0,
            "elapsed_s": 30.0,
            "stage": "embedding",
            "total_inputs": 4,
            "estimated_s": 100,
        }
    site.sign_in()
    page = site.client.get(f"/apps/shop/models/colours/versions/{version.id}").text
    assert 'aria-valuenow="42.5"' in page and "width: 42.5%" in page
    assert "about <strong>1 min 15 s</strong> left" in page and "embedding" in page
    assert "estimated 1 min 40 s in all" in page
    listing = site.client.get("/apps/shop/models/colours").text
    assert "42.5%" in listing and "about 1 min 15 s left" in listing
    assert 'hx-trigger="every 2s"' in listing

    with site.env.db.session() as session:  # and once it is trained
        row = session.get(ModelVersion, version.pk)
        assert row is not None
        row.status_code = codes.MODEL_TRAINED
        row.completed_at = row.created_at
        row.progress = {**row.progress, "percent": 100.0, "elapsed_s": 110.0}
    page = site.client.get(f"/apps/shop/models/colours/versions/{version.id}").text
    assert "after 1 min 50 s of training (estimated 1 min 40 s)" in page


def test_the_settings_form_offers_the_apps_trained_embedders(site: Site) -> None:
    from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

    from modelmill.store.tables import ModelVersion

    app, elsewhere = site.app("vision"), site.app("elsewhere")
    models.create_model(site.env, app, "shapes", "embedding-classifier")
    with site.env.db.session() as session:  # an embedder of each app, trained (rows alone)
        for scope, version_id in ((app, "mine"), (elsewhere, "theirs")):
            model = models.create_model(site.env, scope, "emb", "visual-embedder")
            session.add(
                ModelVersion(
                    model_pk=model.pk,
                    id=version_id,
                    status_code=codes.MODEL_TRAINED,
                    artifacts_key="0" * 64,
                )
            )
    models.create_model(site.env, app, "untrained-emb", "visual-embedder")
    site.sign_in()
    page = site.client.get("/apps/vision/models/shapes/versions/new").text
    assert '<option value="efficientnet-lite0"' in page
    assert '<option value="emb@mine"' in page
    assert "theirs" not in page and "untrained-emb" not in page


def test_a_version_queued_behind_another_says_when_it_should_start(site: Site) -> None:
    app = site.app("queue")
    labelled_images(site.env, app, per_concept=2)
    models.create_model(site.env, app, "colours", "embedding-classifier")
    request = training.TrainRequest(concepts=["red", "blue"])
    first = queue_ahead.estimate_queued_version(
        site.env, training.create_version(site.env, app, "colours", request)[1]
    )
    second = queue_ahead.estimate_queued_version(
        site.env, training.create_version(site.env, app, "colours", request)[1]
    )
    site.sign_in()

    page = site.client.get(f"/apps/queue/models/colours/versions/{second.id}").text

    assert second.progress["starts_in_s"] == first.progress["estimated_s"] > 0
    shown = rendering.duration(second.progress["starts_in_s"])
    assert f"1 training ahead: a worker should take it in about <strong>{shown}</strong>" in page
    first_page = site.client.get(f"/apps/queue/models/colours/versions/{first.id}").text
    assert "ahead" not in first_page
