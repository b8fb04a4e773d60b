#!/usr/bin/env python3
"""Q2 with the official `openai` Python client: a key limited to 1 request
per minute gets 429 `rate_limited` with `retry-after` on its second call,
and the client waits that long and retries on its own, then succeeds.

Starts the mock upstream and a memory-store gateway from a built binary
(TOLLGATE_BIN, default target/debug/tollgate), sets up a user, a deposit,
a key and its rpm through the API, then calls through the SDK. Takes up to
a minute (the rate window's reset). Not part of `cargo test`.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install openai
    /tmp/venv/bin/python scripts/openai_retry_check.py
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

try:
    import httpx
except ImportError:  # newer `openai` releases ship their own fork
    import httpx2 as httpx
import openai

BIN = os.environ.get("TOLLGATE_BIN", "target/debug/tollgate")
OPERATOR = "operator-check"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base, method, path, body=None, bearer=None, headers=None):
    req = urllib.request.Request(base + path, method=method)
    req.add_header("content-type", "application/json")
    if bearer:
        req.add_header("authorization", "Bearer " + bearer)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(req, data) as r:
        return json.loads(r.read() or b"null")


def wait_up(url):
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/healthz")
            return
        except Exception:
            time.sleep(0.05)
    sys.exit("gateway did not start")


def main():
    mock_port, gw_port, metrics_port = free_port(), free_port(), free_port()
    procs = [subprocess.Popen([BIN, "mock-upstream", "--listen", f"127.0.0.1:{mock_port}"])]
    env = dict(
        os.environ,
        TOLLGATE_LISTEN=f"127.0.0.1:{gw_port}",
        TOLLGATE_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
        TOLLGATE_UPSTREAM_URL=f"http://127.0.0.1:{mock_port}",
        TOLLGATE_OPERATOR_TOKEN=OPERATOR,
        TOLLGATE_PRICING="config/pricing.toml",
        RUST_LOG="warn",
    )
    procs.append(subprocess.Popen([BIN, "serve"], env=env))
    base = f"http://127.0.0.1:{gw_port}"
    try:
        wait_up(base)
        api(base, "POST", "/api/users", {"email": "py@example.com", "password": "password123"})
        token = api(base, "POST", "/api/sessions", {"email": "py@example.com", "password": "password123"})["token"]
        me = api(base, "GET", "/api/me", bearer=token)
        api(base, "POST", "/api/admin/deposits",
            {"user_id": me["id"], "amount": "5", "kind": "stripe"},
            bearer=OPERATOR, headers={"idempotency-key": "py-check"})
        key = api(base, "POST", "/api/keys", {"name": "py"}, bearer=token)
        limits = api(base, "PUT", f"/api/keys/{key['id']}/limits", {"rpm": 1}, bearer=token)
        print("limits:", limits)

        seen = []

        def log(response):
            h = response.headers
            seen.append(response.status_code)
            print(f"{time.strftime('%H:%M:%S')} {response.status_code} "
                  f"retry-after={h.get('retry-after')} "
                  f"limit={h.get('x-ratelimit-limit-requests')} "
                  f"remaining={h.get('x-ratelimit-remaining-requests')} "
                  f"reset={h.get('x-ratelimit-reset-requests')}")

        client = openai.OpenAI(base_url=base + "/v1", api_key=key["key"], max_retries=2,
                               http_client=httpx.Client(event_hooks={"response": [log]}))
        for i in range(2):
            started = time.monotonic()
            r = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
            print(f"call {i + 1}: ok after {time.monotonic() - started:.1f}s, "
                  f"usage {r.usage.prompt_tokens}+{r.usage.completion_tokens}")
        assert seen[0] == 200 and 429 in seen and seen[-1] == 200, seen
        print("openai", openai.__version__, "retried the 429 after retry-after:", seen)
    finally:
        for p in procs:
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()
