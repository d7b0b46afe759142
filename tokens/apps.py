from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TokensConfig(AppConfig):
    name = "tokens"
    verbose_name = _("API tokens")

    def ready(self):
        from . import checks  # noqa: F401  (registers the system checks)
        from . import private_files

        private_files.connect()
