"""Counts and id lists the pages need that services do not offer yet, built only from service
calls. Each belongs in services (one SQL query); until then they page through the service."""

from __future__ import annotations

from modelmill.services import AppScope, Env, datasets, inputs
from modelmill.services.paging import MAX_PER_PAGE, Page


def count_dataset_inputs(env: Env, app: AppScope, dataset_id: str) -> int:
    total, page = 0, 1
    while True:
        rows = datasets.list_dataset_inputs(env, app, dataset_id, Page.of(page, MAX_PER_PAGE))
        total += len(rows)
        if len(rows) < MAX_PER_PAGE:
            return total
        page += 1


def ids_labelled(env: Env, app: AppScope, concept_id: str) -> list[str]:
    """Ids of the inputs labelled as positives of `concept_id` (tags or regions); every input
    when `concept_id` is empty."""
    found, page = [], 1
    while True:
        rows = inputs.list_inputs_with_labels(env, app, Page.of(page, MAX_PER_PAGE))
        for row, labels in rows:
            mentioned = {c["id"] for c in labels.get("concepts", []) if c.get("value", 1) > 0}
            for region in labels.get("regions", []):
                mentioned.update(
                    c["id"] for c in region["data"]["concepts"] if c.get("value", 1) > 0
                )
            if not concept_id or concept_id in mentioned:
                found.append(row.id)
        if len(rows) < MAX_PER_PAGE:
            return found
        page += 1
