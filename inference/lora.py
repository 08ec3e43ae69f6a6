"""LoRA fine-tuning of a local causal LM with ``peft``: ``custos inference lora train``.

Input: chat-formatted JSONL, one ``{"messages": [...]}`` per line (OpenAI's fine-tuning format).
Each conversation is rendered with the base model's own chat template; the loss covers only the
tokens of assistant turns (the template's closing tokens of a turn included, so the model learns to
stop). Before anything is tokenized the redaction policy (the sidecar's default policy) replaces PII in
every message with placeholders, on by default; the counts per type go into the summary and into the
adapter's model card.

Bad lines (not JSON, not a conversation, no assistant turn, longer than ``--max-length`` tokens) are
reported by line number: exit 2, or with ``--skip-invalid`` a skip count.

Output: a standard peft adapter directory (``adapter_config.json``, ``adapter_model.safetensors``)
that ``custos inference serve --lora NAME=DIR`` and vLLM's ``--lora-modules NAME=DIR`` load unchanged,
plus a model card (``README.md``) and ``custos-lora.json`` (base model, data hash, redaction counts,
hyper-parameters, losses). While training, ``OUT/checkpoint/`` holds the adapter, optimizer and
scheduler state; rerunning the same command resumes from it (Ctrl-C saves one first).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("custos.inference.lora")

CHECKPOINT = "checkpoint"
SUMMARY = "custos-lora.json"
IGNORE = -100
_MAX_REPORTED = 20  # bad lines listed one by one; the rest are counted


class LoraError(ValueError):
    """A problem with the user's input (data, directories, options): one line, exit 2."""


@dataclass
class TrainOptions:
    base: Path
    data: Path
    out: Path
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: str = "all-linear"
    learning_rate: float = 2e-4
    epochs: float = 3.0
    batch_size: int = 4
    max_length: int = 1024
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    redact: bool = True
    skip_invalid: bool = False
    save_every: int = 100
    overwrite: bool = False
    progress: bool = True

    def hyper_parameters(self) -> dict[str, Any]:
        keys = (
            "rank",
            "alpha",
            "dropout",
            "target_modules",
            "learning_rate",
            "epochs",
            "batch_size",
            "max_length",
            "warmup_ratio",
            "weight_decay",
            "seed",
            "redact",
        )
        return {k: getattr(self, k) for k in keys}


@dataclass
class Example:
    line: int
    input_ids: list[int]
    labels: list[int]


@dataclass
class Dataset:
    examples: list[Example]
    problems: list[tuple[int, str]]
    redactions: dict[str, int]
    sha256: str
    lines: int


@dataclass
class TrainResult:
    out: Path
    examples: int
    skipped: int
    steps: int
    first_loss: float | None
    final_loss: float | None
    seconds: float
    device: str
    resumed_from_step: int
    redactions: dict[str, int] = field(default_factory=dict)


# -- data ------------------------------------------------------------------------------------------
def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "input_text"):
                raise ValueError(f"{where}: only text content parts are supported")
            text = part.get("text")
            if not isinstance(text, str):
                raise ValueError(f"{where}: a text part needs a string 'text'")
            parts.append(text)
        return "\n".join(parts)
    raise ValueError(f"{where}: content must be a string or a list of text parts")


def parse_conversation(doc: Any) -> list[dict[str, str]]:
    """The messages of one JSONL line as plain {role, content} dicts, or ValueError saying why not."""
    if not isinstance(doc, dict) or not isinstance(doc.get("messages"), list) or not doc["messages"]:
        raise ValueError('expected an object {"messages": [...]} with at least one message')
    messages: list[dict[str, str]] = []
    for i, message in enumerate(doc["messages"]):
        if not isinstance(message, dict):
            raise ValueError(f"messages[{i}] is not an object")
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise ValueError(f"messages[{i}].role {role!r} is not system/user/assistant/tool")
        messages.append({"role": role, "content": _content_text(message.get("content"), f"messages[{i}]")})
    if not any(m["role"] == "assistant" and m["content"] for m in messages):
        raise ValueError("no assistant turn with content (nothing to learn from)")
    return messages


# Redacts one conversation's message contents in place and returns what it found, by entity type.
# The caller supplies it (the CLI: the sidecar's default redaction policy), so training does not
# depend on the proxy: ``sidecar.redaction.conversation.conversation_redactor``.
RedactConversation = Callable[[list[dict[str, str]]], dict[str, int]]


def tokenize_conversation(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation (the chat template) and labels: the ids on assistant
    tokens, IGNORE elsewhere. Assistant spans are found in characters (the template rendered up to
    each assistant turn) and mapped to tokens with the tokenizer's offsets."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (text.startswith(before) and text.startswith(through) and len(through) > len(before)):
            raise ValueError("the chat template does not render this conversation turn by turn")
        spans.append((len(before), len(through)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = [IGNORE] * len(ids)
    for t, (start, end) in enumerate(enc["offset_mapping"]):
        if end > start and any(s <= start < e for s, e in spans):
            labels[t] = ids[t]
    return ids, labels


def load_dataset(
    path: Path, tokenizer: Any, *, max_length: int, redact: RedactConversation | None
) -> Dataset:
    raw = path.read_bytes()
    examples: list[Example] = []
    problems: list[tuple[int, str]] = []
    counts: dict[str, int] = {}
    lines = raw.decode("utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((number, f"not JSON ({exc.msg} at column {exc.colno})"))
            continue
        try:
            messages = parse_conversation(doc)
            if redact is not None:
                for type_, n in redact(messages).items():
                    counts[type_] = counts.get(type_, 0) + n
            ids, labels = tokenize_conversation(tokenizer, messages)
        except ValueError as exc:
            problems.append((number, str(exc)))
            continue
        except Exception as exc:  # a template that rejects the conversation (roles out of order, ...)
            problems.append((number, f"the chat template rejected it: {exc}"))
            continue
        if len(ids) > max_length:
            problems.append((number, f"{len(ids)} tokens, longer than --max-length {max_length}"))
            continue
        if all(label == IGNORE for label in labels):
            problems.append((number, "no assistant tokens after templating"))
            continue
        examples.append(Example(number, ids, labels))
    return Dataset(examples, problems, counts, hashlib.sha256(raw).hexdigest(), len(lines))


# -- model -----------------------------------------------------------------------------------------
def resolve_target_modules(model: Any, spec: str) -> list[str]:
    """``all-linear``: every linear layer's short name except the output head (vLLM's usual set),
    else the comma-separated names as given."""
    import torch

    if spec != "all-linear":
        names = [n.strip() for n in spec.split(",") if n.strip()]
        if not names:
            raise LoraError("--target-modules: give module names (q_proj,v_proj) or all-linear")
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = [n for n in names if n not in present]
        if missing:
            raise LoraError(f"--target-modules: the model has no module called {', '.join(missing)}")
        return names
    head = model.get_output_embeddings()
    found: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            short = name.rsplit(".", 1)[-1]
            if short not in found:
                found.append(short)
    if not found:
        raise LoraError("--target-modules all-linear: the model has no linear layers; name them")
    return found


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise LoraError("--device cuda: no CUDA device is available")
    return device


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    import torch

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _collate(examples: list[Example], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _fingerprint(options: TrainOptions, data_sha256: str, base: Path) -> dict[str, Any]:
    return {"base": str(base), "data_sha256": data_sha256, "hyper_parameters": options.hyper_parameters()}


def _check_out(options: TrainOptions) -> Path | None:
    """The checkpoint to resume from (None: start afresh); refuses to clobber a finished adapter."""
    out = options.out
    if out.exists() and not out.is_dir():
        raise LoraError(f"--out: {str(out)!r} exists and is not a directory")
    ckpt = out / CHECKPOINT
    if options.overwrite and out.exists():
        for name in ("adapter_config.json", "adapter_model.safetensors", "README.md", SUMMARY):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(ckpt, ignore_errors=True)
        return None
    if (ckpt / "state.json").is_file():
        return ckpt
    if (out / "adapter_config.json").exists():
        raise LoraError(
            f"--out: {str(out)!r} already holds a trained adapter; pass --overwrite to replace it"
        )
    return None


def train(options: TrainOptions, redact_conversation: RedactConversation | None = None) -> TrainResult:
    """Fine-tune a LoRA adapter; raises LoraError on bad input (never a traceback for the user).
    ``redact_conversation`` is required when ``options.redact`` (the default)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    started = time.monotonic()
    base = options.base.expanduser()
    if not (base / "config.json").is_file():
        raise LoraError(
            f"--base: {str(options.base)!r} is not a local Hugging Face model directory (no config.json)"
        )
    if not options.data.is_file():
        raise LoraError(f"--data: {str(options.data)!r} is not a file")
    for name, value, low in (("--rank", options.rank, 1), ("--alpha", options.alpha, 1)):
        if value < low:
            raise LoraError(f"{name}: must be at least {low}")
    if not 0.0 <= options.dropout < 1.0:
        raise LoraError("--dropout: must be in [0, 1)")
    if options.learning_rate <= 0 or options.epochs <= 0 or options.batch_size < 1 or options.max_length < 8:
        raise LoraError("--lr and --epochs must be > 0, --batch-size >= 1, --max-length >= 8")
    resume = _check_out(options)

    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise LoraError(f"--base: cannot load the tokenizer of {str(base)!r}: {exc}") from None
    if not getattr(tokenizer, "chat_template", None):
        raise LoraError(f"--base: {str(base)!r} has no chat template; chat-formatted data needs one")
    if not getattr(tokenizer, "is_fast", False):
        raise LoraError(f"--base: {str(base)!r} needs a fast tokenizer (tokenizer.json) for offsets")

    if options.redact and redact_conversation is None:
        raise ValueError("TrainOptions.redact needs a redact_conversation")
    redact = redact_conversation if options.redact else None
    data = load_dataset(options.data, tokenizer, max_length=options.max_length, redact=redact)
    if data.problems and not options.skip_invalid:
        for number, why in data.problems[:_MAX_REPORTED]:
            print(f"{options.data}:{number}: {why}", file=sys.stderr)
        more = len(data.problems) - _MAX_REPORTED
        if more > 0:
            print(f"... and {more} more", file=sys.stderr)
        raise LoraError(
            f"--data: {len(data.problems)} bad line(s) (first: line {data.problems[0][0]}); fix them or "
            "pass --skip-invalid to train on the rest"
        )
    if not data.examples:
        raise LoraError(f"--data: {str(options.data)!r} holds no usable conversation")

    device = _pick_device(options.device)
    dtype: Any = torch.float32
    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True, dtype=dtype)
    if device == "cpu":
        from .engine import cpu_threads

        torch.set_num_threads(cpu_threads(None, model))
    targets = resolve_target_modules(model, options.target_modules)
    torch.manual_seed(options.seed)
    # peft asks transformers a deprecated question (is_gradient_checkpointing); not the user's concern.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    if resume is not None:
        state = json.loads((resume / "state.json").read_text())
        if state.get("fingerprint") != _fingerprint(options, data.sha256, base.resolve()):
            raise LoraError(
                f"--out: {str(options.out)!r} holds a checkpoint of a different run (base, data or "
                "hyper-parameters differ); pass --overwrite to start afresh"
            )
        model = PeftModel.from_pretrained(model, resume, is_trainable=True)
    else:
        state = {}
        config = LoraConfig(
            r=options.rank,
            lora_alpha=options.alpha,
            lora_dropout=options.dropout,
            target_modules=targets,
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    model.to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=options.learning_rate, weight_decay=options.weight_decay)
    per_epoch = math.ceil(len(data.examples) / options.batch_size)
    total = max(1, math.ceil(per_epoch * options.epochs))
    warmup = int(total * options.warmup_ratio)

    def schedule(step: int) -> float:  # linear warmup, then linear decay to 10%
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.1, 1.0 - 0.9 * (step - warmup) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    step = 0
    losses: list[float] = []
    if resume is not None:
        optimizer.load_state_dict(torch.load(resume / "optimizer.pt", map_location=device, weights_only=True))
        scheduler.load_state_dict(torch.load(resume / "scheduler.pt", weights_only=True))
        torch.set_rng_state(torch.load(resume / "rng.pt", weights_only=True))
        if device == "cuda" and (resume / "cuda_rng.pt").is_file():
            torch.cuda.set_rng_state_all(torch.load(resume / "cuda_rng.pt", weights_only=True))
        step = int(state["step"])
        losses = list(state.get("losses", []))
        log.info("resuming from %s at step %d of %d", resume, step, total)
    resumed_from = step
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    fingerprint = _fingerprint(options, data.sha256, base.resolve())

    def save_checkpoint() -> None:
        ckpt = options.out / CHECKPOINT
        tmp = options.out / (CHECKPOINT + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(torch.get_rng_state(), tmp / "rng.pt")
        if device == "cuda":
            torch.save(torch.cuda.get_rng_state_all(), tmp / "cuda_rng.pt")
        (tmp / "state.json").write_text(
            json.dumps({"step": step, "total": total, "losses": losses, "fingerprint": fingerprint})
        )
        shutil.rmtree(ckpt, ignore_errors=True)
        tmp.rename(ckpt)

    options.out.mkdir(parents=True, exist_ok=True)
    bar = _progress(total, step, options.progress)
    try:
        while step < total:
            epoch, index = divmod(step, per_epoch)
            batch_ids = _batches(len(data.examples), options.batch_size, options.seed, epoch)[index]
            batch = {
                k: v.to(device) for k, v in _collate([data.examples[i] for i in batch_ids], pad_id).items()
            }
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(round(float(loss.detach()), 5))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", epoch=f"{step / per_epoch:.2f}")
            if options.save_every and step % options.save_every == 0 and step < total:
                save_checkpoint()
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        save_checkpoint()
        print(
            f"interrupted at step {step} of {total}; checkpoint saved in {options.out / CHECKPOINT}: "
            "run the same command again to resume",
            file=sys.stderr,
        )
        raise
    if bar is not None:
        bar.close()

    model.save_pretrained(options.out)
    seconds = time.monotonic() - started
    result = TrainResult(
        out=options.out,
        examples=len(data.examples),
        skipped=len(data.problems),
        steps=total,
        first_loss=losses[0] if losses else None,
        final_loss=_tail_mean(losses),
        seconds=round(seconds, 2),
        device=device,
        resumed_from_step=resumed_from,
        redactions=dict(sorted(data.redactions.items())),
    )
    summary = {
        "base_model": str(base.resolve()),
        "base_model_name": base.resolve().name,
        "data_file": options.data.name,
        "data_sha256": data.sha256,
        "examples": len(data.examples),
        "skipped_lines": [n for n, _ in data.problems],
        "redaction": "default policy" if options.redact else "off (--no-redact)",
        "redactions": result.redactions,
        "hyper_parameters": {**options.hyper_parameters(), "target_modules": targets},
        "steps": total,
        "loss_first": result.first_loss,
        "loss_final": result.final_loss,
        "losses": losses,
        "device": device,
        "seconds": result.seconds,
        "peft_version": _version("peft"),
        "transformers_version": _version("transformers"),
        "torch_version": _version("torch"),
    }
    (options.out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    (options.out / "README.md").write_text(model_card(summary))
    shutil.rmtree(options.out / CHECKPOINT, ignore_errors=True)
    return result


def _tail_mean(losses: list[float]) -> float | None:
    if not losses:
        return None
    tail = losses[-max(1, min(10, len(losses) // 10 or 1)) :]
    return round(sum(tail) / len(tail), 5)


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _progress(total: int, done: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="lora", unit="step", file=sys.stderr, dynamic_ncols=True)


def model_card(summary: dict[str, Any]) -> str:
    hp = summary["hyper_parameters"]
    redactions = summary["redactions"]
    counts = ", ".join(f"{k}: {v}" for k, v in redactions.items()) or "none found"
    rows = "\n".join(
        f"| {k} | {v if not isinstance(v, list) else ', '.join(map(str, v))} |" for k, v in hp.items()
    )
    return f"""---
base_model: {summary["base_model_name"]}
library_name: peft
tags:
- lora
- custos
---

# LoRA adapter for {summary["base_model_name"]}

Trained with `custos inference lora train` (peft {summary["peft_version"]}, transformers
{summary["transformers_version"]}, torch {summary["torch_version"]}) on {summary["device"]}.

- **Base model**: `{summary["base_model"]}`
- **Training data**: `{summary["data_file"]}`, sha256 `{summary["data_sha256"]}`;
  {summary["examples"]} conversations, {len(summary["skipped_lines"])} lines skipped
- **PII redaction before training**: {summary["redaction"]}; redactions: {counts}
- **Loss** (assistant tokens only): {summary["loss_first"]} at the first step,
  {summary["loss_final"]} at the end, {summary["steps"]} steps in {summary["seconds"]} s

## Hyper-parameters

| parameter | value |
|---|---|
{rows}

Serve it with `custos inference serve --model BASE --lora NAME=THIS_DIR` (CPU engine or vLLM,
`--lora-modules NAME=THIS_DIR`). The full record is in `{SUMMARY}`.
"""


def summary_line(result: TrainResult) -> str:
    redactions = ", ".join(f"{k}={v}" for k, v in result.redactions.items()) or "none"
    resumed = f", resumed at step {result.resumed_from_step}" if result.resumed_from_step else ""
    return (
        f"adapter written to {result.out}: {result.examples} conversations, {result.skipped} skipped, "
        f"{result.steps} steps on {result.device} in {result.seconds:.1f}s{resumed}; loss "
        f"{result.first_loss} -> {result.final_loss}; PII redacted: {redactions}"
    )
