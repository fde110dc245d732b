"""Bad input in the browser: the page says what is wrong, in words, and keeps what was typed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from modelmill.training.registry import model_type_specs
from web.helpers import COLOURS, create_app, png, sign_in

pytestmark = pytest.mark.browser


def test_sign_in_by_keyboard_and_a_wrong_key(page: Any, ui_key: str, shoot: Any) -> None:
    page.goto("/login")
    page.keyboard.type("not-a-key")  # the token field has the focus
    page.keyboard.press("Enter")
    assert page.get_by_role("alert").inner_text() == "The API key is not valid for this server."
    shoot(page, "20-sign-in-error")
    page.get_by_label("Personal access token").fill(ui_key)
    page.keyboard.press("Enter")
    page.wait_for_url("**/apps")


def test_empty_upload_and_no_concepts_show_the_error_and_keep_the_form(
    page: Any, ui_key: str, shoot: Any, tmp_path: Path
) -> None:
    sign_in(page, ui_key)
    create_app(page, "mistakes")
    page.goto("/apps/mistakes/inputs")
    page.get_by_label("Concept for these files").fill("red")
    page.get_by_role("button", name="Upload", exact=True).click()
    assert page.get_by_role("alert").inner_text().startswith("Choose at least one file to upload")
    assert page.get_by_label("Concept for these files").input_value() == "red"
    shoot(page, "21-empty-upload")

    image = tmp_path / "red.png"
    image.write_bytes(png(COLOURS["red"]))
    page.set_input_files("#upload-files", str(image))
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_selector("[data-upload-text]:has-text('Added 1 input.')")

    page.goto("/apps/mistakes/models")
    page.get_by_label("Model id").fill("nothing-chosen")
    page.get_by_role("button", name="Create model").click()
    page.get_by_role("link", name="Create New Model Version").click()
    page.get_by_text("Inference settings", exact=True).click()
    page.get_by_label("min_value").fill("0.25")
    page.get_by_label("Enrich dataset").select_option("Disabled")
    page.get_by_role("button", name="Train Model").click()
    alert = page.get_by_role("alert").first
    assert (
        alert.inner_text()
        == "Choose the concepts this version should predict (output_info.data.concepts)."
    )
    assert page.get_by_label("min_value").input_value() == "0.25"
    assert page.get_by_label("Enrich dataset").input_value() == "Disabled"
    shoot(page, "22-no-concepts")

    page.get_by_label("Model id")  # the form is still the settings form
    assert page.get_by_role("button", name="Train Model").is_enabled()


def _deep_type() -> tuple[str, str] | None:
    for spec in model_type_specs():
        if spec.info.uses_template:
            return spec.info.id, spec.info.title
    return None


def test_tolerance_150_for_a_deep_template(
    page: Any, ui_key: str, shoot: Any, tmp_path: Path
) -> None:
    deep = _deep_type()
    if deep is None:
        pytest.skip("no deep fine-tuning template is registered yet")
    model_type, _ = deep
    sign_in(page, ui_key)
    create_app(page, "tolerance")
    page.goto("/apps/tolerance/inputs")
    image = tmp_path / "red.png"
    image.write_bytes(png(COLOURS["red"]))
    page.set_input_files("#upload-files", str(image))
    page.get_by_label("Concept for these files").fill("red")
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_selector("[data-upload-text]:has-text('Added 1 input.')")
    page.goto("/apps/tolerance/models")
    page.get_by_label("Model id").fill("deep")
    page.get_by_label("Model type").select_option(model_type)
    page.get_by_role("button", name="Create model").click()
    page.get_by_role("link", name="Create New Model Version").click()
    for label in ("Dataset", "Invalid data_tolerance_percent", "Template"):
        assert page.get_by_label(label, exact=True).count() == 1, label
    expect(page.get_by_text("Training and inference settings")).to_be_visible()
    page.get_by_role("checkbox", name="red").check()
    page.get_by_label("Invalid data_tolerance_percent").fill("150")
    page.get_by_role("button", name="Train Model").click()
    assert "from 0 to 100" in page.get_by_role("alert").first.inner_text()
    assert page.get_by_label("Invalid data_tolerance_percent").input_value() == "150"
    assert page.get_by_role("checkbox", name="red").is_checked()
    shoot(page, "23-tolerance-150")

    # Another template swaps in its own hyperparameters.
    template = page.get_by_label("Template", exact=True)
    first = template.input_value()
    other = template.locator("option").nth(1).get_attribute("value")
    template.select_option(other)
    page.wait_for_selector(f"#template-settings .mono:text-is('{other}')")
    assert first != other
