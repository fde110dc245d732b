"""The web UI end to end in Chromium: sign in, create an app, upload labelled images, create an
embedding-classifier, open Create New Model Version, see the estimate, press Train Model, watch it
reach Trained, read the evaluation and predict in the try-it box. Screenshots of every page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from web.helpers import COLOURS, USER, concept_zip, create_app, png, sign_in, texts_csv

pytestmark = pytest.mark.browser

IMAGES_PER_CONCEPT = 8
TRAINING_TIMEOUT_MS = 240_000
PREDICTOR_LOAD_TIMEOUT_MS = 120_000


def upload_files(page: Any, tmp_path: Path, files: dict[str, bytes], concept: str = "") -> None:
    paths = []
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        paths.append(str(path))
    page.set_input_files("#upload-files", paths)
    page.get_by_label("Concept for these files").fill(concept)
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_selector("[data-upload-text]:has-text('Added')")


def test_train_a_model_with_the_click_of_a_button(
    page: Any, ui_key: str, shoot: Any, tmp_path: Path
) -> None:
    page.goto("/apps")
    page.wait_for_url("**/login")
    page.get_by_label("Personal access token").fill(ui_key)
    shoot(page, "01-sign-in")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/apps")

    page.get_by_label("App id").fill("colours")
    page.get_by_label("Description (optional)").fill("Red or blue?")
    shoot(page, "02-apps")
    page.get_by_role("button", name="Create app").click()
    page.wait_for_url("**/apps/colours")
    expect(page.get_by_text("Created app 'colours'.")).to_be_visible()
    shoot(page, "03-app")

    page.get_by_role("navigation", name="App sections").get_by_role("link", name="Inputs").click()
    page.wait_for_url("**/apps/colours/inputs")
    for concept, colour in COLOURS.items():
        files = {f"{concept}-{i}.png": png(colour, seed=i) for i in range(IMAGES_PER_CONCEPT)}
        upload_files(page, tmp_path, files, concept)
        assert f"Added {IMAGES_PER_CONCEPT} inputs." in page.inner_text("[data-upload-text]")
    page.wait_for_selector(".input-card >> nth=15")
    assert page.locator(".input-card img").count() == 2 * IMAGES_PER_CONCEPT
    assert page.locator(".input-card .chip", has_text="red").count() == IMAGES_PER_CONCEPT
    shoot(page, "04-inputs")

    page.get_by_role("link", name="Models").click()
    page.get_by_label("Model id").fill("red-or-blue")
    page.get_by_label("Model type").select_option("embedding-classifier")
    shoot(page, "05-models")
    page.get_by_role("button", name="Create model").click()
    page.wait_for_url("**/apps/colours/models/red-or-blue")
    shoot(page, "06-model")

    page.get_by_role("link", name="Create New Model Version").click()
    page.wait_for_url("**/versions/new")
    # Exactly the seed's fields for transfer learning.
    for label in ("Dataset", "Base embed_model", "Concepts mutually_exclusive", "Enrich dataset"):
        assert page.get_by_label(label, exact=True).count() == 1, label
    expect(page.get_by_role("group", name="Concepts")).to_be_visible()
    expect(page.get_by_text("Inference settings", exact=True)).to_be_visible()
    page.get_by_role("checkbox", name="red").check()
    page.get_by_role("checkbox", name="blue").check()
    page.get_by_label("Concepts mutually_exclusive").check()
    estimate = page.locator("#estimate")
    estimate.locator(".estimate-time").wait_for()
    page.wait_for_function(
        "document.querySelector('#estimate').innerText.includes('For 16 inputs')"
    )
    assert "under 15 min" in estimate.inner_text()
    assert re.search(r"\$\d+\.\d\d", estimate.inner_text())
    train = page.get_by_role("button", name="Train Model")
    assert estimate.bounding_box()["y"] < train.bounding_box()["y"], (
        "the estimate sits above Train Model"
    )
    page.get_by_text("Inference settings", exact=True).click()
    shoot(page, "07-create-version")
    train.click()

    page.wait_for_url(re.compile(r".*/versions/[0-9a-f]{32}$"))
    shoot(page, "08-version-training")
    page.wait_for_selector("[data-status='Trained']", timeout=TRAINING_TIMEOUT_MS)
    expect(page.locator("#confusion-matrix svg")).to_be_visible()
    assert page.locator("#roc-curve svg polyline").count() == 2
    assert page.locator("#pr-curve svg polyline").count() == 2
    expect(page.get_by_role("heading", name="Sample predictions")).to_be_visible()
    shoot(page, "09-version-trained")

    page.set_input_files(
        "#try-image", str(_write(tmp_path / "probe.png", png(COLOURS["red"], seed=999)))
    )
    page.get_by_role("button", name="Predict").click()
    top = page.locator("#prediction .prediction-bars li").first
    top.wait_for(
        timeout=PREDICTOR_LOAD_TIMEOUT_MS
    )  # the first prediction loads torch and the model
    assert top.locator(".prediction-name").inner_text() == "red"
    page.locator("#try-it").scroll_into_view_if_needed()
    shoot(page, "10-try-it")

    page.get_by_role("button", name="Export model").click()
    download = page.get_by_role("link", name="Download the export")
    download.wait_for(timeout=120_000)
    href = download.get_attribute("href")
    assert requests.get(page.url.split("/apps/")[0] + href, timeout=30).content[:2] == b"PK"

    page.get_by_role("link", name="red-or-blue").first.click()
    page.wait_for_selector("#versions .badge.ok")
    shoot(page, "11-model-trained")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_zip_and_csv_uploads_report_each_bad_file(
    page: Any, ui_key: str, shoot: Any, tmp_path: Path
) -> None:
    sign_in(page, ui_key)
    create_app(page, "uploads")
    page.goto("/apps/uploads/inputs")
    upload_files(
        page,
        tmp_path,
        {
            "colours.zip": concept_zip(per_concept=3),
            "reviews.csv": texts_csv(
                [
                    ("A lovely sunny day", "happy"),
                    ("Rain again, and cold", "sad|grey"),
                    ("", "happy"),
                ]
            ),
            "notes.txt": b"",
        },
    )
    report = page.inner_text("[data-upload-status]")
    assert "Added 8 inputs; 3 could not be added" in report
    assert "colours.zip: colours/red/broken.png" in report
    assert "reviews.csv row 4" in report and "The text is empty." in report
    assert "notes.txt: The file is empty" in report
    page.wait_for_selector(".snippet")
    assert page.locator(".input-card .chip", has_text="blue").count() == 3
    assert page.locator(".snippet", has_text="Rain again").count() == 1
    shoot(page, "12-uploads-zip-csv")


def test_bounding_boxes_are_drawn_on_images(
    page: Any, ui_server: Any, ui_key: str, shoot: Any
) -> None:
    sign_in(page, ui_key)
    create_app(page, "boxes")
    import base64

    region = {
        "region_info": {
            "bounding_box": {"top_row": 0.1, "left_col": 0.2, "bottom_row": 0.7, "right_col": 0.8}
        },
        "data": {"concepts": [{"id": "square", "value": 1}]},
    }
    reply = requests.post(
        f"{ui_server.http_url}/v2/users/{USER}/apps/boxes/inputs",
        json={
            "inputs": [
                {
                    "id": "boxed",
                    "data": {
                        "image": {
                            "base64": base64.b64encode(png((30, 160, 90), size=(120, 80))).decode()
                        },
                        "regions": [region],
                    },
                }
            ]
        },
        headers={"Authorization": f"Key {ui_key}"},
        timeout=30,
    ).json()
    assert reply["status"]["code"] == 10000, reply
    page.goto("/apps/boxes/inputs")
    rect = page.locator(".input-card[data-input-id='boxed'] svg.overlay rect.region")
    assert rect.count() == 1
    assert float(rect.get_attribute("x")) == pytest.approx(24.0)
    assert float(rect.get_attribute("width")) == pytest.approx(72.0)
    assert (
        page.locator(".input-card[data-input-id='boxed'] .region-chip")
        .inner_text()
        .endswith("square")
    )
    shoot(page, "13-bounding-boxes")


def test_datasets_add_inputs_and_show_version_metrics(
    page: Any, ui_key: str, shoot: Any, tmp_path: Path
) -> None:
    sign_in(page, ui_key)
    create_app(page, "sets")
    page.goto("/apps/sets/inputs")
    upload_files(
        page, tmp_path, {f"r{i}.png": png(COLOURS["red"], seed=i) for i in range(3)}, "red"
    )
    upload_files(
        page, tmp_path, {f"b{i}.png": png(COLOURS["blue"], seed=i) for i in range(2)}, "blue"
    )
    page.get_by_role("link", name="Datasets").click()
    page.get_by_label("Dataset id").fill("reds")
    page.get_by_role("button", name="Create dataset").click()
    page.wait_for_url("**/datasets/reds")
    page.get_by_label("Inputs to add").select_option("red")
    page.get_by_role("button", name="Add inputs").click()
    expect(page.get_by_text("Added 3 inputs")).to_be_visible()
    page.get_by_label("Description (optional)").fill("three reds")
    page.get_by_role("button", name="Create version").click()
    expect(page.get_by_text("Created version")).to_be_visible()
    row = page.locator("table.table tbody tr").first
    assert "three reds" in row.inner_text() and "\t3" in row.inner_text()
    row.locator("summary").click()
    assert "red" in row.locator("details table").inner_text()
    shoot(page, "14-dataset")

    # Ticked inputs from the grid.
    page.goto("/apps/sets/inputs")
    page.locator(".input-card", has_text="blue").locator("input[type=checkbox]").first.check()
    page.get_by_label("Add ticked inputs to").select_option("reds")
    page.get_by_role("button", name="Add to dataset").click()
    page.wait_for_url("**/datasets/reds")
    expect(page.get_by_text("Added 1 of 1 inputs")).to_be_visible()
    assert "4 inputs" in page.locator(".page-head").inner_text()
