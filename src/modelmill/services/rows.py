"""The stored rows services hand to the api and web layers (SQLAlchemy rows of store.tables,
read after their session closed), named here so that those layers depend on services and never
on the store itself (the import-linter contract in pyproject.toml holds that)."""

from modelmill.store.tables import (
    Annotation,
    App,
    Concept,
    Dataset,
    DatasetVersion,
    Evaluation,
    Export,
    Input,
    Model,
    ModelVersion,
)

__all__ = [
    "Annotation",
    "App",
    "Concept",
    "Dataset",
    "DatasetVersion",
    "Evaluation",
    "Export",
    "Input",
    "Model",
    "ModelVersion",
]
