"""Read by `gunicorn portal.wsgi` when started from this folder (gunicorn's default config file):
``make run``, the live tests, production.

Loading the settings here, in the master before any worker is forked, makes a setting that cannot
work stop gunicorn with the settings' one-line message: checked only in the workers, each worker would
print it and exit, and gunicorn would halt with a traceback of its own.
"""

import os
import shutil
import tempfile
from pathlib import Path

import portal.settings  # noqa: F401  (exits with one line on a bad setting)


def _metrics_folder():
    """Return the folder where the workers keep their metrics (prometheus-client's multiprocess mode).

    PROMETHEUS_MULTIPROC_DIR when set, else a new temporary folder. Private (0700: the counts say who
    is refused how often) and emptied of an earlier run's files, which would otherwise be added to this
    run's counts. Only the ``.db`` files prometheus-client writes are removed: a mistyped path loses
    nothing else.
    """
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if not configured:
        return Path(tempfile.mkdtemp(prefix="portal-metrics-")), True
    path = Path(configured)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    for leftover in path.glob("*.db"):
        leftover.unlink()
    return path, False


METRICS_FOLDER, _METRICS_FOLDER_IS_OURS = _metrics_folder()
# Set before prometheus-client is first imported: it picks its multiprocess mode at import, and the
# workers inherit the master's modules when forked.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_FOLDER)

from prometheus_client import multiprocess  # noqa: E402  (must follow the line above)

# No log line may hold a credential (a token in a query string, a reset link's token): see
# portal/gunicorn_log.py, which also writes the logs as JSON with LOG_FORMAT=json.
logger_class = "portal.gunicorn_log.RedactingLogger"
# The text access log: gunicorn's usual line, followed by the request id (portal/middleware.py).
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %({x-request-id}o)s'


def child_exit(server, worker):
    """Fold an exited worker's live values away, so a scrape reports only running workers' gauges."""
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _METRICS_FOLDER_IS_OURS:
        shutil.rmtree(METRICS_FOLDER, ignore_errors=True)
