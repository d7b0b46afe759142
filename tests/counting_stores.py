"""A session engine and a message storage that count their use, through Django's own settings.

``SESSION_ENGINE = "tests.counting_stores"`` and ``MESSAGE_STORAGE = "tests.counting_stores.MessageStorage"``
swap in Django's database session store and fallback message storage, unchanged but for a count of how
many were built and how many sessions were loaded from the database: what a request paid for.
"""

from collections import Counter

from django.contrib.messages.storage.fallback import FallbackStorage
from django.contrib.sessions.backends import db

built = Counter()


class SessionStore(db.SessionStore):
    def __init__(self, session_key=None):
        built["session store"] += 1
        super().__init__(session_key)

    def load(self):
        built["session load"] += 1
        return super().load()


class MessageStorage(FallbackStorage):
    def __init__(self, request, *args, **kwargs):
        built["message storage"] += 1
        super().__init__(request, *args, **kwargs)
