"""The history file: a SQLite database, its schema versioned and migrated on open, a run appended in one transaction.

Several CI jobs may share one file: each run appends under ``BEGIN IMMEDIATE`` (SQLite's write lock, taken at
once), and a run that finds the file locked waits up to ``BUSY_SECONDS`` rather than fail or corrupt it. The file
is the lab's only memory, so it is handled with care: a file that isn't ours (not SQLite, another program's
database, damaged, or from a newer version) is refused by name and left exactly as it was; a new file is created
with ``O_EXCL | O_NOFOLLOW`` (never over something that exists), and a symlink where the file or its journal goes
is refused, not followed (the project's stance, see ``jumpstarter.common.safefiles``).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from operator import attrgetter
from pathlib import Path
from urllib.parse import quote

SCHEMA = 3  # the version this code writes (PRAGMA user_version); older files are migrated, newer ones refused
APPLICATION_ID = 0x4A4D5048  # "JMPH" (PRAGMA application_id): a SQLite file that is a jumpstarter history
BUSY_SECONDS = 120.0  # how long a run waits for another run's append (they take milliseconds) before giving up
BROKEN = ("failed", "error")  # outcomes that count against a board

# Each step takes the schema from its index to the next version; a step runs once, in the migrating transaction.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 0 -> 1: runs, and what each recorded
        "CREATE TABLE runs (id INTEGER PRIMARY KEY, started REAL, finished REAL, host TEXT, command TEXT, "
        "status INTEGER, workers INTEGER, exporters TEXT)",
        # A row per test attempt and exporter it used (none: exporter ''); role 'test' or 'health'; key: the
        # test's id without its matrix exporter, to compare boards; elsewhere: it failed here and passed on
        # another board in the same run.
        "CREATE TABLE results (run INTEGER NOT NULL REFERENCES runs(id), nodeid TEXT, key TEXT, role TEXT, "
        "attempt INTEGER, exporter TEXT, outcome TEXT, verdict TEXT, elsewhere INTEGER, start REAL, stop REAL, "
        "waited REAL, worker TEXT)",
        "CREATE TABLE leases (run INTEGER NOT NULL REFERENCES runs(id), holder TEXT, test TEXT, exporters TEXT, "
        "asked REAL, taken REAL, released REAL, worker TEXT, error TEXT)",
        "CREATE TABLE gone (run INTEGER NOT NULL REFERENCES runs(id), exporter TEXT, at REAL, why TEXT)",
    ),
    (  # 1 -> 2: the health report reads a window of recent runs, per board
        "CREATE INDEX runs_started ON runs (started)",
        "CREATE INDEX results_run ON results (run)",
    ),
    (  # 2 -> 3: blamed: a failed try on several boards ("d0+p0") whose health checks then took some of them out
        # (d0) is theirs, not this row's board's (p0): their names, "+"-joined; '' on every other row (and on the
        # rows of older runs, which count as they always did).
        "ALTER TABLE results ADD COLUMN blamed TEXT NOT NULL DEFAULT ''",
    ),
)
assert len(MIGRATIONS) == SCHEMA
# An older file that can't be migrated (read-only) is read as if it were: its results seen through a view of this
# connection alone (SQLite looks in "temp" first) that gives the columns added since their defaults.
READ_AS_CURRENT = "CREATE TEMP VIEW results AS SELECT *, '' AS blamed FROM main.results"


class HistoryError(Exception):
    """The history file can't be used; the message names it and says why (and that it was left as it was)."""


@dataclass
class Result:
    """One attempt of a test (or health check) on one exporter."""

    nodeid: str
    key: str
    role: str  # "test" or "health"
    attempt: int  # 1 for the first run of the test, 2 for its first retry...
    exporter: str  # "" when it used none
    outcome: str
    verdict: str = ""  # the retry's classification: "code", "board", "flaky", or ""
    elsewhere: bool = False
    start: float = 0.0
    stop: float = 0.0
    waited: float | None = None
    worker: str | None = None
    blamed: str = ""  # a failed try on several boards: those of them whose health check then failed, not this one


@dataclass
class Held:
    """One claim's lease."""

    holder: str
    test: str
    exporters: str  # comma-separated
    asked: float
    taken: float | None
    released: float | None
    worker: str | None
    error: str


@dataclass
class RunRecord:
    """Everything one run appends."""

    started: float
    finished: float
    host: str
    command: str
    status: int
    workers: int
    exporters: list[str]
    results: list[Result] = field(default_factory=list)
    leases: list[Held] = field(default_factory=list)
    gone: list[tuple[str, float, str]] = field(default_factory=list)  # exporter, when, why


def append(path: Path, run: RunRecord) -> int:
    """Append ``run`` in one transaction (waiting for other runs' appends); its number in the file."""
    with opened(path, create=True) as db, _failing(path, "append to"):
        db.execute("BEGIN IMMEDIATE")
        try:
            cursor = db.execute(
                "INSERT INTO runs (started, finished, host, command, status, workers, exporters) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run.started, run.finished, run.host, run.command, run.status, run.workers, ",".join(run.exporters)),
            )
            number = cursor.lastrowid
            assert number is not None
            result, held = _row(Result), _row(Held)
            db.executemany(
                "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((number, *result(r)) for r in run.results),
            )
            db.executemany(
                "INSERT INTO leases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", ((number, *held(h)) for h in run.leases)
            )
            db.executemany("INSERT INTO gone VALUES (?, ?, ?, ?)", ((number, *g) for g in run.gone))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return number


def _row(kind: type) -> attrgetter:
    """A record's fields in the table's order (dataclasses.astuple copies deep: ten times slower)."""
    return attrgetter(*(f.name for f in fields(kind)))


def check(path: Path) -> int:
    """Open (creating, migrating) and verify the whole file now, before a run spends its time: how many runs it
    holds. A damaged file is a HistoryError here, not at the run's end."""
    with opened(path, create=True, verify=True) as db, _failing(path, "read"):
        return int(db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])


@contextmanager
def opened(path: Path, create: bool = False, verify: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection to the history at ``path``, its schema current (migrated if older); HistoryError if the file
    is refused. Without ``create`` a missing file is an error; a read-only file is opened read-only."""
    _safe_path(path, create)
    writable = os.access(path, os.W_OK)
    uri = f"file:{quote(str(path.absolute()))}?mode={'rw' if writable else 'ro'}"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=BUSY_SECONDS, isolation_level=None)
    except sqlite3.Error as exc:
        raise HistoryError(f"{path}: can't open it: {exc}") from None
    try:
        with _failing(path, "read"):  # the caller's queries too: a page found damaged later is named as well
            _migrate(db, path, writable)
            if verify:
                problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
                if problems != ["ok"]:
                    raise HistoryError(_damaged(path, "; ".join(problems)))
            yield db
    finally:
        db.close()


def _migrate(db: sqlite3.Connection, path: Path, writable: bool) -> None:
    version = _version(db, path)
    if version == SCHEMA:
        return
    if not writable:
        if not version:
            raise HistoryError(f"{path}: not a history yet, and the file is read-only")
        db.execute(READ_AS_CURRENT)
        return
    db.execute("BEGIN IMMEDIATE")  # another run may be migrating it too: the second one finds it done
    try:
        version = _version(db, path)
        for step in MIGRATIONS[version:]:
            for statement in step:
                db.execute(statement)
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _version(db: sqlite3.Connection, path: Path) -> int:
    """The file's schema version; HistoryError for a file that isn't a history this code can write.

    Its three reads are one snapshot (a transaction, if the caller isn't in one): read one by one, another run's
    creation of the file could commit between them, showing its tables without its application id yet."""
    own = not db.in_transaction
    if own:
        db.execute("BEGIN")
    try:
        tables = db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]  # first: it takes the snapshot
        application = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        if own:
            db.execute("COMMIT")
    if application != APPLICATION_ID:
        if tables or version:
            raise HistoryError(
                f"{path}: a SQLite database, but not a jumpstarter history (application id {application:#x}): "
                "refused, and left as it was; name another file for the history"
            )
    if version > SCHEMA:
        raise HistoryError(
            f"{path}: written by a newer jumpstarter (history schema {version}; this one knows up to {SCHEMA}): "
            "refused, and left as it was; upgrade jumpstarter to use it"
        )
    return int(version)


@contextmanager
def _failing(path: Path, doing: str) -> Iterator[None]:
    """SQLite's errors as a HistoryError naming the file: damaged, locked too long, unwritable."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
            raise HistoryError(
                f"{path}: still locked by another run after {BUSY_SECONDS:g} s; nothing written"
            ) from None
        if isinstance(exc, sqlite3.OperationalError) and ("readonly" in text or "unable to open" in text):
            raise HistoryError(f"{path}: can't {doing} it: {text}") from None
        raise HistoryError(_damaged(path, text)) from None


def _damaged(path: Path, why: str) -> str:
    return (
        f"{path}: not a readable jumpstarter history (damaged or not SQLite: {why}): refused, and left as it was "
        "(the other runs' records are still in it); move it aside to start a new history, or recover it with "
        "`sqlite3 FILE .recover`"
    )


def _safe_path(path: Path, create: bool) -> None:
    """Refuse what mustn't be opened as the history (a link, a folder, a device); create a missing file when
    asked, without following a link or replacing anything."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if not create:
            raise HistoryError(f"{path}: no such history file") from None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            os.close(os.open(path, flags, 0o644))
        except FileExistsError:
            pass  # another run made it just now: checked below as any existing file
        except OSError as exc:
            raise HistoryError(f"{path}: can't create the history file: {exc.strerror or exc}") from None
        info = os.lstat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise HistoryError(f"{path}: a file or a symlink stands where a folder of its path should be") from None
        raise HistoryError(f"{path}: can't reach it: {exc.strerror or exc}") from None
    if stat.S_ISLNK(info.st_mode):
        raise HistoryError(f"{path} is a symlink: refused (the history is never read or written through a link)")
    if stat.S_ISDIR(info.st_mode):
        raise HistoryError(f"{path} is a folder: give the history's file name (e.g. {path / 'history.db'})")
    if not stat.S_ISREG(info.st_mode):
        raise HistoryError(f"{path} is not a regular file: refused")
    for suffix in ("-journal", "-wal", "-shm"):  # SQLite opens these beside the file, following links
        companion = path.with_name(path.name + suffix)
        if companion.is_symlink():
            raise HistoryError(f"{companion} is a symlink: refused (SQLite would write through it)")
