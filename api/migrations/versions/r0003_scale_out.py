"""Scale-out: when a job was last put on the queue, and the workers' own heartbeats.

- `t2a_jobs.enqueued_at`: the queue reconciler re-enqueues a queued job that the queue lost
  only when this is older than its grace period, with a conditional update on it (one winner).
- `t2a_workers`: one row per live worker process, its heartbeat written even when it runs
  nothing, so `/readyz` and `text2art_workers_live` know whether anyone takes jobs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add `t2a_jobs.enqueued_at` and create `t2a_workers`."""
    op.add_column("t2a_jobs", sa.Column("enqueued_at", sa.Float()))
    op.create_table(
        "t2a_workers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False),
    )
    op.create_index("ix_t2a_workers_heartbeat", "t2a_workers", ["heartbeat_at"])


def downgrade() -> None:
    """Drop `t2a_workers` and `t2a_jobs.enqueued_at`."""
    op.drop_table("t2a_workers")
    with op.batch_alter_table("t2a_jobs") as batch:  # SQLite cannot drop a column in place
        batch.drop_column("enqueued_at")
