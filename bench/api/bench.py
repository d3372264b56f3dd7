"""api-bench: the control plane's overhead over the host agent, measured in one run.

Starts `wrenn up` (control plane + in-process host agent) on a scratch data dir and compares,
interleaved so machine noise hits both arms alike (warm-up rounds dropped):

1. exec: SDK `capsule.commands.run("true")` (REST `POST /v1/capsules/{id}/exec`, which runs
   `/bin/sh -c true`) vs the agent's Connect JSON `HostAgentService/Exec` of the same command
   in the same capsule. Target: p50 ratio <= 1.5.
2. create: create-to-running through the API (SDK `capsules.create` -> 202 `starting`, then
   `GET /v1/capsules/{id}` every 10 ms until `running`) vs the agent's `CreateSandbox` round
   trip. Target: p50 ratio <= 1.2. (`Capsule(wait=True)` polls every 0.5 s, which would
   measure the SDK's poll interval, not the server.)
3. list: `GET /v1/capsules` with 200 capsule rows of the caller's team (inserted straight
   into the database), driven by `wrk` (else a threaded Python client) on loopback: req/s on
   SQLite (the `wrenn up` database) and, with WRENN_TEST_POSTGRES_URL, on PostgreSQL (a
   separate `wrenn server` on a fresh schema). Reported, no target.

Exits 1 when a target is missed. Usage: bench.py --wrenn BIN --data-dir DIR [-n N] [--warmup W]
[--creates N] [--duration S]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import string
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

EXEC_MAX = 1.5
CREATE_MAX = 1.2
LIST_ROWS = 200
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def ms(x: float) -> str:
    return f"{x * 1000:8.1f} ms"


class Proc:
    """A `wrenn` child process with its log file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None):
        self.log = log
        self.fh = open(log, "wb")
        self.proc = subprocess.Popen(args, stdout=self.fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def text(self) -> str:
        return ANSI.sub("", self.log.read_text(errors="replace"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 60) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.fh.close()


def wait_for(pred, timeout: float, what: str, proc: Proc | None = None):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if proc is not None and not proc.alive():
            sys.exit(f"api-bench: {what}: process exited:\n" + "\n".join(proc.text().splitlines()[-30:]))
        if time.monotonic() > deadline:
            sys.exit(f"api-bench: timed out waiting for {what}")
        time.sleep(0.05)


def agent_id() -> str:
    alphabet = string.digits + string.ascii_lowercase
    return "cl-" + "".join(secrets.choice(alphabet) for _ in range(25))


class Agent:
    """The in-process agent's Connect JSON API."""

    def __init__(self, addr: str):
        self.http = httpx.Client(
            base_url=f"http://{addr}/hostagent.v1.HostAgentService",
            headers={"Connect-Protocol-Version": "1"},
            timeout=120,
        )

    def call(self, method: str, body: dict) -> dict:
        r = self.http.post(f"/{method}", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"agent {method}: {r.status_code} {r.text}")
        return r.json()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wrenn", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("-n", type=int, default=60, help="exec rounds per arm")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--creates", type=int, default=8, help="create rounds per arm")
    ap.add_argument("--duration", type=int, default=10, help="seconds of load per database")
    args = ap.parse_args()

    data = Path(args.data_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    up = Proc([args.wrenn, "up", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"], data.parent / "api-bench-up.log")
    failures: list[str] = []
    pg: dict | None = None
    try:
        key_file = data / "admin-api-key"
        wait_for(key_file.exists, 600, "DIR/admin-api-key (wrenn up ready)", up)
        key = key_file.read_text().strip()
        m = wait_for(lambda: re.search(r"agent_addr=(\S+)", up.text()), 10, "agent_addr in the log", up)
        agent = Agent(m.group(1))
        print(f"api-bench: wrenn up at {base}, agent at {m.group(1)}")

        from wrenn import Capsule, WrennClient

        client = WrennClient(api_key=key, base_url=base, timeout=120)

        # 1. exec
        cap = Capsule(template="minimal", wait=True, api_key=key, base_url=base)
        sandboxes = agent.call("ListSandboxes", {}).get("sandboxes", [])
        sid = next((s.get("sandboxId") or s.get("sandbox_id") for s in sandboxes
                    if (s.get("sandboxId") or s.get("sandbox_id")) == cap.capsule_id), None)
        if sid is None:
            sys.exit(f"api-bench: capsule {cap.capsule_id} not in the agent's ListSandboxes: {sandboxes}")
        exec_body = {"sandboxId": sid, "cmd": "/bin/sh", "args": ["-c", "true"]}
        sdk_t: list[float] = []
        agent_t: list[float] = []
        for i in range(args.warmup + args.n):
            t0 = time.perf_counter()
            r = cap.commands.run("true")
            t1 = time.perf_counter()
            assert r.exit_code == 0, r
            a = agent.call("Exec", exec_body)
            t2 = time.perf_counter()
            assert a.get("exitCode", 0) == 0, a
            if i >= args.warmup:
                sdk_t.append(t1 - t0)
                agent_t.append(t2 - t1)
        cap.destroy(wait=True)
        e_sdk, e_agent = statistics.median(sdk_t), statistics.median(agent_t)
        exec_ratio = e_sdk / e_agent
        print(f"\nexec /bin/sh -c true ({args.n} rounds, {args.warmup} warm-up)")
        print(f"  SDK commands.run      p50 {ms(e_sdk)}   p99 {ms(pct(sdk_t, 99))}")
        print(f"  agent Exec (direct)   p50 {ms(e_agent)}   p99 {ms(pct(agent_t, 99))}")
        verdict = "ok" if exec_ratio <= EXEC_MAX else "MISSED"
        print(f"  ratio p50 SDK/agent   {exec_ratio:6.2f}x  (target <= {EXEC_MAX}x) {verdict}")
        if exec_ratio > EXEC_MAX:
            failures.append("exec")

        # 2. create-to-running
        api_t: list[float] = []
        agent_c: list[float] = []
        for i in range(1 + args.creates):
            t0 = time.perf_counter()
            c = client.capsules.create(template="minimal")
            while (st := client.capsules.get(c.id).status.value) != "running":
                if st in ("error", "stopped", "missing"):
                    sys.exit(f"api-bench: capsule {c.id} ended {st} while starting")
                time.sleep(0.01)
            t1 = time.perf_counter()
            client.capsules.destroy(c.id)
            aid = agent_id()
            t2 = time.perf_counter()
            agent.call("CreateSandbox", {"template": "minimal", "sandboxId": aid})
            t3 = time.perf_counter()
            agent.call("DestroySandbox", {"sandboxId": aid})
            if i >= 1:
                api_t.append(t1 - t0)
                agent_c.append(t3 - t2)
        wait_for(lambda: not client.capsules.list(), 120, "API capsules destroyed")
        c_api, c_agent = statistics.median(api_t), statistics.median(agent_c)
        create_ratio = c_api / c_agent
        print(f"\ncreate to running ({args.creates} rounds, 1 warm-up)")
        print(f"  API create + poll     p50 {ms(c_api)}   max {ms(max(api_t))}")
        print(f"  agent CreateSandbox   p50 {ms(c_agent)}   max {ms(max(agent_c))}")
        verdict = "ok" if create_ratio <= CREATE_MAX else "MISSED"
        print(f"  ratio p50 API/agent   {create_ratio:6.2f}x  (target <= {CREATE_MAX}x) {verdict}")
        if create_ratio > CREATE_MAX:
            failures.append("create")

        # 3. GET /v1/capsules throughput, SQLite
        print(f"\nGET /v1/capsules, {LIST_ROWS} rows, loopback load ({load_tool()})")
        db = sqlite3.connect(data / "wrenn.db", timeout=30)
        (team,) = db.execute("SELECT team_id FROM team_api_keys ORDER BY created_at LIMIT 1").fetchone()
        insert_rows(lambda sql, rows: (db.executemany(sql, rows), db.commit()), team)
        db.close()
        rps = list_throughput(base, key, args.duration)
        print(f"  SQLite                {rps:10.0f} req/s")

        # ... and PostgreSQL
        pg_url = os.environ.get("WRENN_TEST_POSTGRES_URL")
        if pg_url:
            pg = start_postgres_server(args.wrenn, data, pg_url)
            insert_rows(pg["exec_many"], pg["team"])
            rps = list_throughput(pg["base"], pg["key"], args.duration)
            print(f"  PostgreSQL            {rps:10.0f} req/s")
        else:
            print("  PostgreSQL            skipped (WRENN_TEST_POSTGRES_URL not set)")
    finally:
        if pg is not None:
            pg["stop"]()
        try:
            from wrenn import WrennClient

            key_file = data / "admin-api-key"
            if key_file.exists() and up.alive():
                with WrennClient(api_key=key_file.read_text().strip(), base_url=base, timeout=60) as c:
                    for cap in c.capsules.list():
                        if cap.status and cap.status.value == "running":
                            c.capsules.destroy(cap.id)
        except Exception as e:  # noqa: BLE001 - best effort
            print(f"api-bench: cleanup: {e}", file=sys.stderr)
        up.stop()
    if failures:
        print(f"\napi-bench: FAILED targets: {', '.join(failures)}")
        return 1
    print("\napi-bench: all targets met")
    return 0


INSERT = (
    "INSERT INTO sandboxes (id, team_id, template, status, vcpus, memory_mb, created_at, last_updated) "
    "VALUES ({p}, {p}, 'minimal', 'paused', 1, 512, {p}, {p})"
)


def insert_rows(exec_many, team: str) -> None:
    """200 `paused` rows without a host: listed, but no reconciler or sampler touches them."""
    now = int(time.time())
    rows = [(str(uuid.uuid4()), team, now - i, now - i) for i in range(LIST_ROWS)]
    exec_many(INSERT.format(p="?"), rows)


def load_tool() -> str:
    return "wrk" if shutil.which("wrk") else "python threads"


def list_throughput(base: str, key: str, duration: int) -> float:
    r = httpx.get(f"{base}/v1/capsules", headers={"X-API-Key": key}, timeout=30)
    r.raise_for_status()
    n = len(r.json())
    if n != LIST_ROWS:
        sys.exit(f"api-bench: GET /v1/capsules returned {n} capsules, want {LIST_ROWS}")
    if shutil.which("wrk"):
        out = subprocess.run(
            ["wrk", "-t2", "-c16", f"-d{duration}s", "-H", f"X-API-Key: {key}", f"{base}/v1/capsules"],
            check=True, capture_output=True, text=True,
        ).stdout
        if "Non-2xx" in out:
            sys.exit(f"api-bench: wrk saw errors:\n{out}")
        return float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
    # Fallback: 8 threads with keep-alive clients.
    count = [0] * 8
    stop = time.monotonic() + duration

    def worker(i: int) -> None:
        with httpx.Client(headers={"X-API-Key": key}, timeout=30) as h:
            while time.monotonic() < stop:
                h.get(f"{base}/v1/capsules").raise_for_status()
                count[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(count) / duration


def start_postgres_server(wrenn: str, data: Path, url: str) -> dict:
    """A control plane without agent on a fresh schema of WRENN_TEST_POSTGRES_URL."""
    schema = "wrenn_bench_" + secrets.token_hex(6)

    def psql(sql: str, *, schema_path: bool = False) -> str:
        env = dict(os.environ)
        if schema_path:
            env["PGOPTIONS"] = f"-c search_path={schema}"
        return subprocess.run(
            ["psql", url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
            check=True, capture_output=True, text=True, env=env,
        ).stdout.strip()

    psql(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    env = dict(os.environ, DATABASE_URL=f"{url}{sep}options=-c%20search_path%3D{schema}")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    pg_dir = data.parent / "api-bench-pg"
    shutil.rmtree(pg_dir, ignore_errors=True)
    server = Proc([wrenn, "server", "--data-dir", str(pg_dir), "--listen", f"127.0.0.1:{port}"],
                  data.parent / "api-bench-pg.log", env)

    def stop() -> None:
        server.stop()
        try:
            psql(f"DROP SCHEMA {schema} CASCADE")
        except subprocess.CalledProcessError as e:
            print(f"api-bench: dropping {schema}: {e.stderr}", file=sys.stderr)
        shutil.rmtree(pg_dir, ignore_errors=True)

    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, "wrenn server on PostgreSQL", server)
        creds = {"email": "bench@example.com", "password": "bench-password-1", "name": "Bench"}
        httpx.post(f"{base}/v1/auth/signup", json=creds, timeout=30).raise_for_status()
        token = httpx.post(f"{base}/v1/auth/login", json=creds, timeout=30).json()["token"]
        r = httpx.post(f"{base}/v1/api-keys", json={"name": "bench"}, timeout=30,
                       headers={"Authorization": f"Bearer {token}"})
        r.raise_for_status()
        team = psql("SELECT team_id FROM team_api_keys LIMIT 1", schema_path=True)

        def exec_many(sql: str, rows: list[tuple]) -> None:
            # Values are uuids, the team's uuid and integers: no quoting issues.
            head = sql.split("VALUES")[0]
            values = ",".join(f"('{r[0]}','{r[1]}','minimal','paused',1,512,{r[2]},{r[3]})" for r in rows)
            psql(f"{head}VALUES {values}", schema_path=True)

        return {"base": base, "key": r.json()["key"], "team": team, "exec_many": exec_many, "stop": stop}
    except BaseException:
        stop()
        raise


if __name__ == "__main__":
    sys.exit(main())
