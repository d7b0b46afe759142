"""Read by `gunicorn portal.wsgi` when started from this folder (gunicorn's default config file):
``make run``, the live tests, production.

Loading the settings here, in the master before any worker is forked, makes a setting that cannot
work stop gunicorn with the settings' one-line message: checked only in the workers, each worker would
print it and exit, and gunicorn would halt with a traceback of its own.
"""

import portal.settings  # noqa: F401  (exits with one line on a bad setting)

# No log line may hold a credential (a token in a query string, a reset link's token): portal/gunicorn_log.py.
logger_class = "portal.gunicorn_log.RedactingLogger"
