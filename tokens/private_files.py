"""The SQLite database and the files beside it are readable by this account only (0600).

They hold session keys and token digests: any local account that can read them can sign in as an
administrator. DATA_DIR itself is 0700 (portal/settings.py), which already keeps other accounts out;
this is the second wall, for a database placed elsewhere (DATABASE_URL) or a folder opened up later.

Why chmod after connecting rather than a process umask of 0o077: a umask is process-wide, so it would
also change files the portal has no business with (collected static files, a log a proxy must read,
files of the code that embeds it), and it would not tighten files made looser by an older version.
SQLite gives its -wal and -shm files the mode of the database file, so once the database is 0600 the
files it creates later follow; the ones the first connection made are tightened here too.
"""

import os
import stat

SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal", "-usage.lock")


def make_private(path):
    """Make the file at *path* 0600 if it exists and anyone else may read or write it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_IMODE(mode) & 0o077:
        os.chmod(path, 0o600)


def keep_sqlite_files_private(sender, connection, **kwargs):
    if connection.vendor != "sqlite":
        return
    name = str(connection.settings_dict["NAME"])
    if name == ":memory:" or name.startswith("file:"):
        return
    for suffix in SQLITE_COMPANIONS:
        make_private(name + suffix)
