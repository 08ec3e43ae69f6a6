"""The CPU engine's core: a scheduler thread that batches requests dynamically under a token budget.

Requests arrive from the event loop as ``Sequence`` objects (one per choice). One scheduler thread
owns the model: every iteration it either prefills newly admitted sequences (one left-padded batched
forward pass) and merges their KV cache into the running batch, or decodes one token for every running
sequence in a single batched forward pass. Admission is first come, first served while the running
sequences' tokens (prompt + generated so far) plus the newcomer's prompt stay within
``max_batch_tokens`` and the batch within ``max_batch_size``; a lone request over the budget still
runs (alone), so nothing starves.

Tokens go back to the event loop once per step (one ``call_soon_threadsafe`` for the whole batch).
A sequence whose client went away is aborted: its row leaves the batch (and its KV cache rows are
freed) before the next forward pass.

LoRA adapters (peft) are served beside the base model: each sequence names its adapter (or none), and
one batch mixes rows of any adapters and the base model (peft's mixed-adapter batches: every LoRA
layer adds each adapter's delta to its own rows only). Adapters are loaded and unloaded on the
scheduler thread between two forward passes; an unloaded adapter stops taking requests at once and
leaves the model when its last running request finishes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .metrics import EngineMetrics
from .sampling import SamplingParams, adjust_logits, sample_row

log = logging.getLogger("custos.inference.engine")

STATS_INTERVAL_S = 10.0


TokenLogprob = tuple[int, float, list[tuple[int, float]]]


@dataclass(slots=True)
class Delta:
    """New output of one sequence, delivered to its request's queue."""

    index: int
    text: str
    completion_tokens: int
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    # Per token since the previous delta: (token id, logprob, [(alternative id, logprob), ...]).
    logprobs: list[TokenLogprob] | None = None


@dataclass(slots=True)
class Failure:
    message: str


class RequestSink:
    """Where a request's sequences deliver their output: an asyncio queue on the server's loop."""

    __slots__ = ("loop", "queue")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Delta | Failure] = asyncio.Queue()


@dataclass(eq=False)
class Sequence:
    index: int
    prompt_ids: list[int]
    params: SamplingParams
    sink: RequestSink
    arrival: float = field(default_factory=time.perf_counter)
    output_ids: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None
    aborted: bool = False
    finished: bool = False
    # Incremental detokenization (prefix/read offsets into prompt + output, as vLLM and TGI do it).
    text: str = ""
    sent: int = 0
    prefix_offset: int = 0
    read_offset: int = 0
    first_token_at: float | None = None
    last_token_at: float | None = None
    admitted_at: float | None = None
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)
    adapter: str | None = None  # the LoRA adapter this sequence runs with; None: the base model

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)


class EngineError(RuntimeError):
    pass


class AdapterError(ValueError):
    """A LoRA adapter cannot be loaded or unloaded (bad name or directory, already loaded, unknown)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch


def check_adapter_dir(path: Path) -> dict[str, Any]:
    """The adapter_config.json of a local LoRA adapter directory, or AdapterError saying what is wrong."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise AdapterError(f"The LoRA adapter directory {str(path)!r} does not exist.", 404)
    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except FileNotFoundError:
        raise AdapterError(
            f"{str(path)!r} is not a peft adapter directory (no adapter_config.json)."
        ) from None
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{str(path)!r}: cannot read adapter_config.json: {exc}") from None
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{str(path)!r} is not a LoRA adapter (peft_type {config.get('peft_type')!r}).")
    return config


def load_model(model_dir: Path, device: str, dtype: str) -> tuple[Any, Any, torch.device]:
    """Model and tokenizer from a local directory only; never a hub download."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise EngineError("inference.device is cuda but no CUDA device is available")
    if dtype == "auto":
        torch_dtype: Any = torch.float32 if device == "cpu" else "auto"
    else:
        torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch_dtype)
    model = model.to(device).eval()
    return model, tokenizer, torch.device(device)


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


class Batch:
    """The running sequences and their shared KV cache (left-padded to a common length)."""

    def __init__(self) -> None:
        self.rows: list[Sequence] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # [rows, cached positions], 1 = real token
        self.next_ids: torch.Tensor | None = None  # [rows, 1], the token each row feeds next

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def tokens(self) -> int:
        return sum(s.num_tokens for s in self.rows)


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class Engine:
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: torch.device,
        *,
        model_name: str,
        max_batch_tokens: int = 4096,
        max_batch_size: int = 16,
        max_model_len: int | None = None,
        max_waiting: int = 1024,
        metrics: EngineMetrics | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.model_name = model_name
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_waiting = max_waiting
        model_len = getattr(model.config.get_text_config(), "max_position_embeddings", None) or 2048
        self.max_model_len = min(max_model_len, model_len) if max_model_len else model_len
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids or {0})
        )
        self.metrics = metrics or EngineMetrics(model_name)
        # LoRA: the peft wrapper (None until the first adapter), adapters by name -> directory.
        self._peft: Any = None
        self.adapters: dict[str, Path] = {}
        self._unloading: set[str] = set()
        self._control: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        # transformers 5 names the cache argument ``cache``; 4.x called it ``past_key_values``.
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep_arg = "logits_to_keep" in params
        self._mergeable: bool | None = None  # known after the first prefill
        self._cond = threading.Condition()
        self._waiting: deque[Sequence] = deque()
        self._batch = Batch()
        self._stopping = False
        self._outbox: list[tuple[RequestSink, Delta | Failure]] = []
        # Output handed to each event loop but not yet drained by it. One wake-up per loop is in
        # flight at a time: every wake-up costs a GIL hand-off, which on a busy machine costs a
        # scheduling delay, so a loop that is behind gets everything in one go instead of N wake-ups.
        self._handoff_lock = threading.Lock()
        self._handoff: dict[asyncio.AbstractEventLoop, list[tuple[RequestSink, Delta | Failure]]] = {}
        self._thread = threading.Thread(target=self._run, name="custos-engine", daemon=True)
        self.failed: str | None = None
        self._stats_at = time.monotonic()
        self._stats_prompt = self._stats_generated = 0
        self._prompt_total = self._generated_total = 0  # scheduler thread only

    # ---- event-loop side -------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.failed is None

    def queue_full(self) -> bool:
        return len(self._waiting) >= self.max_waiting

    def submit(self, sequences: list[Sequence]) -> None:
        for seq in sequences:
            if seq.params.seed is not None:
                seq.generator = torch.Generator(device=self.device).manual_seed(seq.params.seed + seq.index)
            tail = max(len(seq.prompt_ids) - 5, 0)
            seq.prefix_offset, seq.read_offset = tail, len(seq.prompt_ids)
        with self._cond:
            self._waiting.extend(sequences)
            self.metrics.waiting.set(len(self._waiting))
            self._cond.notify_all()

    def abort(self, sequences: list[Sequence]) -> None:
        """The client went away: the scheduler drops these before its next forward pass."""
        with self._cond:
            for seq in sequences:
                seq.aborted = True
                if not seq.finished and seq.admitted_at is None and seq in self._waiting:
                    # Never admitted: leave the queue now (no forward pass involved, so no race).
                    self._waiting.remove(seq)
                    self._finish(seq, "abort")
            self.metrics.waiting.set(len(self._waiting))
            self._cond.notify_all()

    # ---- LoRA adapters -----------------------------------------------------------------------
    def servable_adapters(self) -> list[str]:
        """Adapters that take requests now (loaded, not being unloaded), in load order."""
        names, unloading = list(self.adapters), set(self._unloading)  # snapshots: another thread edits them
        return [name for name in names if name not in unloading]

    def resolve_model(self, name: str | None) -> str | None:
        """None for the base model, the adapter's name for an adapter; KeyError for anything else."""
        if name is None or name == self.model_name:
            return None
        if name in self.adapters and name not in self._unloading:
            return name
        raise KeyError(name)

    def load_adapter_now(self, name: str, path: Path) -> None:
        """Load an adapter on the calling thread: only before ``start()`` (or on the scheduler thread)."""
        self._check_new_adapter(name)
        check_adapter_dir(path)
        import warnings

        from peft import PeftModel

        # peft asks transformers a deprecated question (is_gradient_checkpointing); not the user's concern.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        path = Path(path).expanduser()
        with torch.inference_mode(False), torch.no_grad():
            try:
                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
                else:
                    self._peft.load_adapter(str(path), adapter_name=name)
            except Exception as exc:
                if self._peft is not None and name in getattr(self._peft, "peft_config", {}):
                    try:
                        self._peft.delete_adapter(name)
                    except Exception:  # best effort: a half-loaded adapter is never selected anyway
                        pass
                raise AdapterError(
                    f"Cannot load the LoRA adapter {name!r}: {type(exc).__name__}: {exc}"
                ) from None
            self._peft.to(self.device)
            self._peft.eval()
        self.adapters[name] = path
        self.metrics.set_loras(self.servable_adapters())
        log.info("LoRA adapter %r loaded from %s", name, path)

    def _check_new_adapter(self, name: str) -> None:
        if not name or "=" in name or any(c.isspace() for c in name) or name == BASE_ADAPTER:
            raise AdapterError(f"The LoRA adapter name {name!r} is not valid.")
        if name == self.model_name:
            raise AdapterError(f"The LoRA adapter name {name!r} is the base model's name.")
        if name in self.adapters:
            state = "is being unloaded" if name in self._unloading else "has already been loaded"
            raise AdapterError(f"The lora adapter '{name}' {state}.")

    async def load_adapter(self, name: str, path: Path) -> None:
        """Load an adapter between two forward passes (on the scheduler thread); AdapterError if not."""
        self._check_new_adapter(name)
        check_adapter_dir(path)
        await self._on_scheduler(lambda: self.load_adapter_now(name, path))

    async def unload_adapter(self, name: str) -> None:
        """Stop taking requests for ``name`` now; it leaves the model once its running requests end."""
        if name not in self.adapters or name in self._unloading:
            raise AdapterError(f"The lora adapter '{name}' cannot be found.", 404)
        with self._cond:
            self._unloading.add(name)
            self.metrics.set_loras(self.servable_adapters())
            self._cond.notify_all()
        log.info("LoRA adapter %r unloading", name)

    async def _on_scheduler(self, task: Callable[[], Any]) -> Any:
        future: concurrent.futures.Future = concurrent.futures.Future()
        if not self._thread.is_alive():
            self._run_control(task, future)
        else:
            with self._cond:
                self._control.append((task, future))
                self._cond.notify_all()
        return await asyncio.wrap_future(future)

    async def mean_hidden_state(self, prompt_ids: list[int], adapter: str | None) -> list[float]:
        """The mean of the last hidden layer over the prompt's tokens (the pooling routes' vector).

        The forward pass runs on the scheduler thread between two generation steps, so the model is
        never used from two threads at once and the event loop only waits. KeyError: ``adapter`` was
        unloaded meanwhile; EngineError: the engine stopped before the pass ran.
        """
        return await self._on_scheduler(lambda: self._mean_hidden_state(prompt_ids, adapter))

    def _mean_hidden_state(self, prompt_ids: list[int], adapter: str | None) -> list[float]:
        if adapter is not None and adapter not in self.adapters:
            raise KeyError(adapter)
        kwargs: dict[str, Any] = {
            "input_ids": torch.tensor([prompt_ids], dtype=torch.long, device=self.device),
            "output_hidden_states": True,
            "use_cache": False,
        }
        if self._keep_arg:  # the logits are not wanted: compute one position instead of all
            kwargs["logits_to_keep"] = 1
        with torch.inference_mode():
            out = self._call_model([adapter], kwargs)
        return out.hidden_states[-1][0].float().mean(dim=0).tolist()

    def _fail_control(self, message: str) -> None:
        """Control tasks still queued when the scheduler stops: their callers get an EngineError."""
        with self._cond:
            control = list(self._control)
            self._control.clear()
        for _, future in control:
            if future.set_running_or_notify_cancel():
                future.set_exception(EngineError(message))

    @staticmethod
    def _run_control(task: Callable[[], Any], future: concurrent.futures.Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(task())
        except BaseException as exc:  # delivered to the caller, never kills the scheduler
            future.set_exception(exc)

    def _release_unloaded(self) -> None:
        """Delete unloaded adapters no sequence uses any more (scheduler thread, lock held)."""
        in_use = {s.adapter for s in self._batch.rows} | {s.adapter for s in self._waiting}
        for name in list(self._unloading):
            if name in in_use:
                continue
            self._unloading.discard(name)
            self.adapters.pop(name, None)
            if self._peft is not None:
                if self.adapters:
                    self._peft.delete_adapter(name)
                else:  # the last one: peft cannot run without an adapter, so take the LoRA layers out
                    self.model = self._peft.unload()
                    self._peft = None
            self.metrics.set_loras(self.servable_adapters())
            log.info("LoRA adapter %r unloaded", name)

    # ---- scheduler thread ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while True:
                    with self._cond:
                        while (
                            not self._stopping
                            and not self._waiting
                            and not self._batch.rows
                            and not self._control
                            and not self._unloading
                        ):
                            self._cond.wait()
                        if self._stopping:
                            break
                        control = list(self._control)
                        self._control.clear()
                        if self._unloading:
                            self._release_unloaded()
                        new = self._admit()
                    for task, future in control:
                        self._run_control(task, future)
                    self._step(new)
                    self._flush()
                    self._log_stats()
        except BaseException as exc:  # the engine cannot serve any more; /health reports it
            self.failed = f"{type(exc).__name__}: {exc}"
            log.exception("engine thread died")
            raise
        finally:
            self._fail_all("the engine stopped")
            self._fail_control("the engine stopped")

    def _log_stats(self) -> None:
        """Every ``STATS_INTERVAL_S`` while busy, one line like vLLM's: throughput and queue depth."""
        now = time.monotonic()
        if now - self._stats_at < STATS_INTERVAL_S:
            return
        prompt, generated = self._prompt_total, self._generated_total
        elapsed = now - self._stats_at
        log.info(
            "prompt throughput %.1f tokens/s, generation throughput %.1f tokens/s; running %d, waiting %d; "
            "batch tokens %d of %d",
            (prompt - self._stats_prompt) / elapsed,
            (generated - self._stats_generated) / elapsed,
            len(self._batch.rows),
            len(self._waiting),
            self._batch.tokens,
            self.max_batch_tokens,
        )
        self._stats_at, self._stats_prompt, self._stats_generated = now, prompt, generated

    def _admit(self) -> list[Sequence]:
        """Pop waiting sequences that fit the budget (called with the lock held)."""
        new: list[Sequence] = []
        if self._batch.rows and not self._mergeable:
            return new  # this model's cache cannot take newcomers mid-batch: wait for the batch to drain
        running = len(self._batch.rows)
        tokens = self._batch.tokens
        while self._waiting:
            seq = self._waiting[0]
            if seq.aborted:
                self._waiting.popleft()
                self._finish(seq, "abort")
                continue
            if seq.adapter is not None and seq.adapter not in self.adapters:
                # Submitted just after its adapter left (unloaded between lookup and submit).
                self._waiting.popleft()
                seq.finished = True
                self._outbox.append((seq.sink, Failure(f"The LoRA adapter {seq.adapter!r} was unloaded.")))
                continue
            if running + len(new) >= self.max_batch_size:
                break
            fits = tokens + len(seq.prompt_ids) <= self.max_batch_tokens
            if not fits and (running or new):
                break
            self._waiting.popleft()
            new.append(seq)
            tokens += len(seq.prompt_ids)
        self.metrics.waiting.set(len(self._waiting))
        return new

    def _step(self, new: list[Sequence]) -> None:
        self._drop_finished()
        try:
            if new:
                self._prefill(new)
            elif self._batch.rows:
                self._decode()
        except Exception as exc:
            log.exception("forward pass failed")
            message = f"the engine failed: {type(exc).__name__}: {exc}"
            for seq in [*self._batch.rows, *new]:
                if not seq.finished:
                    seq.finished = True
                    self._outbox.append((seq.sink, Failure(message)))
            self._batch = Batch()
        self._drop_finished()
        batch = self._batch
        self.metrics.running.set(len(batch.rows))
        if self.adapters:
            waiting = tuple(self._waiting)  # a snapshot: the event loop appends to the queue meanwhile
            self.metrics.lora_requests({s.adapter for s in batch.rows}, {s.adapter for s in waiting})
        self.metrics.cache_usage.set(min(1.0, batch.tokens / self.max_batch_tokens))

    def _forward(
        self, input_ids: torch.Tensor, mask: torch.Tensor, cache: Any, last_only: bool, rows: list[Sequence]
    ) -> Any:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1] :]
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "position_ids": positions,
            "use_cache": True,
            self._cache_arg: cache,
        }
        if last_only and self._keep_arg:
            kwargs["logits_to_keep"] = 1
        return self._call_model([seq.adapter for seq in rows], kwargs)

    def _call_model(self, adapters: list[str | None], kwargs: dict[str, Any]) -> Any:
        """One forward pass; with LoRA adapters loaded, row i runs with ``adapters[i]`` (None: base)."""
        if self._peft is not None:
            # One batch, any mix of adapters: each LoRA layer adds an adapter's delta to its rows only.
            kwargs["adapter_names"] = [name or BASE_ADAPTER for name in adapters]
            return self._peft(**kwargs)
        return self.model(**kwargs)

    def _fresh_cache(self) -> Any:
        """A plain dynamic cache (rows can be merged and trimmed), unless the model has layers that are
        not attention (linear attention, state-space): then the model builds the cache it needs."""
        from transformers import DynamicCache

        types = getattr(self.model.config.get_text_config(), "layer_types", None) or []
        if any(t not in ("full_attention", "sliding_attention") for t in types):
            return None
        return DynamicCache()

    def _prefill(self, new: list[Sequence]) -> None:
        now = time.perf_counter()
        width = max(len(s.prompt_ids) for s in new)
        ids = torch.full((len(new), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for row, seq in enumerate(new):
            n = len(seq.prompt_ids)
            ids[row, width - n :] = torch.tensor(seq.prompt_ids, dtype=torch.long)
            mask[row, width - n :] = 1
            seq.admitted_at = now
            self.metrics.queue_time.observe(now - seq.arrival)
        ids, mask = ids.to(self.device), mask.to(self.device)
        out = self._forward(ids, mask, self._fresh_cache(), last_only=True, rows=new)
        cache = getattr(out, self._cache_arg, None)
        if cache is None:
            cache = getattr(out, "past_key_values", None)
        if cache is None:
            raise EngineError("the model returned no KV cache; it cannot be served by this engine")
        if self._mergeable is None:
            from transformers.cache_utils import DynamicLayer

            layers = getattr(cache, "layers", None)
            self._mergeable = bool(layers) and all(type(layer) is DynamicLayer for layer in layers)
            if not self._mergeable:
                log.info("this model's KV cache is not a plain dynamic cache: batches run to completion")
        self.metrics.observe_step("prefill", len(new), int(mask.sum()))
        self.metrics.prompt_tokens.inc(int(mask.sum()))
        self._prompt_total += int(mask.sum())
        next_ids = self._sample(new, out.logits[:, -1, :])
        self._merge(new, cache, mask, next_ids)

    def _decode(self) -> None:
        batch = self._batch
        assert batch.mask is not None and batch.next_ids is not None
        mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], dim=1)
        out = self._forward(batch.next_ids, mask, batch.cache, last_only=False, rows=batch.rows)
        batch.mask = mask
        self.metrics.observe_step("decode", len(batch.rows), len(batch.rows))
        batch.next_ids = self._sample(batch.rows, out.logits[:, -1, :])

    def _merge(self, new: list[Sequence], cache: Any, mask: torch.Tensor, next_ids: torch.Tensor) -> None:
        batch = self._batch
        if not batch.rows:
            batch.rows, batch.cache, batch.mask, batch.next_ids = list(new), cache, mask, next_ids
            return
        assert batch.mask is not None and batch.next_ids is not None
        width = max(batch.mask.shape[1], mask.shape[1])
        for old_layer, new_layer in zip(batch.cache.layers, cache.layers, strict=True):
            # Padding positions hold zeros: finite, and masked out of every attention.
            new_keys = new_layer.keys * mask[:, None, :, None].to(new_layer.keys.dtype)
            new_values = new_layer.values * mask[:, None, :, None].to(new_layer.values.dtype)
            old_layer.keys = torch.cat([_pad_left(old_layer.keys, width, 2), _pad_left(new_keys, width, 2)])
            old_layer.values = torch.cat(
                [_pad_left(old_layer.values, width, 2), _pad_left(new_values, width, 2)]
            )
        batch.mask = torch.cat([_pad_left(batch.mask, width, 1), _pad_left(mask, width, 1)])
        batch.next_ids = torch.cat([batch.next_ids, next_ids])
        batch.rows.extend(new)

    def _drop_finished(self) -> None:
        """Remove finished and aborted rows from the batch, freeing their KV cache rows."""
        batch = self._batch
        for seq in batch.rows:
            if seq.aborted and not seq.finished:
                self._finish(seq, "abort")
        keep = [i for i, seq in enumerate(batch.rows) if not seq.finished]
        if len(keep) == len(batch.rows):
            return
        if not keep:
            self._batch = Batch()
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        batch.rows = [batch.rows[i] for i in keep]
        batch.cache.batch_select_indices(index)
        assert batch.mask is not None and batch.next_ids is not None
        batch.mask = batch.mask[index]
        batch.next_ids = batch.next_ids[index]
        # Columns that are padding in every remaining row are dead weight in every later step.
        if self._mergeable:
            used = batch.mask.any(dim=0).nonzero()
            first = int(used[0]) if used.numel() else 0
            if first > 0:
                batch.mask = batch.mask[:, first:]
                for layer in batch.cache.layers:
                    layer.keys = layer.keys[:, :, first:, :]
                    layer.values = layer.values[:, :, first:, :]

    def _sample(self, rows: list[Sequence], logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        now = time.perf_counter()
        chosen: list[int] = []
        for row, seq in enumerate(rows):
            row_logits = logits[row]
            params = seq.params
            if params.needs_logit_edits:
                row_logits = adjust_logits(row_logits.clone(), params, seq.prompt_ids, seq.output_ids)
            if params.ignore_eos or len(seq.output_ids) < params.min_tokens:
                banned = [i for i in self.eos_ids if i < row_logits.shape[-1]]
                if len(seq.output_ids) < params.min_tokens:
                    banned += [i for i in params.stop_token_ids if i < row_logits.shape[-1]]
                if banned:
                    row_logits = row_logits.clone()
                    row_logits[banned] = float("-inf")
            token = sample_row(row_logits, params, seq.generator)
            chosen.append(token)
            if params.logprobs is not None:
                # Of the model's own distribution (raw logits), as vLLM reports them by default.
                seq.pending_logprobs.append(_token_logprobs(logits[row], token, params.logprobs))
            self._append(seq, token, now)
        self.metrics.generation_tokens.inc(len(rows))
        self._generated_total += len(rows)
        return torch.tensor(chosen, dtype=torch.long, device=self.device).unsqueeze(1)

    def _append(self, seq: Sequence, token: int, now: float) -> None:
        if seq.first_token_at is None:
            seq.first_token_at = now
            self.metrics.ttft.observe(now - seq.arrival)
        else:
            assert seq.last_token_at is not None
            self.metrics.tpot.observe(now - seq.last_token_at)
        seq.last_token_at = now
        params = seq.params
        if token in self.eos_ids and not params.ignore_eos:
            seq.output_ids.append(token)
            self._finish(seq, "stop")
            return
        seq.output_ids.append(token)
        if token in params.stop_token_ids:
            self._finish(seq, "stop", stop_reason=token)
            return
        self._detokenize(seq)
        if params.stop and self._check_stop(seq):
            return
        if len(seq.output_ids) >= params.max_tokens or seq.num_tokens >= self.max_model_len:
            self._finish(seq, "length")
            return
        # Hold back text that may be the start of a stop string (it must not reach the client).
        hold = max((len(s) for s in params.stop), default=1) - 1
        self._emit(seq, len(seq.text) - hold)

    def _detokenize(self, seq: Sequence, final: bool = False) -> None:
        """Append the text the new tokens complete (a token ending inside a UTF-8 character waits)."""
        prompt_len = len(seq.prompt_ids)
        if seq.prefix_offset >= prompt_len:
            window = seq.output_ids[seq.prefix_offset - prompt_len :]
        else:  # the window still reaches into the prompt (context for tokenizers that need it)
            window = seq.prompt_ids[seq.prefix_offset :] + seq.output_ids
        read = seq.read_offset - seq.prefix_offset
        skip = seq.params.skip_special_tokens
        prefix_text = self.tokenizer.decode(window[:read], skip_special_tokens=skip)
        new_text = self.tokenizer.decode(window, skip_special_tokens=skip)
        if len(new_text) > len(prefix_text) and (final or not new_text.endswith("\ufffd")):
            seq.text += new_text[len(prefix_text) :]
            seq.prefix_offset = seq.read_offset
            seq.read_offset = len(seq.prompt_ids) + len(seq.output_ids)

    def _check_stop(self, seq: Sequence) -> bool:
        params = seq.params
        longest = max(len(s) for s in params.stop)
        # Only the tail can hold a new match: earlier text was checked in earlier steps.
        start = max(0, seq.sent - longest)
        found = -1
        found_stop = ""
        for stop in params.stop:
            at = seq.text.find(stop, start)
            if at != -1 and (found == -1 or at < found):
                found, found_stop = at, stop
        if found == -1:
            return False
        end = found + len(found_stop) if params.include_stop_str_in_output else found
        seq.text = seq.text[:end]
        self._finish(seq, "stop", stop_reason=found_stop, flush=False)
        return True

    def _emit(
        self, seq: Sequence, upto: int, *, finish: str | None = None, stop_reason: str | int | None = None
    ) -> None:
        upto = max(upto, seq.sent)
        text = seq.text[seq.sent : upto]
        seq.sent = upto
        if text or finish:
            delta = Delta(seq.index, text, len(seq.output_ids), finish, stop_reason)
            if seq.params.logprobs is not None:
                delta.logprobs, seq.pending_logprobs = seq.pending_logprobs, []
            self._outbox.append((seq.sink, delta))

    def _finish(
        self, seq: Sequence, reason: str, stop_reason: str | int | None = None, flush: bool = True
    ) -> None:
        if seq.finished:
            return
        seq.finished = True
        if reason != "abort":
            if flush:  # text held back for an incomplete character or a possible stop string
                self._detokenize(seq, final=True)
            self._emit(seq, len(seq.text), finish=reason, stop_reason=stop_reason)
        self.metrics.observe_finish(seq, reason, time.perf_counter())

    def _flush(self) -> None:
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, []
        wake: list[asyncio.AbstractEventLoop] = []
        with self._handoff_lock:
            for sink, item in outbox:
                pending = self._handoff.get(sink.loop)
                if pending is None:
                    self._handoff[sink.loop] = pending = []
                    wake.append(sink.loop)
                pending.append((sink, item))
        for loop in wake:
            try:
                loop.call_soon_threadsafe(self._drain, loop)
            except RuntimeError:  # that loop is closed: nobody is listening any more
                with self._handoff_lock:
                    self._handoff.pop(loop, None)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the event loop: deliver everything handed over since the last wake-up."""
        with self._handoff_lock:
            items = self._handoff.pop(loop, [])
        for sink, item in items:
            sink.queue.put_nowait(item)

    def _fail_all(self, message: str) -> None:
        with self._cond:
            pending = [*self._waiting, *self._batch.rows]
            self._waiting.clear()
            self._batch = Batch()
        for seq in pending:
            if not seq.finished:
                seq.finished = True
                self._outbox.append((seq.sink, Failure(message)))
        self._flush()


def _token_logprobs(logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    alternatives: list[tuple[int, float]] = []
    if top > 0:
        values, ids = torch.topk(logprobs, top)
        alternatives = list(zip(ids.tolist(), values.tolist(), strict=True))
    return token, float(logprobs[token]), alternatives


def build_engine(
    model_dir: Path,
    *,
    model_name: str,
    device: str = "cpu",
    dtype: str = "auto",
    max_batch_tokens: int = 4096,
    max_batch_size: int = 16,
    max_model_len: int | None = None,
    max_waiting: int = 1024,
    adapters: dict[str, Path] | None = None,
    on_loaded: Callable[[Engine], None] | None = None,
) -> Engine:
    model, tokenizer, dev = load_model(model_dir, device, dtype)
    engine = Engine(
        model,
        tokenizer,
        dev,
        model_name=model_name,
        max_batch_tokens=max_batch_tokens,
        max_batch_size=max_batch_size,
        max_model_len=max_model_len,
        max_waiting=max_waiting,
    )
    for name, path in (adapters or {}).items():
        engine.load_adapter_now(name, path)
    if on_loaded:
        on_loaded(engine)
    return engine


# Below this many parameters a forward pass is too small to split across threads: the threads' sync
# cost dominates, and on a busy machine their spin-waits make each step many times slower.
_SMALL_MODEL_PARAMS = 50_000_000


def cpu_threads(configured: int | None, model: Any) -> int:
    """torch CPU threads: as configured; otherwise 1 for tiny models, torch's default for real ones."""
    if configured:
        return configured
    params = sum(p.numel() for p in model.parameters())
    return 1 if params < _SMALL_MODEL_PARAMS else torch.get_num_threads()
