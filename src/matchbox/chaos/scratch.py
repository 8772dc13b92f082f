"""``--database-url``: the run's consumers write into a place of their own in that database.

The checks compare the database with this run's stream, so it must hold nothing else: a
PostgreSQL database gets a new schema for the run (the URL's ``search_path`` points there), dropped
afterwards unless the run keeps its data; a SQLite URL must name a file that does not exist yet.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from matchbox.consumers.db import create_engine


class ScratchError(RuntimeError):
    """The database cannot be used for a run."""


class ScratchDatabase:
    def __init__(self, url: str, seed: int) -> None:
        self.url = url
        self.schema = f"matchbox_chaos_{seed}_{os.getpid()}"
        self.postgres = sa.make_url(url).get_backend_name() == "postgresql"

    def create(self) -> str:
        """The URL the run's processes use."""
        if not self.postgres:
            database = sa.make_url(self.url).database
            if database and database != ":memory:" and Path(database).exists():
                raise ScratchError(f"{database} exists: give a SQLite file that does not, or a PostgreSQL URL")
            return self.url
        self._execute(f'CREATE SCHEMA "{self.schema}"')
        separator = "&" if "?" in self.url else "?"
        return f"{self.url}{separator}options=-csearch_path%3D{self.schema}"

    def drop(self) -> None:
        if self.postgres:
            self._execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def _execute(self, statement: str) -> None:
        engine = create_engine(self.url)
        try:
            with engine.begin() as connection:
                connection.execute(sa.text(statement))
        except sa.exc.SQLAlchemyError as exc:
            raise ScratchError(f"{self.url}: {type(exc).__name__}: {exc}") from None
        finally:
            engine.dispose()
