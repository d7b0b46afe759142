"""Plain-text templates (``*.txt``: mail subjects and bodies) are rendered as text, never as HTML.

Django's template engine escapes HTML by default: a token named ``R&D`` would reach its owner's mail as
``R&amp;D``. The first engine in ``TEMPLATES`` loads only ``.txt`` files from the project's templates
folder and does not escape; every other template goes to the second, HTML engine. A new mail template
needs nothing more than its ``.txt`` name.
"""

from django.template.loaders.filesystem import Loader


class TextLoader(Loader):
    """The filesystem loader, for ``.txt`` templates only."""

    def get_template_sources(self, template_name):
        if template_name.endswith(".txt"):
            yield from super().get_template_sources(template_name)
