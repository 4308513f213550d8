"""The results store of a run folder: one SQLite file, ``<run_dir>/results.sqlite``.

Tables:

- ``meta(name, value)``: ``kind`` = ``rem-results``, ``schema_version``, ``key_version`` (and the last
  grid run);
- ``records(key PRIMARY KEY, status, method, pretrain_type, task, rate, seed, record, error, updated_at)``:
  one row per grid cell, keyed by :attr:`rem.bench.grid.Cell.key`; ``record`` is the JSON result;
  ``status`` is ``done`` or ``failed`` (a failed cell is retried by the next run);
- ``models(key PRIMARY KEY, path, record)``: the starting models pretrained for the run and their metrics;
- ``claims(key PRIMARY KEY, pid, host, claimed_at)``: cells (and starting models, ``start:<key>``) a
  running ``rem bench`` is computing right now, so that several runners on one run folder share the
  work instead of each computing every cell. A claim is released when its cell is stored or fails;
  one left by a dead process (same host, pid gone; or older than :data:`CLAIM_TTL_S` from another host)
  is taken over.

Every write is one transaction on one row (an upsert on the key that never replaces a ``done`` row),
so a process killed at any moment loses no finished cell and never stores one twice. The database is
in WAL mode with ``synchronous=FULL``. Opening a file that is not a rem store, or one written with
another schema or key version, raises :class:`~rem.errors.StoreError` before anything is written.

Schema 2: every metric and history value in a record is a share in [0, 1] (schema 1 held the metrics
in percent).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
from pathlib import Path

from rem.errors import StoreError
from rem.run.record import dumps

KIND = "rem-results"
#: Version of what a record holds: 2 = metrics and histories in shares (1: metrics in percent).
SCHEMA_VERSION = 2
#: Version of the cell-key function (:attr:`rem.bench.grid.Cell.key`): a store keyed by another one would
#: not find its own cells again, so it is refused.
KEY_VERSION = 2
FILENAME = "results.sqlite"
#: A claim from another host (whose process this one cannot see) is considered abandoned after this long.
CLAIM_TTL_S = 24 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    method TEXT, pretrain_type TEXT, task TEXT, rate REAL, seed INTEGER,
    record TEXT NOT NULL, error TEXT, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    key TEXT PRIMARY KEY, path TEXT, record TEXT NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL, claimed_at REAL NOT NULL
);
"""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


LOCK_PATIENCE_S = 60.0  # how long opening or writing waits for another process's lock before giving up


class ResultStore:
    """The SQLite results store of a run folder (see the module docs)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists() and not create:
            raise StoreError(f"no results store at {self.path} (run `rem bench` with this --run-dir first)")
        if self.path.exists() and not self.path.is_file():
            raise StoreError(f"{self.path} is not a file")
        if not create and self.path.stat().st_size == 0:  # SQLite would take it as a new, empty database
            raise StoreError(f"{self.path} is empty (0 bytes), not a rem results store; left as it is")
        self.create = create
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=LOCK_PATIENCE_S, isolation_level=None)
            self._init_retrying()
        except sqlite3.DatabaseError as e:
            if "locked" in str(e):
                raise StoreError(
                    f"{self.path} stayed locked by another process for over {LOCK_PATIENCE_S:g} s ({e}); is a "
                    "`rem bench` or another program holding it open in a long transaction? Retry when it is done."
                ) from e
            if "full" in str(e):
                raise StoreError(f"{self.path}: {e}; free space and run again (finished cells are kept)") from e
            raise StoreError(f"{self.path} is not a usable SQLite database ({e}); is it a rem results store?") from e

    @classmethod
    def in_run_dir(cls, run_dir: str | Path, *, create: bool = True) -> ResultStore:
        return cls(Path(run_dir) / FILENAME, create=create)

    def _init_retrying(self) -> None:
        """:meth:`_check_and_init`, retried while another process holds the file locked. Switching to WAL
        (and the first schema) takes a lock for which SQLite may answer "database is locked" at once,
        without its busy timeout: two ``rem bench`` started together on a new run folder hit it."""
        deadline = time.monotonic() + LOCK_PATIENCE_S
        delay = 0.05
        while True:
            try:
                return self._check_and_init()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(1.0, delay * 2)

    def _check_and_init(self) -> None:
        c = self.conn
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise StoreError(
                f"{self.path} is an SQLite database but not a rem results store "
                f"(tables {sorted(tables)}); use another --run-dir"
            )
        if not tables and not self.create:
            raise StoreError(f"{self.path} holds no rem results store (an empty SQLite database); left as it is")
        if "meta" in tables:
            meta = dict(c.execute("SELECT name, value FROM meta"))
            if meta.get("kind") != KIND:
                raise StoreError(
                    f"{self.path} is not a rem results store (kind {meta.get('kind')!r}, "
                    f"expected {KIND!r}); use another --run-dir"
                )
            try:
                version = int(meta.get("schema_version", ""))
            except ValueError:
                raise StoreError(f"{self.path} has no valid schema version ({meta.get('schema_version')!r})") from None
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer rem (results schema {version}; this "
                    f"rem reads schema {SCHEMA_VERSION}): upgrade rem, or use another --run-dir"
                )
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} uses results schema {version}"
                    + (" (metrics in percent)" if version == 1 else "")
                    + f", which this rem cannot read (it reads {SCHEMA_VERSION}); rerun the grid in a new --run-dir"
                )
            key_version = meta.get("key_version", "1")  # stores of key version 1 did not say it
            if key_version != str(KEY_VERSION):
                raise StoreError(
                    f"{self.path} keys its cells with key version {key_version}, which this rem cannot use "
                    f"(it keys with version {KEY_VERSION}); rerun the grid in a new --run-dir"
                )
        if c.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":  # persistent: set once
            c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=FULL")
        if "meta" not in tables:
            with self._tx():
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.execute("INSERT OR IGNORE INTO meta VALUES ('kind', ?)", (KIND,))
                c.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                c.execute("INSERT OR IGNORE INTO meta VALUES ('key_version', ?)", (str(KEY_VERSION),))
                c.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (str(time.time()),))

    def _tx(self):
        return _Transaction(self.conn)

    # --- records ------------------------------------------------------------------------------

    def put(self, record: dict) -> bool:
        """Store a finished cell's record (and release its claim); False when the key was already done."""
        return self._upsert(record["key"], "done", record, None)

    # --- claims (several runners on one run folder) -------------------------------------------

    def _claim_is_live(self, pid: int, host: str, claimed_at: float) -> bool:
        if host == socket.gethostname():
            return pid == os.getpid() or _pid_alive(pid)
        return time.time() - claimed_at < CLAIM_TTL_S

    def claim(self, key: str) -> bool:
        """Claim ``key`` for this process; False if it is done, or claimed by another live process."""
        me, host = os.getpid(), socket.gethostname()
        with self._tx():
            c = self.conn
            if c.execute("SELECT 1 FROM records WHERE key=? AND status='done'", (key,)).fetchone():
                return False
            row = c.execute("SELECT pid, host, claimed_at FROM claims WHERE key=?", (key,)).fetchone()
            if row is not None and (row[0], row[1]) != (me, host) and self._claim_is_live(*row):
                return False
            c.execute(
                "INSERT OR REPLACE INTO claims (key, pid, host, claimed_at) VALUES (?, ?, ?, ?)",
                (key, me, host, time.time()),
            )
            return True

    def claimed_elsewhere(self, key: str) -> bool:
        """Whether another live process holds a claim on ``key``."""
        row = self.conn.execute("SELECT pid, host, claimed_at FROM claims WHERE key=?", (key,)).fetchone()
        return row is not None and (row[0], row[1]) != (os.getpid(), socket.gethostname()) and self._claim_is_live(*row)

    def release(self, key: str | None = None) -> None:
        """Drop this process's claim on ``key`` (all of its claims when ``key`` is None)."""
        me, host = os.getpid(), socket.gethostname()
        with self._tx():
            if key is None:
                self.conn.execute("DELETE FROM claims WHERE pid=? AND host=?", (me, host))
            else:
                self.conn.execute("DELETE FROM claims WHERE key=? AND pid=? AND host=?", (key, me, host))

    def is_done(self, key: str) -> bool:
        return self.conn.execute("SELECT 1 FROM records WHERE key=? AND status='done'", (key,)).fetchone() is not None

    def put_failure(self, cell_config: dict, key: str, error: str) -> bool:
        """Note that a cell failed (kept for the report; the next run retries it). Never replaces ``done``."""
        return self._upsert(key, "failed", {"key": key, "config": cell_config, **_cols(cell_config)}, error)

    def _upsert(self, key: str, status: str, record: dict, error: str | None) -> bool:
        cols = _cols(record.get("config", record))
        rate = cols["rate"]
        with self._tx():
            cur = self.conn.execute(
                "INSERT INTO records"
                " (key, status, method, pretrain_type, task, rate, seed, record, error, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET status=excluded.status, method=excluded.method,"
                " pretrain_type=excluded.pretrain_type, task=excluded.task, rate=excluded.rate,"
                " seed=excluded.seed, record=excluded.record, error=excluded.error,"
                " updated_at=excluded.updated_at"
                " WHERE records.status != 'done'",
                (
                    key,
                    status,
                    cols["method"],
                    cols["pretrain_type"],
                    cols["task"],
                    None if rate is None or (isinstance(rate, float) and math.isnan(rate)) else rate,
                    cols["seed"],
                    dumps(record),
                    error,
                    time.time(),
                ),
            )
            self.conn.execute("DELETE FROM claims WHERE key=? AND pid=?", (key, os.getpid()))
            return cur.rowcount > 0

    def done_keys(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT key FROM records WHERE status='done'")}

    def status(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, status FROM records"))

    def get(self, key: str) -> dict | None:
        row = self.conn.execute("SELECT record FROM records WHERE key=? AND status='done'", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def records(self, status: str = "done") -> list[dict]:
        """Records of a status (``done`` or ``failed``), in insertion order."""
        rows = self.conn.execute("SELECT record, error FROM records WHERE status=? ORDER BY rowid", (status,))
        out = []
        for rec, err in rows:
            d = json.loads(rec)
            if err is not None:
                d["error"] = err
            out.append(d)
        return out

    def count(self, status: str | None = "done") -> int:
        if status is None:
            return self.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        return self.conn.execute("SELECT COUNT(*) FROM records WHERE status=?", (status,)).fetchone()[0]

    # --- starting models ----------------------------------------------------------------------

    def put_model(self, record: dict) -> None:
        with self._tx():
            self.conn.execute(
                "INSERT OR REPLACE INTO models (key, path, record, updated_at) VALUES (?, ?, ?, ?)",
                (record["key"], record.get("path"), dumps(record), time.time()),
            )

    def models(self) -> list[dict]:
        return [json.loads(r[0]) for r in self.conn.execute("SELECT record FROM models ORDER BY rowid")]

    def model(self, key: str) -> dict | None:
        row = self.conn.execute("SELECT record FROM models WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    # --- meta ---------------------------------------------------------------------------------

    def meta(self) -> dict:
        return dict(self.conn.execute("SELECT name, value FROM meta"))

    def set_meta(self, name: str, value: str) -> None:
        with self._tx():
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cols(d: dict) -> dict:
    task = d.get("task")
    return {
        "method": d.get("method"),
        "pretrain_type": d.get("pretrain_type"),
        "task": task.get("kind") if isinstance(task, dict) else task,
        "rate": d.get("rate"),
        "seed": d.get("seed"),
    }


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
