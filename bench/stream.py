"""Streaming benchmark: token streams as a GPU serving many users produces them.

One load generator (wrk), one instant upstream (nginx answering every chat completion with the same
vLLM-shaped stream of ``--events`` ``chat.completion.chunk`` events, one token each, then
``[DONE]``), in one run:

  direct           to the upstream
  nginx            nginx as a plain reverse proxy (the ceiling for any proxy on this machine)
  custos           the Custos sidecar with every default stage (redaction, observe, audit, ...)
  custos-noredact  the same sidecar with ``redaction.enabled: false``
  custos-granian   the same sidecar (every default stage) served by granian instead of uvicorn, when
                   granian is installed (``make bench-deps``): the ASGI server chosen by the numbers
  litellm          LiteLLM's proxy (no callbacks, no database), when installed (``make bench-deps``)

At each connection count it prints answers/s, events/s and p50/p99 per answer (wrk measures the
whole answer), and the ratios that matter: Custos against itself without redaction, against nginx
and against LiteLLM. Each sidecar runs one worker: the numbers are per worker.
Reproduce: ``custos bench stream`` (``--events 200 --connections 1,32 --duration 10``); ``--answer
markdown`` streams an answer with headings, lists, code and line breaks instead of prose.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from bench.procs import ManagedProcess, free_port, wait_http
from bench.proxy import (
    MODEL,
    WRK_LUA,
    parse_connections,
    run_wrk,
    sidecar_config,
    sidecar_headers,
    start_instant_upstream,
    start_litellm,
)

PROSE = (
    "Sure. Here is a short overview of the project and what it needs from you this week. The team "
    "moved the launch to Thursday, so the review has to happen before then. In 2024 the same review "
    "took about 3 days, mostly because the notes were spread over several documents. This time, "
    "please keep everything in one place, answer the open questions first, and flag anything that "
    "blocks the release. If something is unclear, ask early rather than late; it saves everyone a "
    "lot of time. Thanks for your help, and have a good week!"
)

# An answer as chat models format them: headings, a bulleted list with bold labels and colons, inline
# code, a numbered list, line breaks (each ``\n`` stands escaped in the event's JSON).
MARKDOWN = """## Summary

The release moves to Thursday. Here is what each team needs to do before then:

- **Backend**: finish the migration and run the load test again.
- **Frontend**: fix the layout bug on the settings page.
- **Docs**: update the install guide for the new version.

### Steps

1. Stop the old service with `systemctl stop app`.
2. Run the migration and check the logs for errors.
3. Start the new service and watch the dashboard for an hour.

If something fails, roll back first and ask questions later. Thanks!

"""
# A tokenizer's pieces: line breaks, words with their leading space, punctuation runs.
_PIECES = re.compile(r"\n+| ?[A-Za-z0-9']+| ?[^\sA-Za-z0-9']+")

REQUEST = json.dumps(
    {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Summarize the plan for the week."}],
        "max_tokens": 256,
        "stream": True,
    },
    separators=(",", ":"),
)

NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  keepalive_requests 1000000;
  proxy_buffering off;
  upstream instant {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{upstream_port};
    root {tmp}/www;
    location = /v1/models {{ default_type application/json;
      return 200 '{{"object":"list","data":[{{"id":"{model}","object":"model","owned_by":"bench"}}]}}'; }}
    # The stream is a static file (sendfile); a POST to it answers 405, turned into the file with 200.
    location = /v1/chat/completions {{ types {{ }} default_type text/event-stream;
      error_page 405 =200 /stream.sse; try_files /stream.sse =404; }}
    location = /stream.sse {{ types {{ }} default_type text/event-stream; }}
  }}
  server {{
    listen 127.0.0.1:{proxy_port};
    location / {{ proxy_pass http://instant; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""


def tokens(n: int, answer: str = "prose") -> list[str]:
    """``n`` tokens of the answer (``prose`` or ``markdown``) as a tokenizer emits them: words with
    their leading space, punctuation (and line breaks)."""
    words: list[str] = []
    if answer == "markdown":
        words = _PIECES.findall(MARKDOWN)
    else:
        for word in PROSE.split(" "):
            core = word.rstrip(".,;!")
            words.append(" " + core)
            if core != word:
                words.append(word[len(core) :])
    return [words[i % len(words)] for i in range(n)]


def stream_body(events: int, answer: str = "prose") -> bytes:
    """A vLLM-shaped answer: the role event, one token per event, the finish event, ``[DONE]``."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1732780800, "model": MODEL}

    def event(delta: dict, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + json.dumps({**base, "choices": [choice]}, separators=(",", ":")).encode() + b"\n\n"

    out = [event({"role": "assistant", "content": ""})]
    out += [event({"content": t}) for t in tokens(events - 2, answer)]
    out.append(event({}, "stop"))
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


@dataclass
class Result:
    target: str
    connections: int
    answers_per_s: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def main(args: argparse.Namespace) -> int:
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"bench stream: {tool} is not installed (apt-get install {tool})", file=sys.stderr)
            return 2
    conns = parse_connections(args.connections)
    tmp = Path(tempfile.mkdtemp(prefix="custos-bench-stream-"))
    procs: list[ManagedProcess] = []
    try:
        sc_port, nr_port = free_port(), free_port()
        (tmp / "www").mkdir()
        (tmp / "www" / "stream.sse").write_bytes(stream_body(args.events, args.answer))
        # nginx workers drop root: they may traverse the private temp dir and read the stream file.
        tmp.chmod(0o711)
        (tmp / "www").chmod(0o755)
        (tmp / "www" / "stream.sse").chmod(0o644)
        instant = start_instant_upstream(tmp, NGINX_CONF)
        procs.append(instant.process)
        upstream = instant.url

        targets = {"direct": upstream, "nginx": instant.proxy_url}
        headers: dict[str, dict[str, str]] = {}
        for name, port, redaction in (("custos", sc_port, True), ("custos-noredact", nr_port, False)):
            cfg = sidecar_config(tmp, upstream, port)
            cfg["state"]["dir"] = str(tmp / f"state-{name}")
            if not redaction:
                cfg["redaction"] = {"enabled": False}
            cfg_path = tmp / f"{name}.yaml"
            cfg_path.write_text(yaml.safe_dump(cfg))
            serve = [sys.executable, "-m", "sidecar.cli", "serve", "--config", str(cfg_path)]
            procs.append(ManagedProcess(name, serve))
            wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
            headers[name] = sidecar_headers(cfg_path)
            targets[name] = f"http://127.0.0.1:{port}"

        if granian_installed():
            # The same app and config as ``custos`` (every default stage), on granian's HTTP server.
            port = free_port()
            cfg = sidecar_config(tmp, upstream, port)
            cfg["state"]["dir"] = str(tmp / "state-granian")
            cfg_path = tmp / "custos-granian.yaml"
            cfg_path.write_text(yaml.safe_dump(cfg))
            serve = [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--loop", "uvloop"]
            serve += ["--workers", "1", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
            serve += ["--log-level", "warning", "sidecar.app:create_app"]
            procs.append(ManagedProcess("custos-granian", serve, env={"CUSTOS_CONFIG": str(cfg_path)}))
            wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
            headers["custos-granian"] = sidecar_headers(cfg_path)
            targets["custos-granian"] = f"http://127.0.0.1:{port}"
        else:
            print("bench stream: granian is not installed; run `make bench-deps` (skipped)", file=sys.stderr)

        litellm = None if args.no_litellm else start_litellm(tmp, upstream)
        if litellm is not None:
            procs.append(litellm.process)
            targets["litellm"] = litellm.url
        elif not args.no_litellm:
            print(
                "bench stream: LiteLLM not found in the cache venv; run `make bench-deps` (skipped)",
                file=sys.stderr,
            )
        litellm_key = litellm.key if litellm is not None else ""

        scripts = {}
        for name in targets:
            auth = ""
            if name in headers:
                auth = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers[name].items())
            elif name == "litellm":
                auth = f'wrk.headers["Authorization"] = "Bearer {litellm_key}"'
            script = tmp / f"{name}.lua"
            script.write_text(WRK_LUA.format(body=json.dumps(REQUEST), auth=auth))
            scripts[name] = script

        results: list[Result] = []
        for c in conns:
            for name, base in targets.items():
                url = base + "/v1/chat/completions"
                run_wrk(url, c, 2, scripts[name])  # warm-up
                rps, p50, p99, errors = run_wrk(url, c, args.duration, scripts[name])
                results.append(Result(name, c, rps, rps * args.events, p50, p99, errors))
                time.sleep(0.5)
        if args.json:
            Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
        print_table(results, args.events, args.answer)
        return 0
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def print_table(results: list[Result], events: int, answer: str = "prose") -> None:
    by = {(r.target, r.connections): r for r in results}
    print(f"\n{events}-event answers ({answer})")
    head = f"{'target':<16} {'conns':>5} {'answers/s':>10} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8}"
    print(f"{head} {'errors':>6}")
    for r in results:
        print(
            f"{r.target:<16} {r.connections:>5} {r.answers_per_s:>10.0f} {r.events_per_s:>10.0f} "
            f"{r.p50_ms:>8.3f} {r.p99_ms:>8.3f} {r.errors:>6}"
        )
    for c in sorted({r.connections for r in results}):
        sc = by.get(("custos", c))
        if sc is None or not sc.events_per_s:
            continue
        for other in ("custos-noredact", "custos-granian", "nginx", "litellm"):
            o = by.get((other, c))
            if o and o.events_per_s:
                p50 = f"{sc.p50_ms / o.p50_ms:.2f}x" if o.p50_ms else "-"
                print(
                    f"custos / {other} at {c} connections: "
                    f"events/s {sc.events_per_s / o.events_per_s:.2f}x, p50 {p50}"
                )
    print()


def granian_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("granian") is not None


if __name__ == "__main__":
    raise SystemExit(os.EX_USAGE)
