"""capsule.get_url(port) and the `{port}-{capsule_id}.{domain}` proxy (spec §A.3, §K.25).

With WRENN_BASE_URL=http://127.0.0.1:PORT and no WRENN_PROXY_DOMAIN the SDK builds
`http://8000-cl-….127.0.0.1:PORT`, a name no resolver answers; so the tests send the request to
the server's address with that URL's Host header, which is exactly what the server routes on."""

from __future__ import annotations

import httpx
import pytest

from helpers import rand_name, random_id, wait_until


def via_server(server, url: str, path: str = "/", headers: dict | None = None,
               **kwargs) -> httpx.Response:
    u = httpx.URL(url)
    host = u.host + (f":{u.port}" if u.port else "")
    return httpx.get(f"{server.base_url}{path}", headers={"Host": host, **(headers or {})},
                     timeout=20, **kwargs)


def test_get_url_format(server, capsule):
    url = capsule.get_url(8000)
    assert url == f"http://8000-{capsule.capsule_id}.{server.host}:{server.port}"


@pytest.fixture(scope="module")
def web(capsule):
    token = rand_name("served")
    capsule.files.write("/tmp/www/index.html", f"<p>{token}</p>")
    capsule.files.write("/tmp/www/sub/file.txt", "nested")
    h = capsule.commands.run("cd /tmp/www && exec python3 -m http.server 8000",
                             background=True, tag="web")
    yield token
    capsule.commands.kill(h.pid)


def test_http_server_through_proxy(server, capsule, web):
    url = capsule.get_url(8000)
    r = wait_until(lambda: (x := via_server(server, url)).status_code == 200 and x, 30, 1,
                   what="the capsule's http.server through the proxy")
    assert web in r.text  # no API key sent: proxy URLs are unauthenticated (§A.3)
    r = via_server(server, url, "/sub/file.txt")
    assert r.status_code == 200 and r.text == "nested"
    r = via_server(server, url, "/missing")
    assert r.status_code == 404  # the capsule's server answered, passed through as-is
    # The SDK's X-API-Key on proxied requests is accepted and ignored (§A.3).
    r = via_server(server, url, headers={"X-API-Key": server.api_key})
    assert r.status_code == 200 and web in r.text


def test_get_url_resolves_on_this_machine(server, capsule, web):
    """With the base URL `wrenn up` prints on loopback (http://localhost:PORT), get_url(port)
    is a `*.localhost` name that resolves here (libnss-myhostname) and reaches the capsule."""
    import socket

    from wrenn import Capsule

    local = Capsule.connect(capsule.capsule_id, api_key=server.api_key,
                            base_url=f"http://localhost:{server.port}")
    url = local.get_url(8000)
    host = httpx.URL(url).host
    assert host == f"8000-{capsule.capsule_id}.localhost", url
    try:
        socket.getaddrinfo(host, server.port)
    except socket.gaierror:
        pytest.fail(f"{host} does not resolve: install libnss-myhostname (setup.sh does)")
    r = wait_until(lambda: (x := httpx.get(url, timeout=10)).status_code == 200 and x, 30, 1,
                   what="the capsule's http.server through its *.localhost URL")
    assert web in r.text


def test_redirect_location_is_rewritten(server, capsule, web):
    # http.server redirects /sub → /sub/; the Location must not leak /proxy/{id}/{port} (§A.3).
    r = via_server(server, capsule.get_url(8000), "/sub", follow_redirects=False)
    assert r.status_code in (301, 302, 307, 308)
    assert "/proxy/" not in r.headers["location"]
    assert r.headers["location"].endswith("/sub/")


def test_proxy_errors(server, capsule):
    r = via_server(server, capsule.get_url(8099))  # nothing listens there
    assert r.status_code == 502
    r = via_server(server, f"http://8000-{random_id()}.{server.host}:{server.port}")
    assert r.status_code == 404
    r = via_server(server, f"http://70000-{capsule.capsule_id}.{server.host}:{server.port}")
    assert r.status_code == 400  # port outside 1..65535
