"""The secret scan (tests/secret_scan.py) really catches leaks: proven on deliberate ones.

A scan that never fires proves nothing, so these tests leak on purpose: directly into a Scanner, and
in a separate pytest run whose tests put a token into a log line, into a page, and into a second
showing after its reveal. That run must fail, name each leaking test, and not print the value.
"""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from io import StringIO

import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.management import call_command

from tokens import credentials
from tokens.credentials import TOKEN_RE

from .secret_scan import Scanner, _stored_state, scanner

LEAKY_TESTS = """
import logging

import pytest
from django.http import HttpResponse
from django.urls import path

from tokens import credentials

REVEALED = []


def reveal(request):
    value, _parsed = credentials.generate()
    REVEALED.append(value)
    return HttpResponse(f"copy it now: {value}")


def show_again(request):
    return HttpResponse(f"here it is again: {REVEALED[-1]}")


def leaky_page(request):
    value, _parsed = credentials.generate()
    return HttpResponse(f"<p>{value}</p>")


urlpatterns = [
    path("profile/integrations/authorizations/new/", reveal),
    path("again/", show_again),
    path("leak/", leaky_page),
]


def test_a_token_nobody_shows():
    credentials.generate()


@pytest.mark.urls(__name__)
def test_the_single_reveal(client):
    assert client.post("/profile/integrations/authorizations/new/").status_code == 200


@pytest.mark.urls(__name__)
def test_a_second_showing_after_the_reveal(client):
    client.post("/profile/integrations/authorizations/new/")
    assert client.get("/again/").status_code == 200


@pytest.mark.urls(__name__)
def test_a_page_that_shows_a_token(client):
    assert client.get("/leak/").status_code == 200


def test_a_log_line_with_a_token():
    value, _parsed = credentials.generate()
    logging.getLogger("portal.leaky").warning("issued %s", value)
"""


def test_a_deliberate_leak_in_a_separate_pytest_run_fails_that_run_and_names_the_leaking_tests(tmp_path):
    (tmp_path / "test_leaky.py").write_text(LEAKY_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nDJANGO_SETTINGS_MODULE = portal.settings\n")
    report = tmp_path / "report.xml"
    # Its own data folder and no DATABASE_URL: it must never touch this run's test database.
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env.update(PYTHONPATH=str(settings.BASE_DIR), DATA_DIR=str(tmp_path / "data"))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(tmp_path / "pytest.ini"),
            "--rootdir",
            str(tmp_path),
            "-p",
            "tests.secret_scan",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            str(tmp_path),
        ],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 1, output

    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        failed = case.find("error") is not None or case.find("failure") is not None
        outcomes[case.get("name")] = "leak" if failed else outcomes.get(case.get("name"), "clean")
    assert outcomes == {
        "test_a_token_nobody_shows": "clean",
        "test_the_single_reveal": "clean",
        "test_a_second_showing_after_the_reveal": "leak",
        "test_a_page_that_shows_a_token": "leak",
        "test_a_log_line_with_a_token": "leak",
    }, output
    assert "secret scan" in output and "GET /again/" in output and "GET /leak/" in output
    assert "log record of portal.leaky" in output
    # The scan's own report names where, never what: no full value in any of its lines. (pytest itself
    # still shows the leaking test's captured log, as it shows any failing test's output.)
    report_lines = [line for line in output.splitlines() if "appeared in" in line]
    assert len(report_lines) >= 6  # each leak at its test's teardown and again in the summary
    assert not any(TOKEN_RE.search(line) for line in report_lines)


def test_the_scanner_allows_one_reveal_and_flags_every_other_appearance():
    scan = Scanner()
    value, _parsed = credentials.generate()
    scan.track(value)
    key = "an-old-legacy-key-0123456789"
    scan.track(key, kind="key")
    scan.track("short", kind="key")  # too short to scan for without false alarms

    assert scan.observe(f'{{"token": "{value}"}}', where="the reveal", allowed={value}) == []
    assert scan.observe("a page that mentions nothing", where="a page") == []
    assert scan.observe("a short word, short", where="a page") == []
    leaks = scan.observe(f"<td>{value}</td> <td>{key}</td>", where="the list page")
    assert {leak.value for leak in leaks} == {value, key}
    assert all(value not in str(leak) and key not in str(leak) for leak in leaks)


def test_the_create_token_command_may_print_its_value_once_on_stdout_and_nowhere_else(db, user, capsys):
    before = len(scanner.leaks)
    out, err = StringIO(), StringIO()
    call_command("create_token", "alice", "cron job", stdout=out, stderr=err)
    value = out.getvalue().strip()
    assert TOKEN_RE.fullmatch(value)
    assert value in scanner.tokens  # the spy saw it being born
    assert value not in err.getvalue()
    assert scanner.leaks[before:] == []
    # The same value written anywhere else is caught, even by the same command's stderr.
    leaks = scanner.observe(f"Created {value}", where="a deliberate test leak")
    assert [leak.value for leak in leaks] == [value]
    scanner.leaks.remove(leaks[0])  # deliberate, so it does not fail this session


@pytest.mark.django_db
def test_a_value_kept_in_a_session_or_the_cache_is_found(client, user):
    # Shaped like a token but never issued, so only this test's own scanner knows it.
    planted = "bpt_" + "Q" * 52
    session = client.session
    session["oops"] = {"token": planted}
    session.save()
    cache.set("oops", f"kept {planted}")
    try:
        scan = Scanner()
        scan.track(planted)
        for where, text in _stored_state():
            scan.observe(text, where=where)
        assert sorted(leak.where for leak in scan.leaks) == ["the cache", "the session store"]
    finally:
        cache.delete("oops")
