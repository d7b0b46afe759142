"""The one way the portal tells a person something: a plain-text mail rendered from two templates.

Each notice is a pair of templates in ``templates/email/``: ``<name>_subject.txt`` (one line) and
``<name>.txt`` (the body). The context always carries the recipient as ``user``. Links in a mail are
absolute, built from ``SITE_URL`` here and nowhere else, so a mail read outside the browser still
points at the address people open. No credential value ever goes into a context.

This module imports no model: models and managers mail through it, so it stays below them.
"""

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse


def absolute_url(name, *args):
    """Return the address people open for the URL pattern *name* with positional *args*."""
    return site_url(reverse(name, args=args))


def site_url(path):
    """Return *path* (absolute on this site, e.g. ``/docs/migration/``) as the address people open."""
    return settings.SITE_URL + path


def mail_owner(user, template, context, *, owner=None):
    """Mail *user* the notice *template* rendered with *context* (and *user* as ``user``).

    *owner*: whose credentials the notice is about, when it may be someone other than *user*. A
    service account reads no mail, so its notices go to its managers; the template then names the
    account (``service_account``) to say the mail is about that account's tokens, not theirs.

    Raises whatever sending raises: each caller decides whether a failed mail is retried, reported
    or only logged.
    """
    context = {**context, "user": user}
    if owner is not None:
        context["service_account"] = owner if owner != user else None
    subject = render_to_string(f"email/{template}_subject.txt", context).strip()
    body = render_to_string(f"email/{template}.txt", context)
    send_mail(subject, body, None, [user.email])


def mail_each(people, template, context, *, owner=None):
    """Mail each of *people* the notice *template* (see ``mail_owner``); stop at the first failure.

    One mail each, not one mail to all: a service account's managers do not see one another's
    addresses.
    """
    for person in people:
        mail_owner(person, template, context, owner=owner)
