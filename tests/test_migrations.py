"""The job database's schema comes from Alembic revisions: a database made by `create_all`
before migrations is stamped and upgraded with its jobs kept; T2A_AUTO_MIGRATE=false refuses to
start until `text2art db upgrade` ran; the revisions equal the models."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, Table, create_engine, inspect, text

from api.cli import main
from api.jobs.identity import META
from api.jobs.migrate import SchemaOutdated, current_revision, head_revision, upgrade
from api.jobs.store import QUEUED, Base, Job, JobStore

ADDED_SINCE = ("enqueued_at", "resumed_from", "warning", "estimate_seconds")  # 0003-0005


def old_database(path: Path) -> str:
    """A database as text2art 0.1 made it (`create_all`, no version) holding one job."""
    url = f"sqlite:///{path}"
    engine = create_engine(url)
    old = MetaData()  # t2a_jobs as 0.1 had it: today's columns less those added since
    columns = [c._copy() for c in Job.__table__.columns if c.name not in ADDED_SINCE]
    Table("t2a_jobs", old, *columns)
    old.create_all(engine)
    store_job = Job(
        id="a" * 32, status=QUEUED, request={"prompts": "a fox"}, settings={"prompts": "a fox"},
        public=False, base_url="", delete_token_hash="0" * 64, client_id="", created_at=1.0,
        attempts=0, iteration=0, total=3, cancel_requested=False, outputs=[], version=1,
    )  # fmt: skip
    with engine.begin() as conn:
        conn.execute(old.tables["t2a_jobs"].insert().values(**_row(store_job)))
    engine.dispose()
    return url


def _row(job: Job) -> dict[str, object]:
    columns = Job.__table__.columns
    return {c.name: getattr(job, c.name) for c in columns if c.name not in ("seq", *ADDED_SINCE)}


def test_a_create_all_database_is_stamped_upgraded_and_keeps_its_jobs(tmp_path: Path) -> None:
    url = old_database(tmp_path / "jobs.db")
    engine = create_engine(url)
    assert current_revision(engine) == "0001"  # unversioned, with t2a_jobs: revision 0001
    assert not inspect(engine).has_table("alembic_version")
    store = JobStore(url).open()  # auto_migrate (the default): upgraded at start
    try:
        job = store.get("a" * 32)
        assert job is not None and job.settings == {"prompts": "a fox"} and job.total == 3
        assert current_revision(store.engine) == head_revision() == "0006"
        assert inspect(store.engine).has_table("t2a_meta")
        with store.engine.connect() as conn:
            assert conn.execute(text("select version_num from alembic_version")).scalar() == "0006"
    finally:
        store.close()
        engine.dispose()


def test_without_auto_migrate_a_process_refuses_until_db_upgrade(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = old_database(tmp_path / "jobs.db")
    with pytest.raises(SchemaOutdated, match="run `text2art db upgrade`"):
        JobStore(url, auto_migrate=False).open()
    main(["db", "current", "--url", url])
    assert "revision 0001; newest 0006: run `text2art db upgrade`" in capsys.readouterr().out
    main(["db", "upgrade", "--url", url])
    assert "from revision 0001 to 0006" in capsys.readouterr().out
    store = JobStore(url, auto_migrate=False).open()
    try:
        assert store.get("a" * 32) is not None
        store.add(Job(**{**_row(store.get("a" * 32)), "id": "b" * 32, "created_at": time.time()}))
        assert store.count(QUEUED) == 2
    finally:
        store.close()
    main(["db", "upgrade", "--url", url])
    assert "already at revision 0006" in capsys.readouterr().out


def test_an_empty_database_is_created_by_the_revisions_and_they_equal_the_models(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'new.db'}")
    assert current_revision(engine) is None
    assert upgrade(engine) == (None, "0006")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        meta_diff = compare_metadata(MigrationContext.configure(conn), META.metadata)
    assert [d[0] for d in diff] == ["remove_table"] and diff[0][1].name == "t2a_meta"
    # t2a_jobs (and its indexes) are not in META's metadata; nothing else differs
    assert {d[0] for d in meta_diff} == {"remove_table", "remove_index"}
    removed = {d[1].name for d in meta_diff if d[0] == "remove_table"}
    assert removed == {"t2a_jobs", "t2a_workers", "t2a_admissions", "t2a_outbox"}
    engine.dispose()


def test_a_database_from_a_newer_text2art_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    JobStore(url).open().close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("update alembic_version set version_num = '9999'"))
    engine.dispose()
    with pytest.raises(SchemaOutdated, match="9999, which this text2art does not know"):
        JobStore(url).open()
