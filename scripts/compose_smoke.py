"""Drives the compose stack through its balancer: both protocol eras, state shared by the
replicas, and one replica stopped and started under continuous load with no failed call
and no call slower than one second. First, the requestState key ring: drawn for this
stack, the same for every replica (it is never printed).

    python3 scripts/compose_smoke.py http://127.0.0.1:PORT/mcp "docker compose -p NAME"

Standard library only. Every loop is bounded in count and time.
"""

import base64
import json
import subprocess
import sys
import threading
import time
import urllib.request

URL = sys.argv[1]
COMPOSE = sys.argv[2].split()
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "compose-smoke", "version": "1"},
}


def post(body, headers=None, timeout=10):
    """POSTs a JSON-RPC body; returns (status, headers, the JSON-RPC message)."""
    request = urllib.request.Request(URL, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json, text/event-stream")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read().decode()
        message = None
        for line in reversed(text.splitlines()):
            if line.startswith("data:") and line[5:].strip():
                message = json.loads(line[5:])
                break
        if message is None and text.strip():
            message = json.loads(text)
        return response.status, response.headers, message


def call_2026(tool, arguments):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": META}}
    headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call",
               "Mcp-Name": tool}
    _, _, message = post(body, headers)
    result = message.get("result")
    if result is None or result.get("isError"):
        raise RuntimeError(f"{tool} failed: {message}")
    return result["structuredContent"]


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def key_ring():
    """The key ring every replica reads (mrtr.keys_file): the same, drawn for this stack."""
    rings = set()
    for replica in ("replica-1", "replica-2", "replica-3"):
        read = subprocess.run(COMPOSE + ["exec", "-T", replica, "cat", "/run/stateful-mcp/mrtr-keys"],
                              check=True, capture_output=True, text=True)
        rings.add(read.stdout.strip())
    check(len(rings) == 1, "every replica reads the same requestState key ring")
    key_id, _, secret = next(iter(rings)).partition(":")
    check(key_id == "stack" and len(base64.b64decode(secret)) == 32,
          "the key ring is one key of 32 bytes drawn for this stack")


def eras():
    handle = call_2026("session_create", {})["session_id"]
    values = [call_2026("counter", {"operation": "increment", "session_id": handle})["value"]
              for _ in range(6)]
    check(values == [1, 2, 3, 4, 5, 6], f"2026-07-28 handle shared by the replicas: {values}")

    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "compose-smoke", "version": "1"}}}
    status, headers, _ = post(init)
    session = headers["Mcp-Session-Id"]
    legacy = {"Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    status, _, _ = post({"jsonrpc": "2.0", "method": "notifications/initialized"}, legacy)
    check(status == 202, "2025-11-25 session initialized")
    values = []
    for i in range(6):
        body = {"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": {
            "name": "counter", "arguments": {"operation": "increment"}}}
        _, _, message = post(body, legacy)
        values.append(message["result"]["structuredContent"]["value"])
    check(values == [1, 2, 3, 4, 5, 6], f"2025-11-25 session on every replica: {values}")


def failover():
    """Four workers increment their own handles while replica-2 stops and starts."""
    stop = threading.Event()
    stats = []
    lock = threading.Lock()

    def worker():
        handle = call_2026("session_create", {})["session_id"]
        ok, failed, slowest = 0, [], 0.0
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                call_2026("counter", {"operation": "increment", "session_id": handle})
                ok += 1
            except Exception as error:  # noqa: BLE001 - every failure is reported
                failed.append(repr(error))
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.01)
        final = call_2026("counter", {"operation": "get", "session_id": handle})["value"]
        with lock:
            stats.append((ok, failed, slowest, final))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    for action in ("stop", "start"):
        began = time.monotonic()
        subprocess.run(COMPOSE + [action, "replica-2"], check=True, capture_output=True)
        print(f"docker compose {action} replica-2: {time.monotonic() - began:.1f} s")
        time.sleep(6)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    calls = sum(s[0] for s in stats)
    failures = [f for s in stats for f in s[1]]
    slowest = max(s[2] for s in stats)
    print(f"{calls} calls during the failover, {len(failures)} failed, slowest {slowest * 1000:.0f} ms")
    check(len(stats) == 4, "every worker finished")
    check(not failures, f"no failed call: {failures[:3]}")
    check(slowest < 1.0, f"no call slower than 1 s (slowest {slowest * 1000:.0f} ms)")
    check(all(s[0] == s[3] for s in stats), "each counter equals its successful calls")


key_ring()
eras()
failover()
