"""Real-browser fixtures: Playwright driving Chromium against Django's live server."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from ..conftest import PASSWORD

# Playwright's sync API keeps an event loop in this thread; the tests' ORM calls are still synchronous.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ROOT = Path(__file__).resolve().parent.parent.parent
# Tests leave the tree as they found it: screenshots go to an ignored folder unless `make screenshots`
# points SCREENSHOTS_DIR at docs/screenshots/ to refresh the README's pictures on purpose.
SCREENSHOTS = ROOT / os.environ.get("SCREENSHOTS_DIR", "build/screenshots")
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
    from playwright.sync_api import sync_playwright

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


@pytest.fixture
def page(browser_context):
    page = browser_context.pages[0] if browser_context.pages else browser_context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    assert not errors, f"JavaScript errors on the page: {errors}"


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
