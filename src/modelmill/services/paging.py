"""Clarifai paging: page numbers from 1, `per_page` 0 means the default, past the end is empty."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select

DEFAULT_PER_PAGE = 128
MAX_PER_PAGE = 1000


@dataclass(frozen=True)
class Page:
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE

    @classmethod
    def of(cls, page: int, per_page: int) -> Page:
        return cls(max(page, 1), min(per_page or DEFAULT_PER_PAGE, MAX_PER_PAGE))

    def apply(self, query: Select) -> Select:  # type: ignore[type-arg]
        return query.limit(self.per_page).offset((self.page - 1) * self.per_page)
