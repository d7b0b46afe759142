"""Usage INSERTs on SQLite take turns at the write lock instead of sleeping on it.

SQLite lets one connection write at a time. When a second one tries, its busy handler sleeps and
tries again: 1 ms first, then longer. A usage INSERT holds the lock for about 0.1 ms, so with two
gunicorn workers recording every request about one INSERT in seven found the lock taken and slept
ten times longer than it had to wait (measured in docs/performance.md). Here the INSERTs of every
process on the machine queue on a file lock next to the database instead: the kernel wakes the next
one as soon as the lock is released.

The queue only orders usage INSERTs among themselves; any other write (a revocation, an admin
change) still meets SQLite's own busy handler, and none of them waits for this lock, so the two can
never wait for each other in a circle. A request never waits longer than SQLite's busy timeout in
all: what it spent in the queue is taken off the time SQLite may then wait, and past that the INSERT
fails like any locked write (503). Without the lock file (not POSIX, or it cannot be opened) the
INSERTs simply use SQLite's busy handler as before.

A WAL checkpoint copies the log back into the database file and waits for the disk. SQLite runs one
inside whichever commit crosses ``wal_autocheckpoint`` pages, and inside the queue every other
INSERT would wait for that disk write too. So every ``CHECKPOINT_EVERY`` INSERTs a process runs a
passive checkpoint itself, once the response of its request has been sent (``request_finished``),
outside the queue; that keeps the log under SQLite's threshold, which stays as a safety net for
writes made outside requests.
"""

import logging
import os
import threading
import time
from contextlib import contextmanager, nullcontext

from django.db import DatabaseError, connections, transaction

try:
    import fcntl
except ImportError:  # not POSIX: SQLite's busy handler alone
    fcntl = None

CHECKPOINT_EVERY = 500  # usage INSERTs of one process between its checkpoints (about 5,000 WAL pages)
LONG_WAIT = 1.0  # seconds in the queue after which the INSERT's own busy timeout is shortened

# Logged under its established name, which operators' log filters and alerts match.
log = logging.getLogger("tokens.sqlite_turns")


class WriterTurns:
    def __init__(self):
        self._threads = threading.Lock()  # a file lock does not exclude threads of the same process
        self._files = {}  # (pid, lock file path) -> file descriptor, or None if it cannot be opened
        self._inserts = 0
        self._checkpoint_due = set()  # database aliases

    def _descriptor(self, path):
        # Opened once per process: a descriptor inherited through fork() would share its lock.
        key = (os.getpid(), path)
        if key not in self._files:
            try:
                self._files[key] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as error:
                log.warning("usage INSERTs will not take turns: cannot open %s (%s)", path, error.strerror)
                self._files[key] = None
        return self._files[key]

    @contextmanager
    def turn(self, connection):
        """Hold the usage-write turn of *connection*'s database file for the block."""
        name = str(connection.settings_dict["NAME"])
        if fcntl is None or name == ":memory:" or name.startswith("file:"):
            yield
            return
        with self._threads:
            descriptor = self._descriptor(name + "-usage.lock")
            if descriptor is None:
                yield
                return
            started = time.monotonic()
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            try:
                with _busy_timeout_less(connection, time.monotonic() - started):
                    yield
            finally:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
            self._inserts += 1
            if self._inserts % CHECKPOINT_EVERY == 0:
                self._checkpoint_due.add(connection.alias)

    def checkpoint(self):
        """Run the passive checkpoints that are due, on this thread's connections."""
        if not self._checkpoint_due:  # the common case, at the end of every request: no lock taken
            return
        with self._threads:
            due, self._checkpoint_due = self._checkpoint_due, set()
        for alias in due:
            connection = connections[alias]
            if connection.in_atomic_block:
                with self._threads:
                    self._checkpoint_due.add(alias)  # at the end of the next request, then
                continue
            try:
                # Django may just have closed a connection past CONN_MAX_AGE: open one for this.
                connection.ensure_connection()
                with connection.wrap_database_errors:
                    connection.connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except DatabaseError:
                log.warning("WAL checkpoint failed; SQLite's automatic checkpoint remains")


@contextmanager
def _busy_timeout_less(connection, waited):
    """Take the time spent in the queue off what SQLite may wait for its lock during the block."""
    if waited < LONG_WAIT:
        yield
        return
    timeout_ms = int(connection.settings_dict["OPTIONS"].get("timeout", 5) * 1000)
    raw = connection.connection
    raw.execute(f"PRAGMA busy_timeout = {max(0, timeout_ms - int(waited * 1000))}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA busy_timeout = {timeout_ms}")


turns = WriterTurns()


@contextmanager
def queued_transaction(connection):
    """Run the block in a transaction on *connection*, on SQLite after taking the usage-write turn.

    The usage store's writes that need a transaction (a first use marked with its record, a summariser
    batch, a batch of old records deleted) queue with the usage INSERTs first, then take SQLite's write
    lock (BEGIN IMMEDIATE): the other order could leave an INSERT holding the turn and waiting for the
    lock. Inside a transaction the write lock is held already: no turn, a savepoint. Other databases:
    the transaction alone.
    """
    queued = connection.vendor == "sqlite" and connection.get_autocommit()
    with turns.turn(connection) if queued else nullcontext(), transaction.atomic(using=connection.alias):
        yield


def checkpoint_after_response(**kwargs):
    """Receive ``request_finished`` (connected in ``TokensConfig.ready``): checkpoint if one is due."""
    turns.checkpoint()
