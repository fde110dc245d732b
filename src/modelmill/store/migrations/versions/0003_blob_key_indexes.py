"""blob key indexes: a key-authenticated blob read looks up the inputs and exports that hold it

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_inputs_blob_key", "inputs", ["blob_key"])
    op.create_index("ix_exports_blob_key", "exports", ["blob_key"])


def downgrade() -> None:
    op.drop_index("ix_exports_blob_key", table_name="exports")
    op.drop_index("ix_inputs_blob_key", table_name="inputs")
