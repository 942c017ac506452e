"""Admission and cost: every admitted submission, and a job's estimated run time.

- `t2a_admissions`: one row per submission the service admitted (`POST /jobs` and
  `POST /generate` alike), the client's hashed id and when; the rate limit counts these rows in
  the same transaction that adds one (`api.jobs.admission`), so a deleted job still counts.
- `t2a_jobs.estimate_seconds`: the cost model's estimate of the job's run time when it was
  submitted (`api.cost`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `t2a_admissions` and add `t2a_jobs.estimate_seconds`."""
    op.create_table(
        "t2a_admissions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
    )
    op.create_index("ix_t2a_admissions_client", "t2a_admissions", ["client_id", "at"])
    op.create_index("ix_t2a_admissions_at", "t2a_admissions", ["at"])
    with op.batch_alter_table("t2a_jobs") as batch:
        batch.add_column(sa.Column("estimate_seconds", sa.Float()))


def downgrade() -> None:
    """Drop both."""
    with op.batch_alter_table("t2a_jobs") as batch:
        batch.drop_column("estimate_seconds")
    op.drop_index("ix_t2a_admissions_at", "t2a_admissions")
    op.drop_index("ix_t2a_admissions_client", "t2a_admissions")
    op.drop_table("t2a_admissions")
