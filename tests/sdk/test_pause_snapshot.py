"""Pause / resume / connect and snapshot templates through the SDK (spec §B.2 pause/resume,
§B.4, §H, §K 19, 20, 22). One capsule for the module (its lifecycle is changed here)."""

from __future__ import annotations

import re
import time

import pytest
from wrenn import (
    Capsule,
    WrennConflictError,
    WrennForbiddenError,
    WrennNotFoundError,
)
from wrenn.models import Status, Template

from helpers import (
    TEMPLATE,
    assert_aware,
    boot_capsule,
    destroy_quietly,
    rand_name,
    status_of,
    wait_until,
)

COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 1; done"


@pytest.fixture(scope="module")
def pcap(server):
    c = boot_capsule()
    try:
        yield c
    finally:
        destroy_quietly(c)


def counter(c) -> int:
    out = c.commands.run("cat /tmp/counter 2>/dev/null || echo 0").stdout.strip()
    return int(out or 0)


def ensure_running(c) -> Capsule:
    """Whatever state a snapshot left the source in ([R] paused, [N] running: §B.4)."""
    return Capsule.connect(c.capsule_id)


@pytest.mark.timeout(180)
def test_pause_refuses_work_then_resume_keeps_state(client, pcap):
    pcap.files.write("/srv/state.txt", "before-pause")
    h = pcap.commands.run(COUNTER, background=True, tag="counter")
    wait_until(lambda: counter(pcap) >= 2, 15, what="counter to start")

    info = pcap.pause(wait=True)  # 200 paused [R] or 202 pausing → poll (§B.2)
    assert info.status == Status.paused
    assert client.capsules.get(pcap.capsule_id).status == Status.paused
    assert pcap.capsule_id in [c.id for c in client.capsules.list()]  # paused is listed

    # §K.19: work on a paused capsule → 409 invalid_state.
    with pytest.raises(WrennConflictError) as ei:
        pcap.commands.run("echo nope")
    assert ei.value.code == "invalid_state" and ei.value.status_code == 409
    with pytest.raises(WrennConflictError):
        pcap.files.read("/srv/state.txt")
    with pytest.raises(WrennConflictError):
        pcap.commands.list()
    with pytest.raises(WrennConflictError):
        pcap.ping()
    # Metrics of a paused capsule come from the stored points (§B.2 metrics).
    m = client.capsules.metrics(pcap.capsule_id)
    assert isinstance(m.points, list)

    info = pcap.resume(wait=True)
    assert info.status == Status.running
    assert pcap.is_running()
    assert pcap.files.read("/srv/state.txt") == "before-pause"
    c_before = counter(pcap)
    time.sleep(3)
    assert counter(pcap) > c_before, "background process did not continue after resume"
    assert h.pid in [p.pid for p in pcap.commands.list()]


@pytest.mark.timeout(180)
def test_connect_resumes_a_paused_capsule(client, pcap):
    Capsule.pause(pcap.capsule_id, wait=True)  # the static form of pause (dual method)
    assert status_of(client, pcap.capsule_id) == "paused"
    t0 = time.monotonic()
    c = Capsule.connect(pcap.capsule_id)  # §K.20: resumes and returns when running
    try:
        assert time.monotonic() - t0 < 35
        assert c.capsule_id == pcap.capsule_id
        assert client.capsules.get(pcap.capsule_id).status == Status.running
        assert c.commands.run("cat /srv/state.txt").stdout == "before-pause"
    finally:
        c._client.close()
    # Connecting to a running capsule changes nothing.
    c = Capsule.connect(pcap.capsule_id)
    assert c.is_running()
    c._client.close()


@pytest.mark.timeout(240)
def test_snapshot_create_list_clone_delete(client, other_client, pcap):
    pcap.files.write("/srv/snap.txt", "before-snapshot")
    name = rand_name("snap")
    t = pcap.create_snapshot(name=name)  # §K.22
    assert isinstance(t, Template)
    assert t.name == name
    assert t.type.value == "snapshot"
    assert t.platform is False
    assert not t.protected
    assert isinstance(t.size_bytes, int) and t.size_bytes >= 0
    assert_aware(t.created_at, "created_at")
    src = ensure_running(pcap)
    try:
        assert src.commands.run("cat /srv/snap.txt").stdout == "before-snapshot"
    finally:
        src._client.close()

    snaps = client.snapshots.list(type="snapshot")
    assert name in [s.name for s in snaps]
    assert all(s.type.value == "snapshot" for s in snaps)
    bases = {s.name: s for s in client.snapshots.list(type="base")}
    assert TEMPLATE in bases and bases[TEMPLATE].platform is True
    assert all(s.type.value == "base" for s in bases.values())
    assert {name, TEMPLATE} <= {s.name for s in client.snapshots.list()}

    with pytest.raises(WrennConflictError):
        pcap.create_snapshot(name=name)  # names are taken once (§B.4)

    # Another team neither sees nor boots it (§J: team scoping).
    assert name not in [s.name for s in other_client.snapshots.list()]
    with pytest.raises(WrennNotFoundError):
        other_client.capsules.create(template=name)
    with pytest.raises(WrennNotFoundError):
        other_client.snapshots.delete(name)

    clone = boot_capsule(template=name)
    try:
        assert clone.capsule_id != pcap.capsule_id
        got = client.capsules.get(clone.capsule_id)
        assert got.template == name and got.status == Status.running
        assert clone.files.read("/srv/snap.txt") == "before-snapshot"
        # Memory state is restored: the counter process from before the snapshot runs on (§H).
        assert "counter" in [p.tag for p in clone.commands.list()]
        n = counter(clone)
        time.sleep(2.5)
        assert counter(clone) > n
    finally:
        destroy_quietly(clone)

    assert client.snapshots.delete(name) is None
    assert name not in [s.name for s in client.snapshots.list()]
    with pytest.raises(WrennNotFoundError):
        client.snapshots.delete(name)
    with pytest.raises(WrennNotFoundError):
        client.capsules.create(template=name)


@pytest.mark.timeout(180)
def test_snapshot_of_paused_capsule_gets_default_name(client, pcap):
    Capsule.pause(pcap.capsule_id, wait=True)
    t = client.snapshots.create(pcap.capsule_id)  # a paused source is fine (§B.4)
    try:
        assert re.fullmatch(r"template-[0-9a-f]{8}", t.name), t.name  # default name (§F.1)
        assert t.type.value == "snapshot"
        assert client.capsules.get(pcap.capsule_id).status in (Status.paused, Status.running)
    finally:
        client.snapshots.delete(t.name)
    ensure_running(pcap)._client.close()


def test_protected_template_cannot_be_deleted(client):
    with pytest.raises(WrennForbiddenError) as ei:
        client.snapshots.delete(TEMPLATE)  # built-in base template (§B.4)
    assert ei.value.status_code == 403
    base = {s.name: s for s in client.snapshots.list()}[TEMPLATE]
    assert base.protected is True and base.type.value == "base"
