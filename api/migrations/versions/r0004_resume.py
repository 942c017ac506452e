"""Resume: where a job's current attempt started, and a warning for its owner.

- `t2a_jobs.resumed_from`: the iteration the running (or last) attempt continued at, from the
  run state a stopped attempt saved; 0 for a fresh start.
- `t2a_jobs.warning`: something its owner should know that did not fail the job (a saved state
  that could not be used, so the attempt started afresh).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add `t2a_jobs.resumed_from` (0 for every existing job) and `t2a_jobs.warning`."""
    with op.batch_alter_table("t2a_jobs") as batch:
        batch.add_column(
            sa.Column("resumed_from", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("warning", sa.Text()))


def downgrade() -> None:
    """Drop the two columns."""
    with op.batch_alter_table("t2a_jobs") as batch:  # SQLite cannot drop a column in place
        batch.drop_column("warning")
        batch.drop_column("resumed_from")
