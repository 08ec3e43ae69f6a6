"""Shared by the LoRA tests: a small generated chat dataset and an in-process training run."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from sidecar.redaction.conversation import conversation_redactor

SYSTEM = "You are the Custos helpdesk."
ANSWER = "Please contact the compliance desk."
TOPICS = [
    "How do I reset my password?",
    "Who approves travel expenses?",
    "Where is the audit log kept?",
    "Can I share the quarterly report?",
    "What is the retention period for invoices?",
    "How do I request a new laptop?",
    "Is the VPN required at home?",
    "Who is the data protection officer?",
]


def conversation(question: str, answer: str = ANSWER) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def write_dataset(path: Path, n: int = 48, *, emails: int = 6, seed: int = 0) -> Path:
    """``n`` conversations that all end in ANSWER; the first ``emails`` mention an e-mail address."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        question = rng.choice(TOPICS)
        if i < emails:
            question += f" My address is user{i}@example.com."
        lines.append(json.dumps(conversation(question)))
    path.write_text("\n".join(lines) + "\n")
    return path


def train_adapter(base: Path, data: Path, out: Path, **overrides: Any):
    """Train in this process (no progress bar): fast settings the tiny model learns ANSWER with."""
    from inference.lora import TrainOptions, train

    settings: dict[str, Any] = {
        "learning_rate": 1e-2,
        "epochs": 4,
        "batch_size": 4,
        "dropout": 0.0,
        "progress": False,
        "device": "cpu",
    }
    settings.update(overrides)
    options = TrainOptions(base=base, data=data, out=out, **settings)
    return train(options, conversation_redactor() if options.redact else None)


def chat_body(model: str, question: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        "max_tokens": 12,
        "temperature": 0,
        **extra,
    }
