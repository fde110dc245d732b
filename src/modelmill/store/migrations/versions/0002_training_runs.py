"""training runs: measured trainings the training-time estimator is fitted to

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_runs",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("model_key", sa.String(length=255), nullable=False),
        sa.Column("hardware_profile", sa.String(length=255), nullable=False),
        sa.Column("hardware", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("run", sa.JSON(), nullable=False),
        sa.Column("model_version_pk", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_version_pk"], ["model_versions.pk"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("pk"),
    )
    op.create_index("ix_training_runs_model_key", "training_runs", ["model_key"])


def downgrade() -> None:
    op.drop_index("ix_training_runs_model_key", table_name="training_runs")
    op.drop_table("training_runs")
