# Read by gunicorn from the folder it is started in (``make run``, the live tests, production).
# The access log must never hold the token of a password-reset link: see portal/gunicorn_log.py.
logger_class = "portal.gunicorn_log.RedactingLogger"
