"""Real-browser fixtures: Playwright driving Chromium against Django's live server."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

from ..helpers import PASSWORD

# Playwright's sync API keeps an event loop in this thread; the tests' ORM calls are still synchronous.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ROOT = Path(__file__).resolve().parent.parent.parent
# Tests leave the tree as they found it: screenshots go to an ignored folder unless `make screenshots`
# points SCREENSHOTS_DIR at docs/screenshots/ to refresh the README's pictures on purpose.
SCREENSHOTS = ROOT / os.environ.get("SCREENSHOTS_DIR", "build/screenshots")
# axe-core, installed by `make axe` (which `make test` runs) into an ignored folder.
AXE = ROOT / ".cache" / "npm" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
# A page with a violation axe-core rates this bad fails the test that visited it.
AXE_FAILING_IMPACTS = ("serious", "critical")
# Run by Playwright over the DevTools protocol, which the page's Content-Security-Policy does not govern.
AXE_RUN = """async () => {
    const results = await axe.run(document, {resultTypes: ["violations"]});
    return results.violations.map(v => ({
        id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(" ")),
    }));
}"""
DEBIAN_CHROMIUM = "/usr/bin/chromium"
# Under libfaketime (`make test-clock`) the portal lives at a chosen moment, but Chromium's network service
# crashes with the library preloaded; the browser is the client, so it keeps the machine's own clock.
BROWSER_ENV = {name: value for name, value in os.environ.items() if name != "LD_PRELOAD"}
# As root Chromium needs --no-sandbox; the rest keep it from reaching for the (closed) network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
]


@pytest.fixture(autouse=True)
def static_files_from_source(settings):
    """Serve static files straight from static/ for the live server.

    The live server answers /static/ itself from the app folders (the staticfiles finders), which
    know nothing of the manifest's hashed names; plain storage makes {% static %} point at the files
    it can find, so the browser always runs the current CSS and JavaScript, no collectstatic needed.
    """
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(scope="session")
def browser_context_dir():
    path = tempfile.mkdtemp(prefix="portal-chromium-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def playwright_instance():
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def chromium_path(playwright_instance):
    """Return the Chromium to drive: $CHROMIUM, Debian's or Ubuntu's, or Playwright's own (see the Makefile).

    Without one the browser tests fail in CI (a CI run that skipped them would prove nothing) and are
    skipped elsewhere with the command that installs one.
    """
    playwrights_own = playwright_instance.chromium.executable_path
    for candidate in (os.environ.get("CHROMIUM"), DEBIAN_CHROMIUM, playwrights_own):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    message = "No Chromium for the browser tests: run `make test` (it installs one) or set CHROMIUM=/path."
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def browser_context(request, playwright_instance, chromium_path, browser_context_dir, live_server):
    """A fresh persistent Chromium profile per test, with clipboard access for the copy button.

    A test marked ``no_javascript`` gets a browser with JavaScript switched off.
    """
    profile = tempfile.mkdtemp(dir=browser_context_dir)
    context = playwright_instance.chromium.launch_persistent_context(
        profile,
        java_script_enabled=request.node.get_closest_marker("no_javascript") is None,
        executable_path=chromium_path,
        env=BROWSER_ENV,
        headless=True,
        args=CHROMIUM_ARGS,
        base_url=live_server.url,
        viewport={"width": 1280, "height": 800},
        permissions=["clipboard-read", "clipboard-write"],
    )
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture(scope="session")
def axe_source():
    if not AXE.exists():
        pytest.fail(f"No axe-core for the accessibility checks at {AXE}: run `make axe` (make test does).")
    return AXE.read_text()


def accessibility_violations(page, axe_source):
    """Run axe-core on the page as it is now; return its serious and critical violations as text."""
    try:
        page.evaluate(axe_source)
        found = page.evaluate(AXE_RUN)
    except PlaywrightError as error:
        # The page navigated away in the meantime (a form submitted, a link followed): the next page
        # is checked when it has loaded. Anything else is a check that could not run, and fails.
        if "context was destroyed" in error.message or "navigat" in error.message:
            return []
        return [f"{page.url}: axe-core could not run: {error.message}"]
    return [
        f"{page.url}: {v['impact']} {v['id']} ({v['help']}) at {', '.join(v['nodes'])}"
        for v in found
        if v["impact"] in AXE_FAILING_IMPACTS
    ]


class AccessibilityAudit:
    """Check each page as it loads, one check at a time.

    Playwright delivers a "load" event while the test (or a check) waits on the browser, so a page can
    load while the previous one is still being checked: that load is remembered and checked next.
    """

    def __init__(self, axe_source, origin):
        self.axe_source = axe_source
        # Only the portal's own pages: the OpenID provider's login pages in the sign-in tests are
        # another project's (oidc-provider's development pages), not ours to fix.
        self.origin = origin
        self.violations = []
        self.running = False
        self.pending = False

    def __call__(self, page):
        if not page.url.startswith(self.origin + "/"):
            return
        if self.running:
            self.pending = True
            return
        self.running = True
        try:
            self.pending = True
            while self.pending:
                self.pending = False
                self.violations.extend(accessibility_violations(page, self.axe_source))
        finally:
            self.running = False


@pytest.fixture
def page(browser_context, axe_source, live_server):
    """The test's page. It fails on any JavaScript error, and on any serious or critical accessibility
    violation axe-core finds on a page it loads (each page, the people's and the admin's, as it loads)."""
    page = browser_context.pages[0] if browser_context.pages else browser_context.new_page()
    errors, audit = [], AccessibilityAudit(axe_source, live_server.url)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("load", audit)
    yield page
    audit(page)  # the last state the test left
    violations = audit.violations
    assert not errors, f"JavaScript errors on the page: {errors}"
    assert not violations, "Accessibility violations (axe-core):\n" + "\n".join(dict.fromkeys(violations))


@pytest.fixture
def sign_in(page):
    """Sign in through the real login form: sign_in(user) -> page."""

    def sign_in(user, password=PASSWORD):
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(user.get_username())
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/profile/")
        return page

    return sign_in


@pytest.fixture
def screenshot():
    """Save a full-page screenshot to <SCREENSHOTS_DIR>/<name>.png (build/screenshots/ unless told)."""

    def take(page, name):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    return take
