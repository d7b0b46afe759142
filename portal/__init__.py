"""The Django project: settings, URLs, the admin site, WSGI, logging and the operational middleware."""
