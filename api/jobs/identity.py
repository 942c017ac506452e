"""The start-up check that every process of one job database sees the same artifact store.

The first process to start records an identity in `t2a_meta`: a random token, which it also
writes into its store as the marker `.text2art/identity-{token}`. Every later process (API node
or worker) reads that marker through its own store: when it is missing, the process's outputs
would be invisible to the others (a worker with its own T2A_OUTPUT_DIR marks jobs succeeded
whose links answer 404 on the API node), so it refuses to start with `StorageMismatch`.
"""

from __future__ import annotations

import json
import secrets
import time

from sqlalchemy import Column, Float, MetaData, String, Table, Text, delete, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from api.storage import ArtifactStore

META = Table(
    "t2a_meta",
    MetaData(),
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)
KEY = "storage_identity"


class StorageMismatch(RuntimeError):
    """This process's artifact store is not the one the database's other processes use."""


def recorded(engine: Engine) -> dict[str, str] | None:
    """The recorded identity ({'token', 'store'}), or None."""
    with engine.connect() as conn:
        value = conn.execute(select(META.c.value).where(META.c.key == KEY)).scalar()
    return json.loads(value) if value else None


def check_storage_identity(engine: Engine, artifacts: ArtifactStore) -> str:
    """Check the store works; record its identity if none is, else check that this store
    holds it. Returns the token; raises `StorageMismatch` (one line saying what to fix)."""
    artifacts.check()  # write, read back and remove a sentinel (StorageError)
    found = recorded(engine)
    if found is None:
        found = _record(engine, artifacts)
    marker = artifacts.read_marker(f"identity-{found['token']}")
    if marker is None or marker.decode() != found["token"]:
        raise StorageMismatch(
            f"this process stores outputs in {artifacts.describe()}, but the other processes "
            f"of this job database use {found['store']}: its results would be invisible to "
            "them (404). Give every API node and worker the same T2A_STORAGE_URL (one bucket) "
            "or a shared T2A_OUTPUT_DIR; if the store moved on purpose, run "
            "`text2art db forget-storage`"
        )
    return found["token"]


def _record(engine: Engine, artifacts: ArtifactStore) -> dict[str, str]:
    """Write a new marker and record it, unless another process recorded one first."""
    token = secrets.token_hex(16)
    artifacts.write_marker(f"identity-{token}", token.encode())
    mine = {"token": token, "store": artifacts.describe()}
    row = {"key": KEY, "value": json.dumps(mine), "updated_at": time.time()}
    try:
        with engine.begin() as conn:
            conn.execute(insert(META).values(**row))
    except IntegrityError:  # another process won the race: check against its identity
        artifacts.delete_marker(f"identity-{token}")
        found = recorded(engine)
        assert found is not None
        return found
    return mine


def forget_storage_identity(engine: Engine) -> bool:
    """Drop the recorded identity (the store moved on purpose); whether there was one."""
    with engine.begin() as conn:
        result = conn.execute(delete(META).where(META.c.key == KEY))
    return bool(getattr(result, "rowcount", 0))
