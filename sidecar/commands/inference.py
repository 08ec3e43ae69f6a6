"""``custos inference ...``: run an engine (the CPU engine or vLLM) and make the tiny test model.

Settings come from the ``inference:`` section of custos.yaml (``--config``), CLI flags override them,
and the result is validated as one ``InferenceConfig`` so a bad value names its flag. Nothing here
imports torch until an engine actually starts, so ``custos`` stays light where torch is absent.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from custos.errors import UsageError
from inference.config import InferenceConfig
from sidecar.config import load_config

log = logging.getLogger("custos.inference")

# CLI flag -> field path in InferenceConfig (for overrides and for naming the flag in errors).
_FLAGS: dict[str, tuple[str, ...]] = {
    "engine": ("engine",),
    "model": ("model",),
    "served_model_name": ("served_model_name",),
    "host": ("host",),
    "port": ("port",),
    "device": ("device",),
    "max_batch_tokens": ("max_batch_tokens",),
    "max_batch_size": ("max_batch_size",),
    "max_model_len": ("max_model_len",),
    "threads": ("threads",),
    "log_level": ("log_level",),
    "vllm_executable": ("vllm", "executable"),
    "quantization": ("vllm", "quantization"),
    "tensor_parallel_size": ("vllm", "tensor_parallel_size"),
    "max_num_batched_tokens": ("vllm", "max_num_batched_tokens"),
    "max_num_seqs": ("vllm", "max_num_seqs"),
    "gpu_memory_utilization": ("vllm", "gpu_memory_utilization"),
    "enable_lora": ("vllm", "enable_lora"),
    "max_loras": ("vllm", "max_loras"),
    "max_lora_rank": ("vllm", "max_lora_rank"),
    "enforce_eager": ("vllm", "enforce_eager"),
    "trust_remote_code": ("vllm", "trust_remote_code"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inference", help="run an inference engine (CPU engine or vLLM); make the tiny model")
    isub = p.add_subparsers(dest="inference_command", metavar="SUBCOMMAND", parser_class=type(p))
    isub.required = True

    s = isub.add_parser("serve", help="serve a local model over the OpenAI API (CPU engine or vLLM)")
    s.add_argument(
        "--config", metavar="PATH", help="custos YAML config (its inference: section); flags override"
    )
    s.add_argument("--engine", choices=["transformers", "vllm"], help="override inference.engine")
    s.add_argument("--model", metavar="DIR", help="local model directory (default: the tiny test model)")
    s.add_argument(
        "--served-model-name",
        metavar="NAME",
        help="model name clients use (default: the dir name; custos-tiny for the tiny model)",
    )
    s.add_argument("--host", help="bind address (default 127.0.0.1: only the sidecar reaches the engine)")
    s.add_argument("--port", type=int, help="port (default 8000)")
    s.add_argument(
        "--dtype", help="weights dtype (transformers: auto/float32/bfloat16/float16; vLLM: its --dtype)"
    )
    s.add_argument("--max-model-len", metavar="N", help="context length, e.g. 4096 or 16K")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    s.add_argument(
        "--lora",
        action="append",
        metavar="NAME=DIR",
        help='serve a LoRA adapter beside the base model, selected by "model": NAME (repeatable; '
        "either engine; adds to inference.vllm.lora_modules)",
    )
    cpu = s.add_argument_group("CPU engine (--engine transformers)")
    cpu.add_argument("--device", choices=["auto", "cpu", "cuda"])
    cpu.add_argument("--max-batch-tokens", metavar="N", help="token budget of one batch (default 4096)")
    cpu.add_argument("--max-batch-size", type=int, metavar="N", help="max sequences decoded together")
    cpu.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    gpu = s.add_argument_group("vLLM (--engine vllm)")
    gpu.add_argument("--vllm-executable", metavar="PATH", help="the vllm command (default: vllm)")
    gpu.add_argument("--quantization", help="gptq, awq, bitsandbytes, fp8, ...")
    gpu.add_argument("--tensor-parallel-size", type=int, metavar="N")
    gpu.add_argument("--max-num-batched-tokens", metavar="N")
    gpu.add_argument("--max-num-seqs", type=int, metavar="N")
    gpu.add_argument("--gpu-memory-utilization", type=float, metavar="F")
    gpu.add_argument("--enable-lora", action="store_true", default=None)
    gpu.add_argument("--lora-modules", nargs="+", metavar="NAME=DIR", help="LoRA adapters to serve")
    gpu.add_argument("--max-loras", type=int, metavar="N")
    gpu.add_argument("--max-lora-rank", type=int, metavar="N")
    gpu.add_argument("--enforce-eager", action="store_true", default=None)
    gpu.add_argument("--trust-remote-code", action="store_true", default=None)
    gpu.add_argument("--print-command", action="store_true", help="print the vllm command and exit")
    s.set_defaults(func=run_serve)

    lora = isub.add_parser("lora", help="LoRA adapters: fine-tune one on chat data (peft)")
    lsub = lora.add_subparsers(dest="lora_command", metavar="SUBCOMMAND", parser_class=type(p))
    lsub.required = True
    t = lsub.add_parser(
        "train",
        help='fine-tune a LoRA adapter on chat JSONL ({"messages": [...]} per line); CPU or CUDA',
        description="LoRA fine-tuning with peft. Loss on assistant tokens only, rendered with the base "
        "model's chat template; PII is redacted from the data first (the default redaction policy). "
        "Writes a standard peft adapter directory with a model card; rerun the same command to resume.",
    )
    t.add_argument("--base", metavar="DIR", required=True, help="local base model directory")
    t.add_argument("--data", metavar="FILE", required=True, help="chat JSONL, OpenAI fine-tuning format")
    t.add_argument("--out", metavar="DIR", required=True, help="adapter directory to write")
    t.add_argument("--rank", type=int, default=8, metavar="R", help="LoRA rank (default 8)")
    t.add_argument("--alpha", type=int, default=16, metavar="A", help="LoRA alpha (default 16)")
    t.add_argument("--dropout", type=float, default=0.05, metavar="P", help="LoRA dropout (default 0.05)")
    t.add_argument(
        "--target-modules",
        default="all-linear",
        metavar="NAMES",
        help="comma-separated module names (q_proj,v_proj) or all-linear (default: every linear layer "
        "but the output head)",
    )
    t.add_argument(
        "--lr", type=float, default=2e-4, dest="learning_rate", help="learning rate (default 2e-4)"
    )
    t.add_argument("--epochs", type=float, default=3.0, help="passes over the data (default 3)")
    t.add_argument(
        "--batch-size", type=int, default=4, metavar="N", help="conversations per step (default 4)"
    )
    t.add_argument("--max-length", type=int, default=1024, metavar="N", help="max tokens per conversation")
    t.add_argument("--warmup-ratio", type=float, default=0.03, metavar="F")
    t.add_argument("--weight-decay", type=float, default=0.0, metavar="F")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda if present")
    t.add_argument("--no-redact", action="store_false", dest="redact", help="train on the data as it is")
    t.add_argument(
        "--skip-invalid", action="store_true", help="skip bad lines (counted) instead of exiting with 2"
    )
    t.add_argument("--save-every", type=int, default=100, metavar="STEPS", help="checkpoint interval")
    t.add_argument("--overwrite", action="store_true", help="replace an adapter or checkpoint in --out")
    t.add_argument("--no-progress", action="store_false", dest="progress", help="no progress bar")
    t.set_defaults(func=run_lora_train)

    m = isub.add_parser(
        "make-tiny-model", help="write a tiny random-weight model + tokenizer (offline, seconds)"
    )
    m.add_argument("directory", metavar="DIR")
    m.set_defaults(func=run_make_tiny_model)


def resolve_config(args: argparse.Namespace) -> InferenceConfig:
    """The ``inference:`` section with the CLI flags applied, validated; errors name the flag."""
    base = load_config(args.config).inference
    data: dict[str, Any] = base.model_dump(exclude_unset=False)
    data["vllm"] = base.vllm.model_dump()
    flags_used: dict[tuple[str, ...], str] = {}
    for attr, path in _FLAGS.items():
        value = getattr(args, attr, None)
        if value is None:
            continue
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        flags_used[path] = "--" + attr.replace("_", "-")
    engine = data["engine"]
    if args.dtype is not None:
        target = ("vllm", "dtype") if engine == "vllm" else ("dtype",)
        (data["vllm"] if engine == "vllm" else data)["dtype"] = args.dtype
        flags_used[target] = "--dtype"
    if args.max_model_len is not None and engine == "vllm":
        data["vllm"]["max_model_len"] = args.max_model_len
        flags_used[("vllm", "max_model_len")] = "--max-model-len"
    for option, specs in (("--lora", getattr(args, "lora", None)), ("--lora-modules", args.lora_modules)):
        if not specs:
            continue
        modules = dict(data["vllm"].get("lora_modules") or {})
        for spec in specs:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise UsageError(f"{option}: {spec!r} is not NAME=DIR")
            modules[name] = path
        data["vllm"]["lora_modules"] = modules
        flags_used[("vllm", "lora_modules")] = option
    try:
        return InferenceConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(str(p) for p in error["loc"])
            name = flags_used.get(loc) or flags_used.get(loc[:2]) or "inference." + ".".join(loc)
            problems.append(f"{name}: value {error.get('input')!r} is invalid: {error['msg']}")
        raise UsageError("; ".join(problems)) from None


def run_serve(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    logging.getLogger().setLevel(config.log_level.upper())
    if config.engine == "vllm":
        return _serve_vllm(config, print_only=args.print_command)
    if args.print_command:
        raise UsageError("--print-command: only meaningful with --engine vllm")
    return _serve_transformers(config)


def _serve_vllm(config: InferenceConfig, *, print_only: bool) -> int:
    import shlex

    from inference.vllm import VllmNotInstalled, build_vllm_command, check_model_dir, find_vllm, run_vllm

    try:
        model = check_model_dir(config.model)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    config = config.model_copy(update={"model": model.resolve()})
    if print_only:
        print(shlex.join(build_vllm_command(config)))
        return 0
    try:
        executable = find_vllm(config.vllm.executable)
    except VllmNotInstalled as exc:
        raise UsageError(str(exc)) from None
    return run_vllm(config, build_vllm_command(config, executable))


def _serve_transformers(config: InferenceConfig) -> int:
    # Only ever local files: no hub lookups, no telemetry, whatever the directory looks like.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from inference.tiny import default_served_name, ensure_tiny_model
    from inference.vllm import check_model_dir

    if config.model is None:
        model_dir = ensure_tiny_model()
        log.info("no inference.model configured: serving the tiny test model from %s", model_dir)
    else:
        try:
            model_dir = check_model_dir(config.model)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    model_dir = model_dir.resolve()
    name = config.served_model_name or default_served_name(model_dir)

    import torch
    import uvicorn

    from inference.engine import AdapterError, EngineError, build_engine, cpu_threads
    from inference.server import create_app

    adapters = {name: Path(path).expanduser().resolve() for name, path in config.vllm.lora_modules.items()}
    if adapters:
        try:
            import peft  # noqa: F401
        except ImportError:
            raise UsageError(
                "--lora: serving LoRA adapters needs peft: pip install 'custos[inference]'"
            ) from None
    try:
        engine = build_engine(
            model_dir,
            model_name=name,
            device=config.device,
            dtype=config.dtype,
            max_batch_tokens=config.max_batch_tokens,
            max_batch_size=config.max_batch_size,
            max_model_len=config.max_model_len,
            max_waiting=config.max_waiting,
            adapters=adapters,
        )
    except AdapterError as exc:
        raise UsageError(f"--lora: {exc}") from None
    except EngineError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"inference.model: cannot load {str(model_dir)!r}: {exc}") from None
    torch.set_num_threads(cpu_threads(config.threads, engine.model))
    app = create_app(engine, name, str(model_dir))
    log.info(
        "CPU engine: http://%s:%d/v1 serves %r (max_model_len %d)%s",
        config.host,
        config.port,
        name,
        engine.max_model_len,
        f" with LoRA adapters {', '.join(adapters)}" if adapters else "",
    )
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        http="httptools",
        log_level=config.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return 0


def run_make_tiny_model(args: argparse.Namespace) -> int:
    from inference.tiny import TINY_MODEL_VERSION, make_tiny_model

    target = Path(args.directory).expanduser()
    if target.exists() and not target.is_dir():
        raise UsageError(f"DIR: {args.directory!r} exists and is not a directory")
    _check_writable(target, args.directory)  # before minutes of torch import and model building
    try:
        path = make_tiny_model(target)
    except OSError as exc:
        why = exc.strerror or exc
        raise UsageError(f"DIR: cannot write the tiny model to {args.directory!r}: {why}") from None
    print(f"tiny model (recipe {TINY_MODEL_VERSION}) written to {path}", file=sys.stderr)
    return 0


def _check_writable(target: Path, shown: str) -> None:
    """The model is written next to ``target`` and renamed into place: its parent (the first one that
    exists) must be a writable directory."""
    parent = target.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"DIR: cannot write to {shown!r}: {str(parent)!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"DIR: cannot write to {shown!r}: {str(parent)!r} is not writable")


def run_lora_train(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("peft") is None:
        raise UsageError("LoRA training needs peft: pip install 'custos[inference]'")
    from inference.lora import LoraError, TrainOptions, summary_line, train

    from ..redaction.conversation import conversation_redactor

    options = TrainOptions(
        base=Path(args.base),
        data=Path(args.data),
        out=Path(args.out),
        rank=args.rank,
        alpha=args.alpha,
        dropout=args.dropout,
        target_modules=args.target_modules,
        learning_rate=args.learning_rate,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        seed=args.seed,
        device=args.device,
        redact=args.redact,
        skip_invalid=args.skip_invalid,
        save_every=args.save_every,
        overwrite=args.overwrite,
        progress=args.progress,
    )
    try:
        result = train(options, conversation_redactor() if options.redact else None)
    except LoraError as exc:
        raise UsageError(str(exc)) from None
    print(summary_line(result), file=sys.stderr)
    return 0
