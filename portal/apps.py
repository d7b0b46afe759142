"""The admin app's configuration: ``django.contrib.admin`` with the portal's own site as the default."""

from django.contrib.admin.apps import AdminConfig


class PortalAdminConfig(AdminConfig):
    """django.contrib.admin, with the portal's admin site as ``admin.site`` (Django's documented way)."""

    default_site = "portal.admin.PortalAdminSite"
