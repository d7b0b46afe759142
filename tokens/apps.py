"""The app's configuration: ``ready()`` registers the system checks and connects the signal receivers.

The receivers do work around requests, never in the core flow: the WAL checkpoint and the usage summary
after a response, forgetting cached settings when tests change them, the recent-sign-in mark.
"""

from django.apps import AppConfig
from django.contrib.auth.signals import user_logged_in
from django.core.signals import request_finished, setting_changed
from django.db.backends.signals import connection_created
from django.utils.translation import gettext_lazy as _


class TokensConfig(AppConfig):
    name = "tokens"
    verbose_name = _("API tokens")

    def ready(self):
        from . import auth, checks, http, private_files  # noqa: F401  (checks registers checks)
        from .identity import provider, recent
        from .usage import sqlite_turns, summarise

        # SQLite: each process checkpoints its WAL once the response has been sent (sqlite_turns).
        request_finished.connect(sqlite_turns.checkpoint_after_response, dispatch_uid="tokens.checkpoint")
        # Every process folds usage records into the summaries now and then, after a response is sent.
        request_finished.connect(summarise.summarise_after_response, dispatch_uid="tokens.usage.summarise")
        # The hot path parses some settings once per process; tests that override them must see the new
        # values.
        setting_changed.connect(auth.forget_cached_settings, dispatch_uid="tokens.auth.settings")
        setting_changed.connect(http.forget_cached_settings, dispatch_uid="tokens.http.settings")
        # Every sign-in, whichever way, starts the recent-sign-in window (identity/recent.py).
        user_logged_in.connect(recent.note_sign_in, dispatch_uid="tokens.identity.recent")
        setting_changed.connect(provider.forget_cached_settings, dispatch_uid="tokens.identity.provider")
        # The SQLite files hold session keys and digests: private to this account (private_files).
        connection_created.connect(
            private_files.keep_sqlite_files_private, dispatch_uid="tokens.private_files"
        )
