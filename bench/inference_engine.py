"""CPU engine throughput: generated tokens/s with one request at a time vs 8 concurrent (dynamic batching).

Starts a real `custos inference serve` with the tiny model (or --model DIR) on a free loopback port,
warms it up, then in one run measures
  (a) sequential: ``--requests`` requests one after another (batch size 1), and
  (b) concurrent: the same number of requests, ``--concurrency`` in flight at once,
and prints tokens/s for each, the ratio (b)/(a), and the mean decode batch size the engine reported.
For reference it also times Hugging Face ``model.generate()`` in-process (no server, no HTTP) on the
same model: (c) one request at a time and (d) all ``--concurrency`` prompts as one static batch.

    ~/.cache/custos/venv/bin/python bench/inference_engine.py [--model DIR] [--requests 16]
        [--concurrency 8] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"engine exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("engine did not start in time")


def decode_stats(url: str) -> tuple[float, float]:
    """(sum of decode batch sizes, number of decode passes) from the engine's /metrics."""
    text = httpx.get(url + "/metrics").text
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("phase") != "decode":
                continue
            if s.name == "custos_engine_batch_size_sum":
                total = s.value
            elif s.name == "custos_engine_batch_size_count":
                count = s.value
    return total, count


async def one(client: httpx.AsyncClient, i: int, max_tokens: int) -> int:
    body = {
        "prompt": f"Request {i}: summarise the quarterly report",
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0,
    }
    r = await client.post("/v1/completions", json=body)
    r.raise_for_status()
    return int(r.json()["usage"]["completion_tokens"])


async def run(url: str, requests: int, concurrency: int, max_tokens: int) -> tuple[float, int, float]:
    """(seconds, tokens, mean decode batch size) for ``requests`` requests, ``concurrency`` at a time."""
    sem = asyncio.Semaphore(concurrency)
    s0, c0 = decode_stats(url)

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def limited(i: int) -> int:
            async with sem:
                return await one(client, i, max_tokens)

        start = time.perf_counter()
        tokens = sum(await asyncio.gather(*(limited(i) for i in range(requests))))
        elapsed = time.perf_counter() - start
    s1, c1 = decode_stats(url)
    return elapsed, tokens, (s1 - s0) / max(c1 - c0, 1)


def hf_generate(
    model_dir: Path, requests: int, batch: int, max_tokens: int, threads: int
) -> tuple[float, int]:
    """(seconds, tokens) for ``requests`` greedy generations with transformers' own generate()."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
    prompts = [f"Request {i}: summarise the quarterly report" for i in range(requests)]
    kwargs = {
        "max_new_tokens": max_tokens,
        "min_new_tokens": max_tokens,
        "do_sample": False,
        "pad_token_id": tok.pad_token_id,
    }
    with torch.inference_mode():
        model.generate(
            **tok(prompts[:2], return_tensors="pt", padding=True),
            **{**kwargs, "max_new_tokens": 8, "min_new_tokens": 8},
        )
        start = time.perf_counter()
        tokens = 0
        for i in range(0, requests, batch):
            inputs = tok(prompts[i : i + batch], return_tensors="pt", padding=True)
            out = model.generate(**inputs, **kwargs)
            tokens += (out.shape[1] - inputs["input_ids"].shape[1]) * out.shape[0]
        return time.perf_counter() - start, tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="local model directory (default: the cached tiny model)")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, help="torch CPU threads in the engine")
    args = ap.parse_args()

    port = free_port()
    cmd = [sys.executable, "-m", "sidecar.cli", "inference", "serve", "--port", str(port)]
    if args.model:
        cmd += ["--model", args.model]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    log = tempfile.NamedTemporaryFile(prefix="custos-bench-engine-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        asyncio.run(run(url, 4, 4, 16))  # warm-up: first forward passes, allocator, tokenizer caches
        seq_s, seq_tok, seq_batch = asyncio.run(run(url, args.requests, 1, args.max_tokens))
        con_s, con_tok, con_batch = asyncio.run(run(url, args.requests, args.concurrency, args.max_tokens))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    model_dir = Path(args.model) if args.model else None
    if model_dir is None:
        sys.path.insert(0, str(REPO))
        from inference.tiny import default_tiny_model_dir

        model_dir = default_tiny_model_dir()
    threads = args.threads or 1
    hf1_s, hf1_tok = hf_generate(model_dir, args.requests, 1, args.max_tokens, threads)
    hfb_s, hfb_tok = hf_generate(model_dir, args.requests, args.concurrency, args.max_tokens, threads)
    seq_rate, con_rate = seq_tok / seq_s, con_tok / con_s
    print(
        f"CPU engine, {args.requests} requests x {args.max_tokens} tokens, model {args.model or 'tiny'}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'mode':<16}{'seconds':>10}{'tokens':>10}{'tokens/s':>12}{'mean batch':>12}")
    print(f"{'sequential (1)':<16}{seq_s:>10.2f}{seq_tok:>10}{seq_rate:>12.0f}{seq_batch:>12.2f}")
    label = f"concurrent ({args.concurrency})"
    print(f"{label:<16}{con_s:>10.2f}{con_tok:>10}{con_rate:>12.0f}{con_batch:>12.2f}")
    print(f"{'HF generate (1)':<16}{hf1_s:>10.2f}{hf1_tok:>10}{hf1_tok / hf1_s:>12.0f}{1:>12.2f}")
    print(
        f"{f'HF generate ({args.concurrency})':<16}{hfb_s:>10.2f}{hfb_tok:>10}{hfb_tok / hfb_s:>12.0f}"
        f"{args.concurrency:>12.2f}"
    )
    print(f"throughput ratio concurrent/sequential: {con_rate / seq_rate:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
