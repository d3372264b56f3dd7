#!/usr/bin/env bash
# Pause/resume stress for one capsule through a running `wrenn agent` (Connect JSON over curl):
# N cycles of pause → resume → exec, with a counter process inside that must keep counting.
# Prints one line per cycle and a summary; a failed resume keeps the capsule's checkpoint image
# (copied to $KEEP/<cycle>) so it can be restored again for diagnosis. Exits 1 on any failure.
#
#   AGENT=http://127.0.0.1:50051   the agent
#   CYCLES=100                     pause/resume cycles
#   DATA=DIR                       the agent's data dir (to copy failing images from)
#   KEEP=DIR                       where failing images go (default: $DATA/stress-failures)
#   LOAD=0                         busy loops on the host while cycling (CPU contention)
#   PROBE=FILE                     a static binary copied into the capsule and run in the
#                                  background (output in /tmp/probe.log); its death fails the run
set -uo pipefail
agent=${AGENT:-http://127.0.0.1:50051}
cycles=${CYCLES:-100}
data=${DATA:?DATA=the agent data dir}
keep=${KEEP:-$data/stress-failures}
load=${LOAD:-0}
svc=$agent/hostagent.v1.HostAgentService

rpc() { # rpc NAME JSON → body on stdout; non-zero on a Connect error
    local out code
    out=$(curl -sS -m 120 -w '\n%{http_code}' -H 'Content-Type: application/json' -d "$2" "$svc/$1")
    code=${out##*$'\n'}
    printf '%s\n' "${out%$'\n'*}"
    [ "$code" = 200 ]
}

id=cl-$(head -c 4096 /dev/urandom | tr -dc 'a-z0-9' | head -c 25)
rpc CreateSandbox "{\"sandbox_id\":\"$id\",\"template\":\"minimal\",\"vcpus\":2,\"memory_mb\":512}" >/dev/null \
    || { echo "create failed" >&2; exit 2; }
trap 'rpc DestroySandbox "{\"sandbox_id\":\"$id\"}" >/dev/null; kill $(jobs -p) 2>/dev/null' EXIT
rpc Exec "{\"sandbox_id\":\"$id\",\"cmd\":\"/bin/sh\",\"args\":[\"-c\",\"nohup sh -c 'i=0; while :; do i=\$((i+1)); echo \$i > /tmp/count.t; mv /tmp/count.t /tmp/count; sleep 0.05; done' >/dev/null 2>&1 &\"]}" >/dev/null \
    || { echo "starting the counter failed" >&2; exit 2; }
probe=${PROBE:-}
if [ -n "$probe" ]; then
    python3 -c 'import base64,json,sys; print(json.dumps({"sandbox_id":sys.argv[1],"path":"/tmp/probe","content":base64.b64encode(open(sys.argv[2],"rb").read()).decode()}))' \
        "$id" "$probe" > "$data/.probe.json"
    rpc WriteFile @"$data/.probe.json" >/dev/null || { echo "copying the probe failed" >&2; exit 2; }
    rpc Exec "{\"sandbox_id\":\"$id\",\"cmd\":\"/bin/sh\",\"args\":[\"-c\",\"chmod +x /tmp/probe; nohup sh -c '/tmp/probe > /tmp/probe.log 2>&1; echo exited \$? >> /tmp/probe.log' >/dev/null 2>&1 &\"]}" >/dev/null \
        || { echo "starting the probe failed" >&2; exit 2; }
fi
for _ in $(seq "$load"); do (while :; do :; done) & done

failures=0
last=0
for cycle in $(seq "$cycles"); do
    t0=$(date +%s.%N)
    if ! err=$(rpc PauseSandbox "{\"sandbox_id\":\"$id\"}"); then
        echo "cycle $cycle: pause failed: $err"
        failures=$((failures + 1))
        break
    fi
    t1=$(date +%s.%N)
    if ! err=$(rpc ResumeSandbox "{\"sandbox_id\":\"$id\"}"); then
        echo "cycle $cycle: resume failed: $err"
        failures=$((failures + 1))
        mkdir -p "$keep/$cycle" && cp -a "$data/snapshots/$id/image/." "$keep/$cycle/" \
            && echo "  image kept in $keep/$cycle"
        break
    fi
    t2=$(date +%s.%N)
    out=$(rpc Exec "{\"sandbox_id\":\"$id\",\"cmd\":\"/bin/cat\",\"args\":[\"/tmp/count\"]}")
    count=$(printf '%s' "$out" | sed -n 's/.*"stdout":"\([^"]*\)".*/\1/p' | base64 -d 2>/dev/null | tr -dc 0-9)
    if [ -z "$count" ] || [ "$count" -lt "$last" ]; then
        echo "cycle $cycle: counter went from $last to '${count}' ($out)"
        failures=$((failures + 1))
        break
    fi
    last=$count
    if [ -n "$probe" ]; then
        out=$(rpc Exec "{\"sandbox_id\":\"$id\",\"cmd\":\"/bin/sh\",\"args\":[\"-c\",\"tail -n 2 /tmp/probe.log\"]}")
        tail=$(printf '%s' "$out" | sed -n 's/.*"stdout":"\([^"]*\)".*/\1/p' | base64 -d 2>/dev/null)
        probe_state="probe: $(printf '%s' "$tail" | tail -n 1)"
        if printf '%s' "$tail" | grep -q "exited\|CORRUPT"; then
            echo "cycle $cycle: the probe died: $tail"
            failures=$((failures + 1))
            break
        fi
    fi
    printf "cycle %d: pause %.0f ms, resume %.0f ms, count %s %s\n" "$cycle" \
        "$(echo "($t1 - $t0) * 1000" | bc)" "$(echo "($t2 - $t1) * 1000" | bc)" "$count" "${probe_state:-}"
done
echo "pause-stress: $failures failure(s) in $cycle cycle(s), capsule $id"
[ "$failures" = 0 ]
