"""Clarifai paging rules: pages from 1, per_page 0 means the default, a cap on page size."""

from __future__ import annotations

import pytest

from modelmill.services.paging import DEFAULT_PER_PAGE, MAX_PER_PAGE, Page


@pytest.mark.parametrize(
    ("page", "per_page", "expected"),
    [
        (0, 0, Page(1, DEFAULT_PER_PAGE)),
        (1, 0, Page(1, DEFAULT_PER_PAGE)),
        (-3, 5, Page(1, 5)),
        (4, 20, Page(4, 20)),
        (2, MAX_PER_PAGE + 1, Page(2, MAX_PER_PAGE)),
    ],
)
def test_page_of_applies_the_defaults_and_limits(page: int, per_page: int, expected: Page) -> None:
    assert Page.of(page, per_page) == expected
