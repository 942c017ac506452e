"""Alembic revisions of the job database (`versions/`), applied by `api.jobs.migrate`.

A new revision is a file `versions/rNNNN_what.py` with `revision`, `down_revision` (the previous
one) and `upgrade()` written with `alembic.op`; `text2art db upgrade` applies it.
"""
