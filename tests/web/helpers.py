"""What the web tests upload: small coloured PNGs, zips of concept folders, CSVs of texts."""

from __future__ import annotations

import csv
import io
import random
import zipfile
from typing import Any

from PIL import Image

USER = "ada"  # the user the browser tests sign in as
COLOURS = {"red": (210, 40, 40), "blue": (40, 70, 210)}


def png(colour: tuple[int, int, int], seed: int = 0, size: tuple[int, int] = (48, 40)) -> bytes:
    """A PNG of `colour` with a little noise, so images of one concept are alike but not equal."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, colour)
    pixels = image.load()
    for _ in range(size[0] * size[1] // 6):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        pixels[x, y] = tuple(max(0, min(255, c + rng.randint(-40, 40))) for c in colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def concept_zip(per_concept: int = 3) -> bytes:
    """A zip with one folder per concept (red/, blue/) and a macOS resource file to skip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, colour in COLOURS.items():
            for index in range(per_concept):
                archive.writestr(f"colours/{name}/{index}.png", png(colour, seed=100 + index))
        archive.writestr("__MACOSX/colours/red/._0.png", b"junk")
        archive.writestr("colours/red/broken.png", b"not an image")
    return buffer.getvalue()


def yolo_zip() -> bytes:
    """A zipped YOLO dataset under one top folder: a.png with a red box, b.png with none, a
    label line of an unknown class and a label file with no image."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("shapes/classes.txt", "red\nblue\n")
        archive.writestr("shapes/images/a.png", png(COLOURS["red"], size=(40, 20)))
        archive.writestr("shapes/images/b.png", png(COLOURS["blue"], size=(40, 20)))
        archive.writestr("shapes/labels/a.txt", "0 0.5 0.5 0.5 0.5\n5 0.5 0.5 0.1 0.1\n")
        archive.writestr("shapes/labels/b.txt", "")
        archive.writestr("shapes/labels/c.txt", "1 0.5 0.5 0.1 0.1\n")
        archive.writestr("__MACOSX/shapes/._classes.txt", b"junk")
    return buffer.getvalue()


def texts_csv(rows: list[tuple[str, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["text", "concepts"])
    writer.writerows(rows)
    return buffer.getvalue().encode()


def sign_in(page: Any, key: str) -> None:
    page.goto("/login")
    page.get_by_label("Personal access token").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/apps")


def create_app(page: Any, app_id: str) -> None:
    page.goto("/apps")
    page.get_by_label("App id").fill(app_id)
    page.get_by_role("button", name="Create app").click()
    page.wait_for_url(f"**/apps/{app_id}")
