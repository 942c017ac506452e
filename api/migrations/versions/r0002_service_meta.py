"""`t2a_meta`: facts the service's processes share, e.g. the identity of the artifact store."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `t2a_meta` (key -> value)."""
    op.create_table(
        "t2a_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    """Drop `t2a_meta`."""
    op.drop_table("t2a_meta")
