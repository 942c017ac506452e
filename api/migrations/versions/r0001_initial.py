"""The job records as text2art 0.1 created them with `create_all` (before migrations)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `t2a_jobs` and its indexes."""
    op.create_table(
        "t2a_jobs",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("email", sa.String(320)),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("webhook_url", sa.Text()),
        sa.Column("base_url", sa.Text(), nullable=False),
        sa.Column("delete_token_hash", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float()),
        sa.Column("finished_at", sa.Float()),
        sa.Column("heartbeat_at", sa.Float()),
        sa.Column("worker_id", sa.String(200)),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Float()),
        sa.Column("run_seconds", sa.Float()),
        sa.Column("preview_iteration", sa.Integer()),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("email_state", sa.String(200)),
        sa.Column("webhook_state", sa.String(200)),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_t2a_jobs_id", "t2a_jobs", ["id"], unique=True)
    op.create_index("ix_t2a_jobs_status_seq", "t2a_jobs", ["status", "seq"])
    op.create_index("ix_t2a_jobs_gallery", "t2a_jobs", ["public", "status", "seq"])
    op.create_index("ix_t2a_jobs_client", "t2a_jobs", ["client_id", "created_at"])


def downgrade() -> None:
    """Drop `t2a_jobs`."""
    op.drop_table("t2a_jobs")
