"""The job database's schema, kept by Alembic revisions (`api/migrations/versions`).

`ensure_schema(engine, auto)` runs when a process opens the database: at the newest revision it
does nothing; behind, it upgrades (`auto`, the default: SQLite, one node) or raises
`SchemaOutdated` telling the operator to run `text2art db upgrade` (T2A_AUTO_MIGRATE=false,
several nodes: one upgrade, run on purpose). A database made by `create_all` before migrations
existed holds `t2a_jobs` without a version: it is stamped at revision 0001, then upgraded.

The revisions run through `alembic.runtime.environment.EnvironmentContext` directly, so there is
no env.py executed at import.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine

from api import migrations

log = logging.getLogger(__name__)

UNVERSIONED = "0001"  # what a database made by create_all (before migrations) holds


class SchemaOutdated(RuntimeError):
    """The database is behind this text2art and may not be upgraded automatically."""


def script_directory() -> ScriptDirectory:
    """The shipped revisions."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return ScriptDirectory.from_config(config)


def head_revision() -> str:
    """The newest revision this text2art knows."""
    head = script_directory().get_current_head()
    assert head is not None, "api/migrations/versions holds no revision"
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's revision; 0001 for an unversioned create_all database; None if empty."""
    with engine.connect() as conn:
        return _current(conn)


def _current(conn: Connection) -> str | None:
    revision = MigrationContext.configure(conn).get_current_revision()
    if revision is None and inspect(conn).has_table("t2a_jobs"):
        return UNVERSIONED
    return revision


def upgrade(engine: Engine, target: str = "head") -> tuple[str | None, str]:
    """Apply the revisions up to `target`; returns (revision before, revision after)."""
    script = script_directory()
    with engine.begin() as conn:
        before = _current(conn)
        context = MigrationContext.configure(conn)
        if before == UNVERSIONED and context.get_current_revision() is None:
            context.stamp(script, UNVERSIONED)  # made by create_all: it is revision 0001

        def steps(rev: Any, _context: Any) -> Any:
            return script._upgrade_revs(target, rev)

        with EnvironmentContext(Config(), script, fn=steps, destination_rev=target) as env:
            env.configure(connection=conn)
            env.run_migrations()
        after = _current(conn)
    assert after is not None
    return before, after


def ensure_schema(engine: Engine, auto: bool = True) -> None:
    """Bring the database to the newest revision, or refuse (see the module's docstring)."""
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return
    if current is not None and current not in _known():
        raise SchemaOutdated(
            f"the job database is at revision {current}, which this text2art does not know "
            "(a newer version made it): upgrade text2art"
        )
    if not auto:
        raise SchemaOutdated(
            f"the job database is at revision {current or 'none (empty)'}, this text2art needs "
            f"{head}: run `text2art db upgrade` (T2A_AUTO_MIGRATE is off)"
        )
    try:
        before, after = upgrade(engine)
    except Exception:
        if current_revision(engine) == head:  # another process upgraded it meanwhile
            return
        raise
    log.info("job database upgraded from revision %s to %s", before or "none", after)


def _known() -> set[str]:
    return {rev.revision for rev in script_directory().walk_revisions()}
