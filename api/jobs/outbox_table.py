"""`t2a_outbox`: one row per notice of a finished job (its e-mail, its webhook), the outbox that
`api.jobs.outbox` sends from.

A row is inserted in the transaction that moves its job into a final state (`JobStore._end`),
and only when that conditional UPDATE applied: a retried end (its first COMMIT's reply lost)
changes nothing, so it adds nothing, and a crash after the COMMIT leaves the row for any
process to send. UNIQUE(job_id, kind) says it again in the schema. A sender takes a row with a
lease (`lease_owner`, `lease_until`); `attempts` counts the leases taken, so it is also the
token of the current one. Times are epoch seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import Float, Index, Integer, String, Text, UniqueConstraint, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from api.jobs.tables import Base

EMAIL, WEBHOOK = "email", "webhook"
KINDS = (EMAIL, WEBHOOK)
PENDING, SENT, FAILED = "pending", "sent", "failed"


class OutboxRow(Base):
    """One e-mail or webhook of a finished job, until it is sent or given up."""

    __tablename__ = "t2a_outbox"
    __table_args__ = (
        UniqueConstraint("job_id", "kind", name="uq_t2a_outbox_job_kind"),
        Index("ix_t2a_outbox_due", "state", "next_try_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # email | webhook
    state: Mapped[str] = mapped_column(String(16), default=PENDING)  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # leases taken (tries begun)
    next_try_at: Mapped[float] = mapped_column(Float)
    lease_owner: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_until: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[float] = mapped_column(Float)
    done_at: Mapped[float | None] = mapped_column(Float, default=None)  # sent or given up
    last_error: Mapped[str | None] = mapped_column(Text, default=None)


def add_notices(session: Session, job_id: str, kinds: Iterable[str]) -> list[str]:
    """Insert the pending rows of `kinds` that the job has not got yet (in the caller's
    transaction); returns the kinds added."""
    have = set(session.scalars(select(OutboxRow.kind).where(OutboxRow.job_id == job_id)))
    now, added = time.time(), [kind for kind in kinds if kind not in have]
    for kind in added:
        row = OutboxRow(job_id=job_id, kind=kind, state=PENDING, attempts=0, next_try_at=now)
        row.created_at = now
        session.add(row)
    return added


def drop_notices(session: Session, job_id: str) -> None:
    """Remove every row of a job (it is being deleted: nothing is sent about it any more)."""
    session.execute(delete(OutboxRow).where(OutboxRow.job_id == job_id))
