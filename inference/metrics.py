"""The CPU engine's Prometheus metrics, under vLLM's names and labels so dashboards and alerts work
unchanged over either engine. Metrics vLLM has no equivalent for are prefixed ``custos_engine_``.

Each engine has its own registry (no global state), rendered by the server's ``/metrics``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from .engine import Sequence

# vLLM's buckets, so recording rules and dashboards that assume them line up.
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
TPOT_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
LATENCY_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024)


class EngineMetrics:
    def __init__(self, model_name: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r, labels = self.registry, ["model_name"]

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=r).labels(model_name)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=r).labels(model_name)

        def hist(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=r).labels(model_name)

        self.running = gauge("vllm:num_requests_running", "Number of requests in the running batch.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be scheduled.")
        self.cache_usage = gauge(
            "vllm:kv_cache_usage_perc",
            "Fraction of the batch token budget (max_batch_tokens) in use; 1 means full.",
        )
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        self.ttft = hist("vllm:time_to_first_token_seconds", "Time to first token in seconds.", TTFT_BUCKETS)
        self.tpot = hist(
            "vllm:time_per_output_token_seconds", "Time between output tokens in seconds.", TPOT_BUCKETS
        )
        self.e2e = hist(
            "vllm:e2e_request_latency_seconds", "End to end request latency in seconds.", LATENCY_BUCKETS
        )
        self.queue_time = hist(
            "vllm:request_queue_time_seconds", "Time spent waiting in the queue.", LATENCY_BUCKETS
        )
        self.request_prompt = hist("vllm:request_prompt_tokens", "Prompt tokens per request.", TOKEN_BUCKETS)
        self.request_generation = hist(
            "vllm:request_generation_tokens", "Generated tokens per request.", TOKEN_BUCKETS
        )
        self.iteration_tokens = hist(
            "vllm:iteration_tokens_total", "Tokens processed per engine step.", TOKEN_BUCKETS
        )
        self._success = Counter(
            "vllm:request_success",
            "Finished requests by finish reason.",
            ["model_name", "finished_reason"],
            registry=r,
        )
        for reason in ("stop", "length", "abort"):
            self._success.labels(model_name, reason)
        self._batch_size = Histogram(
            "custos_engine_batch_size",
            "Sequences per batched forward pass.",
            ["model_name", "phase"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self._prefill_batch = self._batch_size.labels(model_name, "prefill")
        self._decode_batch = self._batch_size.labels(model_name, "decode")
        self.model_name = model_name
        # LoRA: vLLM's info gauge (labels name the adapters running and waiting; value: a timestamp).
        self._lora_info = Gauge(
            "vllm:lora_requests_info",
            "Running stats on lora requests.",
            ["running_lora_adapters", "waiting_lora_adapters", "max_lora"],
            registry=r,
        )
        self._lora_loaded = gauge("custos_engine_lora_adapters", "LoRA adapters loaded and taking requests.")
        self._lora_state: tuple[str, str] | None = None
        self.max_loras = 0

    def set_loras(self, names: list[str]) -> None:
        self._lora_loaded.set(len(names))
        self.max_loras = max(self.max_loras, len(names))

    def lora_requests(self, running: set[str | None], waiting: set[str | None]) -> None:
        state = (",".join(sorted(n for n in running if n)), ",".join(sorted(n for n in waiting if n)))
        if state == self._lora_state:
            return
        self._lora_state = state
        self._lora_info.clear()
        self._lora_info.labels(state[0], state[1], str(self.max_loras)).set(time.time())

    def observe_step(self, phase: str, rows: int, tokens: int) -> None:
        (self._prefill_batch if phase == "prefill" else self._decode_batch).observe(rows)
        self.iteration_tokens.observe(tokens)

    def observe_finish(self, seq: Sequence, reason: str, now: float) -> None:
        self._success.labels(self.model_name, reason).inc()
        self.e2e.observe(now - seq.arrival)
        if seq.admitted_at is not None:
            self.request_prompt.observe(len(seq.prompt_ids))
            self.request_generation.observe(len(seq.output_ids))
