"""Plain-text templates (``*.txt`` in the templates folder: mails) are rendered as text, never HTML.

Django's template engine escapes HTML by default: a token named ``R&D`` would reach its owner's mail as
``R&amp;D``. ``TEMPLATES`` has two engines over the same folder: the HTML engine's loader skips ``.txt``
files, so ``render_to_string("email/….txt")`` falls through to the text engine, which loads only them
and does not escape. A new mail template needs nothing more than its ``.txt`` name.
"""

from django.template.loaders.filesystem import Loader


class TextLoader(Loader):
    """The filesystem loader, for ``.txt`` templates only (the text engine)."""

    def get_template_sources(self, template_name):
        if template_name.endswith(".txt"):
            yield from super().get_template_sources(template_name)


class HtmlLoader(Loader):
    """The filesystem loader, for every template but ``.txt`` ones (the HTML engine)."""

    def get_template_sources(self, template_name):
        if not template_name.endswith(".txt"):
            yield from super().get_template_sources(template_name)
