"""Activation and password-reset mail through a real SMTP server (aiosmtpd), spec §B.6/§B.7:
with WRENN_SMTP_URL set, a signup stays inactive until the mailed token activates it."""

from __future__ import annotations

import email
import re
import socket
import time

import pytest
import requests
from aiosmtpd.controller import Controller

from conftest import running_server


class Inbox:
    def __init__(self):
        self.messages: list[tuple[list[str], str]] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        # Headers plus the decoded body (the server may send it quoted-printable).
        msg = email.message_from_bytes(envelope.content)
        body = msg.get_payload(decode=True).decode(msg.get_content_charset() or "utf-8")
        text = f"From: {msg['From']}\nSubject: {msg['Subject']}\n\n{body}"
        self.messages.append((list(envelope.rcpt_tos), text))
        return "250 OK"

    def wait_for(self, rcpt: str, n: int = 1, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [body for tos, body in self.messages if rcpt in tos]
            if len(got) >= n:
                return got[n - 1]
            time.sleep(0.1)
        pytest.fail(f"no mail #{n} to {rcpt} within {timeout} s (got {self.messages!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


@pytest.fixture(scope="module")
def mail_server(smtp):
    controller, _ = smtp
    env = {
        "WRENN_SMTP_URL": f"smtp://127.0.0.1:{controller.port}",
        "WRENN_SMTP_FROM": "Wrenn <noreply@wrenn.test>",
        "WRENN_PUBLIC_URL": "https://wrenn.example.test",
    }
    with running_server("wrenn-server-mail.log", env) as (base, _log, _proc):
        yield base


def token_in(mail: str) -> str:
    m = re.search(r"token=([0-9a-f]{32})", mail)
    assert m, mail
    return m.group(1)


def test_signup_mails_an_activation_link(mail_server, smtp):
    _, inbox = smtp
    email, password = "new-user@example.com", "a-good-password"
    r = requests.post(f"{mail_server}/v1/auth/signup",
                      json={"email": email, "password": password, "name": "New User"}, timeout=10)
    assert r.status_code == 201, r.text
    assert "email" in r.json()["message"]
    # Not active until the token from the mail is used.
    r = requests.post(f"{mail_server}/v1/auth/login", json={"email": email, "password": password}, timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "account_not_activated", r.text

    mail = inbox.wait_for(email)
    assert "https://wrenn.example.test/activate?token=" in mail
    assert "noreply@wrenn.test" in mail
    token = token_in(mail)
    r = requests.post(f"{mail_server}/v1/auth/activate", json={"token": token}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["email"] == email and r.json()["token"]
    # One use only.
    r = requests.post(f"{mail_server}/v1/auth/activate", json={"token": token}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_token", r.text
    r = requests.post(f"{mail_server}/v1/auth/login", json={"email": email, "password": password}, timeout=10)
    assert r.status_code == 200, r.text


def test_password_reset_is_mailed(mail_server, smtp):
    _, inbox = smtp
    email = "reset-me@example.com"
    r = requests.post(f"{mail_server}/v1/auth/signup",
                      json={"email": email, "password": "first-password", "name": "Reset"}, timeout=10)
    assert r.status_code == 201, r.text
    token = token_in(inbox.wait_for(email))
    assert requests.post(f"{mail_server}/v1/auth/activate", json={"token": token}, timeout=10).ok

    r = requests.post(f"{mail_server}/v1/me/password/reset", json={"email": email}, timeout=10)
    assert r.status_code == 204
    # Unknown addresses get the same answer and no mail.
    r = requests.post(f"{mail_server}/v1/me/password/reset", json={"email": "nobody@example.com"}, timeout=10)
    assert r.status_code == 204
    mail = inbox.wait_for(email, n=2)
    assert "/reset-password?token=" in mail
    r = requests.post(f"{mail_server}/v1/me/password/reset/confirm",
                      json={"token": token_in(mail), "new_password": "second-password"}, timeout=10)
    assert r.status_code == 204, r.text
    r = requests.post(f"{mail_server}/v1/auth/login",
                      json={"email": email, "password": "second-password"}, timeout=10)
    assert r.status_code == 200, r.text
    assert not [tos for tos, _ in inbox.messages if "nobody@example.com" in tos]


def test_signup_fails_cleanly_when_mail_cannot_go_out():
    # An SMTP port nobody listens on: 503 `email_failed`, and no account is left behind.
    env = {"WRENN_SMTP_URL": f"smtp://127.0.0.1:{free_port()}"}
    with running_server("wrenn-server-nomail.log", env) as (base, _log, _proc):
        body = {"email": "lost@example.com", "password": "a-good-password", "name": "Lost"}
        r = requests.post(f"{base}/v1/auth/signup", json=body, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "email_failed", r.text
        r = requests.post(f"{base}/v1/auth/login",
                          json={"email": body["email"], "password": body["password"]}, timeout=10)
        assert r.status_code == 401, r.text
