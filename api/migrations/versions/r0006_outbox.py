"""The outbox: one row per notice (e-mail, webhook) of a finished job, sent by any process.

- `t2a_outbox`: inserted in the transaction that ends its job (`api.jobs.outbox_table`), at most
  one row of a kind per job (UNIQUE(job_id, kind)); a sender leases a due row (`lease_owner`,
  `lease_until`), delivers it and records the outcome (`api.jobs.outbox`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `t2a_outbox` with its unique (job, kind) pair and the index of due rows."""
    op.create_table(
        "t2a_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_try_at", sa.Float(), nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("done_at", sa.Float(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.UniqueConstraint("job_id", "kind", name="uq_t2a_outbox_job_kind"),
    )
    op.create_index("ix_t2a_outbox_due", "t2a_outbox", ["state", "next_try_at"])


def downgrade() -> None:
    """Drop it (notices not yet sent are lost)."""
    op.drop_index("ix_t2a_outbox_due", "t2a_outbox")
    op.drop_table("t2a_outbox")
