"""API keys, users and team scoping (spec §B.0 auth, §B.6, §B.8, §J, §K.3).
Raw HTTP only for what the SDK has no method for (signup, login, API keys)."""

from __future__ import annotations

import os
import stat

import httpx
import httpx_ws
import pytest
from wrenn import (
    Capsule,
    WrennAuthenticationError,
    WrennClient,
    WrennNotFoundError,
)
from wrenn.commands import Commands
from wrenn.files import Files

from helpers import API_KEY_RE, CAPSULE_ID_RE, create_api_key, signup_and_login

BAD_KEY = "wrn_" + "0" * 32


def test_admin_key_file(server):
    if server.data_dir is None:
        pytest.skip("external server: no data dir to inspect")
    key_file = server.data_dir / "admin-api-key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert API_KEY_RE.match(server.api_key), server.api_key
    # `wrenn up` also prints the key for the shell.
    assert f"export WRENN_API_KEY={server.api_key}" in server.log_path.read_text(errors="replace")


def test_health_needs_no_auth(server):
    r = httpx.get(f"{server.base_url}/health", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_bad_key_is_authentication_error(server, capsule):
    with WrennClient(api_key=BAD_KEY, base_url=server.base_url) as bad:
        with pytest.raises(WrennAuthenticationError) as ei:
            bad.capsules.list()
        assert ei.value.code == "unauthorized" and ei.value.status_code == 401
        with pytest.raises(WrennAuthenticationError):
            bad.capsules.get(capsule.capsule_id)
        with pytest.raises(WrennAuthenticationError):
            bad.capsules.create()
        with pytest.raises(WrennAuthenticationError):
            bad.snapshots.list()
        with pytest.raises(WrennAuthenticationError):
            Commands(capsule.capsule_id, bad.http).run("true")
        with pytest.raises(WrennAuthenticationError):
            Files(capsule.capsule_id, bad.http).write("/tmp/x", "x")
        # WebSockets authenticate before the upgrade (§C): a 401, so no 101.
        with pytest.raises(httpx_ws.WebSocketUpgradeError) as wi:
            list(Commands(capsule.capsule_id, bad.http).stream("true"))
        assert wi.value.response.status_code == 401


def test_missing_key_is_authentication_error(server):
    with WrennClient(api_key="placeholder", base_url=server.base_url) as c:
        del c.http.headers["X-API-Key"]  # the SDK refuses to start without a key
        with pytest.raises(WrennAuthenticationError) as ei:
            c.capsules.list()
        assert ei.value.code == "unauthorized" and ei.value.status_code == 401
    r = httpx.get(f"{server.base_url}/v1/capsules", timeout=10)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"  # the error envelope (§B.0)
    assert isinstance(r.json()["error"]["message"], str)


def test_sdk_without_any_key_refuses(monkeypatch):
    monkeypatch.delenv("WRENN_API_KEY", raising=False)
    with pytest.raises(ValueError):
        WrennClient()


def test_api_key_created_by_user_works(server, second_team, other_client):
    assert API_KEY_RE.match(second_team.api_key)
    assert second_team.api_key_id.startswith("key-")
    assert isinstance(other_client.capsules.list(), list)
    r = httpx.get(f"{server.base_url}/v1/api-keys",
                  headers={"Authorization": f"Bearer {second_team.token}"}, timeout=10)
    assert r.status_code == 200
    listed = {k["id"]: k for k in r.json()}
    assert second_team.api_key_id in listed
    assert "key" not in listed[second_team.api_key_id]  # shown once (§B.8)
    assert listed[second_team.api_key_id]["key_prefix"] == second_team.api_key[:10]


def test_bearer_jwt_works_on_capsule_routes(server, second_team):
    r = httpx.get(f"{server.base_url}/v1/capsules",
                  headers={"Authorization": f"Bearer {second_team.token}"}, timeout=10)
    assert r.status_code == 200 and isinstance(r.json(), list)


def test_revoked_key_stops_working(server, second_team):
    k = create_api_key(server, second_team.token, name="to-revoke")
    with WrennClient(api_key=k["key"], base_url=server.base_url) as c:
        c.capsules.list()
        r = httpx.delete(f"{server.base_url}/v1/api-keys/{k['id']}",
                         headers={"Authorization": f"Bearer {second_team.token}"}, timeout=10)
        assert r.status_code == 204
        with pytest.raises(WrennAuthenticationError):
            c.capsules.list()


def test_api_keys_need_a_user_jwt(server):
    r = httpx.post(f"{server.base_url}/v1/api-keys", json={"name": "x"},
                   headers={"X-API-Key": server.api_key}, timeout=10)
    assert r.status_code in (401, 403)  # JWT-only route (§B.0)


def test_login_errors(server, second_team):
    with httpx.Client(base_url=server.base_url, timeout=30) as h:
        r = h.post("/v1/auth/login", json={"email": second_team.email, "password": "wrong-pass"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = h.post("/v1/auth/login", json={"email": "nobody@example.com", "password": "whatever1"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = h.post("/v1/auth/signup",
                   json={"email": second_team.email, "password": "another-pass", "name": "dup"})
        assert r.status_code == 409
        r = h.post("/v1/auth/signup", json={"email": "a@b.c", "password": "short", "name": "x"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"


def test_each_user_gets_its_own_team(server, second_team):
    _, _, auth = signup_and_login(server, "sdk-third")
    assert auth["team_id"].startswith("team-")
    assert auth["team_id"] != second_team.team_id


def test_other_teams_capsule_is_not_found(capsule, other_client):
    # §B.2, §J: cross-team access is reported as not found (404, never 403).
    cid = capsule.capsule_id
    assert CAPSULE_ID_RE.match(cid)
    assert cid not in [c.id for c in other_client.capsules.list()]
    for call in (
        lambda: other_client.capsules.get(cid),
        lambda: other_client.capsules.pause(cid),
        lambda: other_client.capsules.resume(cid),
        lambda: other_client.capsules.ping(cid),
        lambda: other_client.capsules.metrics(cid),
        lambda: other_client.capsules.destroy(cid),
        lambda: other_client.snapshots.create(cid, name="stolen"),
        lambda: Commands(cid, other_client.http).run("echo pwned"),
        lambda: Commands(cid, other_client.http).list(),
        lambda: Commands(cid, other_client.http).kill(1),
        lambda: Files(cid, other_client.http).read("/etc/hostname"),
        lambda: Files(cid, other_client.http).write("/tmp/pwned", "x"),
        lambda: Files(cid, other_client.http).list("/"),
    ):
        with pytest.raises(WrennNotFoundError):
            call()
    with pytest.raises(WrennNotFoundError):
        Capsule.connect(cid, api_key=other_client._api_key)
    # And the capsule is untouched.
    assert capsule.is_running()
    assert not capsule.files.exists("/tmp/pwned")
