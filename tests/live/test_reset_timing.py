"""Password reset answers as fast for a known address as for an unknown one, through a real gunicorn.

The mail server here is slow on purpose (a small SMTP server in a thread that waits before accepting each
message), as a remote mail server is. Were the mail sent inside the request, a known address would answer
that much later than an unknown one, and anyone could tell which addresses have an account.
"""

import os
import re
import socketserver
import threading
import time
from unittest import mock
from urllib.parse import urlencode

import pytest
from django.db import connection

from .helpers import GunicornServer, database_url

SMTP_DELAY = 2.0  # seconds the mail server takes to accept a message


class SlowSmtp(socketserver.ThreadingTCPServer):
    """Just enough SMTP for Django's backend; keeps each message it accepts, SMTP_DELAY after its data."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.messages = []
        self.received = threading.Event()

        class Handler(socketserver.StreamRequestHandler):
            def handle(handler):
                def say(line):
                    handler.wfile.write(line.encode() + b"\r\n")

                say("220 slow.example ESMTP")
                while line := handler.rfile.readline():
                    command = line.decode("latin-1").strip().upper()
                    if command.startswith(("EHLO", "HELO")):
                        say("250 slow.example")
                    elif command == "DATA":
                        say("354 go on")
                        data = []
                        while (chunk := handler.rfile.readline()) not in (b".\r\n", b""):
                            data.append(chunk)
                        time.sleep(SMTP_DELAY)
                        self.messages.append(b"".join(data).decode("utf-8", "replace"))
                        self.received.set()
                        say("250 queued")
                    elif command == "QUIT":
                        say("221 bye")
                        return
                    else:  # MAIL FROM, RCPT TO, RSET, NOOP
                        say("250 ok")

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]


@pytest.fixture(scope="module")
def smtp():
    server = SlowSmtp()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def mailing_server(django_db_setup, django_db_blocker, live_log_dir, smtp):
    """gunicorn that sends its mail to the slow mail server (password reset is offered)."""
    with django_db_blocker.unblock():
        url = database_url(connection.settings_dict)
    with mock.patch.dict(os.environ, {"EMAIL_URL": f"smtp://127.0.0.1:{smtp.port}"}):
        server = GunicornServer(url, workers=2, log_dir=live_log_dir).start()
    yield server
    server.stop()


def ask_for_reset(server, email):
    """POST the reset form as a browser does; return the seconds until the answer and the answer."""
    client = server.client()
    page = client.get("/accounts/password_reset/")
    assert page.status == 200, page
    cookie = re.search(r"csrftoken=([^;]+)", page.headers["set-cookie"]).group(1)
    field = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    started = time.monotonic()
    response = client.request(
        "POST",
        "/accounts/password_reset/",
        headers={"Cookie": f"csrftoken={cookie}", "Content-Type": "application/x-www-form-urlencoded"},
        body=urlencode({"email": email, "csrfmiddlewaretoken": field}),
    )
    elapsed = time.monotonic() - started
    client.close()
    return elapsed, response


def test_a_known_address_answers_as_fast_as_an_unknown_one_and_its_mail_still_goes_out(
    mailing_server, smtp, make_user
):
    make_user("alice")  # alice@example.com
    unknown_time, unknown = ask_for_reset(mailing_server, "nobody@example.com")
    known_time, known = ask_for_reset(mailing_server, "alice@example.com")

    # The same answer, and neither waits for the mail server.
    assert (unknown.status, unknown.headers["location"]) == (302, "/accounts/password_reset/done/")
    assert (known.status, known.headers["location"]) == (302, "/accounts/password_reset/done/")
    assert known_time < SMTP_DELAY / 2, known_time
    assert unknown_time < SMTP_DELAY / 2, unknown_time
    # The mail is sent all the same, once the answer has gone: only to the known address.
    assert smtp.received.wait(timeout=30)
    [message] = smtp.messages
    assert "alice@example.com" in message and "/accounts/reset/" in message
