"""envd's HTTP API as the SDK and the platform use it: /health, /metrics, /init, /envs,
/snapshot/prepare, and /files access-token and URL-signature checks.

Tests that change daemon-wide state run against a private envd (`private_envd`)."""

import os
import time
import uuid
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

import httpx
import pytest
from e2b import AuthenticationException, ConnectionConfig, Sandbox
from e2b.envd.versions import ENVD_DEBUG_FALLBACK
from packaging.version import Version


def test_health_and_is_running(sandbox, envd):
    assert sandbox.is_running() is True
    r = httpx.get(f"{envd.url}/health", timeout=10)
    assert r.status_code == 200
    # E2B clients enable every feature from envd 0.6.4 on.
    assert Version(r.json()["version"]) >= Version("0.6.4")
    assert r.headers.get("cache-control") == "no-store"


def test_metrics(envd):
    r = httpx.get(f"{envd.url}/metrics", timeout=10)
    assert r.status_code == 200
    m = r.json()
    assert abs(m["ts"] - time.time()) < 60
    assert m["cpu_count"] == os.cpu_count()
    assert 0 <= m["cpu_used_pct"] <= 100
    assert 0 < m["mem_used"] <= m["mem_total"]
    assert 0 < m["disk_used"] <= m["disk_total"]


def test_init_sets_default_user_env_and_workdir(private_envd, user_scratch):
    r = httpx.post(
        f"{private_envd.url}/init",
        json={
            "envVars": {"WRENN_E2E": "from-init"},
            "defaultUser": "user",
            "defaultWorkdir": str(user_scratch),
        },
        timeout=10,
    )
    assert r.status_code == 204
    assert httpx.get(f"{private_envd.url}/envs", timeout=10).json().get("WRENN_E2E") == "from-init"

    sbx = Sandbox.create(sandbox_url=private_envd.url, request_timeout=30)
    result = sbx.commands.run('echo "$WRENN_E2E"; whoami; pwd', timeout=15)
    assert result.stdout == f"from-init\nuser\n{user_scratch}\n"
    # Files written without a user belong to the default user.
    info = sbx.files.write(str(user_scratch / "default-user.txt"), "x")
    assert sbx.files.get_info(info.path).owner == "user"


def _with_query(url: str, **changes: str) -> str:
    parts = urlparse(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunparse(parts._replace(query=urlencode(query)))


def test_access_token_guards_files(private_envd, scratch):
    token = uuid.uuid4().hex
    r = httpx.post(f"{private_envd.url}/init", json={"accessToken": token}, timeout=10)
    assert r.status_code == 204
    path = str(scratch / "secret.txt")

    anonymous = Sandbox.create(sandbox_url=private_envd.url, request_timeout=30)
    with pytest.raises(AuthenticationException):
        anonymous.files.write(path, "x")
    assert not os.path.exists(path)

    # What Sandbox.create returns for a secured sandbox: the token goes in X-Access-Token
    # and into the signatures of download/upload URLs.
    secured = Sandbox(
        sandbox_id="debug_sandbox_id",
        sandbox_domain=None,
        envd_version=ENVD_DEBUG_FALLBACK,
        envd_access_token=token,
        traffic_access_token=None,
        connection_config=ConnectionConfig(
            sandbox_url=private_envd.url,
            request_timeout=30,
            extra_sandbox_headers={"X-Access-Token": token},
        ),
    )
    secured.files.write(path, "top secret")
    assert secured.files.read(path) == "top secret"

    url = secured.download_url(path)
    assert "signature=v1_" in url
    assert httpx.get(url, timeout=10).content == b"top secret"
    tampered = _with_query(url, signature="v1_" + "0" * 64)
    assert httpx.get(tampered, timeout=10).status_code == 401
    expiring = secured.download_url(path, use_signature_expiration=60)
    assert httpx.get(expiring, timeout=10).status_code == 200

    upload = secured.upload_url(str(scratch / "up.txt"))
    r = httpx.post(upload, files={"file": ("up.txt", b"uploaded")}, timeout=10)
    assert r.status_code == 200
    assert (scratch / "up.txt").read_bytes() == b"uploaded"


def test_snapshot_prepare_then_service_resumes(private_envd):
    assert httpx.post(f"{private_envd.url}/snapshot/prepare", timeout=10).status_code == 204
    # The first /health after a restore brings everything back.
    assert httpx.get(f"{private_envd.url}/health", timeout=10).status_code == 200
    sbx = Sandbox.create(sandbox_url=private_envd.url, request_timeout=30)
    assert sbx.commands.run("echo back", timeout=15).stdout == "back\n"
