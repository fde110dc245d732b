"""Persistence: SQL metadata (SQLAlchemy + Alembic) and content-addressed blobs."""
