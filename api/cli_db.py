"""`text2art db`: the job database's schema (Alembic revisions) and its recorded storage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

db_app = typer.Typer(help="The job database: schema revisions and the recorded artifact store.")

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="SQLAlchemy URL (default: T2A_DATABASE_URL or OUTPUT_DIR/jobs.db)."),
]


def _engine(url: str | None) -> Engine:
    from api.cli_common import load_config
    from api.jobs.engine import make_engine

    config = load_config()
    if url is None:
        config.output_dir.mkdir(parents=True, exist_ok=True)
    return make_engine(url or config.resolved_database_url(config.output_dir))


@db_app.command("upgrade")
def upgrade(url: UrlOption = None) -> None:
    """Upgrade the job database to this text2art's newest revision (run once per release)."""
    from api.jobs.migrate import upgrade as run_upgrade

    engine = _engine(url)
    try:
        before, after = run_upgrade(engine)
    finally:
        engine.dispose()
    if before == after:
        typer.echo(f"the job database is already at revision {after} (the newest)")
    else:
        typer.echo(f"upgraded the job database from revision {before or 'none'} to {after}")


@db_app.command("current")
def current(url: UrlOption = None) -> None:
    """Print the job database's revision and the newest one this text2art knows."""
    from api.cli_common import load_config
    from api.jobs.migrate import current_revision, head_revision

    head = head_revision()
    config = load_config()
    default = config.output_dir / "jobs.db"
    if url is None and config.database_url is None and not default.is_file():
        # Only looking: no folder, no file (`serve` and `db upgrade` create them).
        typer.echo(f"no job database at {default} yet; newest revision {head}: `text2art serve` "
                   "or `text2art db upgrade` creates it")  # fmt: skip
        return
    engine = _engine(url)
    try:
        revision = current_revision(engine)
    finally:
        engine.dispose()
    state = "up to date" if revision == head else "run `text2art db upgrade`"
    typer.echo(f"revision {revision or 'none (empty)'}; newest {head}: {state}")


@db_app.command("forget-storage")
def forget_storage(url: UrlOption = None) -> None:
    """Forget the recorded artifact store (after moving it on purpose); the next process to
    start records its own."""
    from api.jobs.identity import forget_storage_identity

    engine = _engine(url)
    try:
        found = forget_storage_identity(engine)
    finally:
        engine.dispose()
    typer.echo("forgot the recorded artifact store" if found else "no artifact store recorded")


def register(app: typer.Typer) -> None:
    """Add the `db` commands to the `text2art` typer app."""
    app.add_typer(db_app, name="db")
