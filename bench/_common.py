"""Shared helpers of the benchmarks: a scratch PostgreSQL database and a median timer."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import time
import uuid
from typing import Iterator, Sequence

SERVER = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A uniquely named database on the test server, dropped afterwards."""
    import psycopg2

    name = f"gd_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(SERVER)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield SERVER.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def wall(cmd: Sequence[str], **kwargs) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - started


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
