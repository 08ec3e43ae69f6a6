"""``custos inference lora train``: LoRA fine-tuning of the tiny model on chat JSONL (CPU, seconds).

The loss falls, only assistant tokens are learned, PII is redacted first and counted, the adapter
directory is a standard peft one with a model card, bad lines are reported by line number (exit 2,
or skipped and counted), and an interrupted run resumes from its checkpoint to the same weights."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from bench.procs import custos_cmd
from tests.inference.lora_support import ANSWER, conversation, train_adapter, write_dataset

pytest.importorskip("peft")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(custos_cmd(*args), capture_output=True, text=True, timeout=120)


def test_cli_trains_an_adapter_and_the_loss_falls(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_dataset(tmp_path / "train.jsonl", n=48, emails=6)
    out = tmp_path / "adapter"
    res = run_cli(
        "inference", "lora", "train", "--base", str(tiny_model_dir), "--data", str(data), "--out", str(out),
        "--lr", "1e-2", "--epochs", "4", "--dropout", "0", "--device", "cpu",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "loss=" in res.stderr  # the progress bar shows the loss
    assert "48 conversations, 0 skipped" in res.stderr and "EMAIL=6" in res.stderr

    # A standard peft adapter directory (what vLLM's --lora-modules loads).
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    assert not (out / "checkpoint").exists()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8 and config["lora_alpha"] == 16
    assert set(config["target_modules"]) >= {"q_proj", "v_proj", "down_proj"}
    assert "lm_head" not in config["target_modules"] and not config.get("modules_to_save")

    summary = json.loads((out / "custos-lora.json").read_text())
    assert summary["steps"] == 48  # 12 batches of 4, 4 epochs
    assert summary["loss_final"] < summary["loss_first"] / 4, summary["losses"]
    assert summary["redactions"] == {"EMAIL": 6}
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    assert summary["data_sha256"] == sha

    card = (out / "README.md").read_text()
    assert str(tiny_model_dir.resolve()) in card and sha in card
    assert "EMAIL: 6" in card and "learning_rate | 0.01" in card and "| rank | 8 |" in card
    assert "user0@example.com" not in card


def test_loss_is_on_assistant_tokens_only(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from inference.lora import IGNORE, tokenize_conversation

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = conversation("Who approves travel expenses?")["messages"]
    messages.append({"role": "user", "content": "And hotels?"})
    messages.append({"role": "assistant", "content": "The travel office."})
    ids, labels = tokenize_conversation(tok, messages)
    assert tok.decode(ids) == tok.apply_chat_template(messages, tokenize=False)
    learned = tok.decode([t for t, label in zip(ids, labels, strict=True) if label != IGNORE])
    assert learned == f"{ANSWER}<|im_end|>\nThe travel office.<|im_end|>\n"


def test_redaction_on_by_default_and_no_redact(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from inference.lora import load_dataset
    from sidecar.redaction.conversation import conversation_redactor

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = tmp_path / "pii.jsonl"
    data.write_text(
        json.dumps(conversation("Mail bob@example.com or call +1 415 555 0100.", "Mailing bob@example.com."))
        + "\n"
    )
    redacted = load_dataset(data, tok, max_length=512, redact=conversation_redactor())
    text = tok.decode(redacted.examples[0].input_ids)
    assert "bob@example.com" not in text and "<EMAIL_1>" in text and "<PHONE_1>" in text
    assert redacted.redactions == {"EMAIL": 2, "PHONE": 1}
    plain = load_dataset(data, tok, max_length=512, redact=None)
    assert "bob@example.com" in tok.decode(plain.examples[0].input_ids) and plain.redactions == {}

    out = tmp_path / "adapter"
    result = train_adapter(tiny_model_dir, data, out, redact=False, epochs=1)
    assert result.redactions == {}
    assert "off (--no-redact)" in (out / "README.md").read_text()


def test_bad_lines_are_reported_by_number(tmp_path: Path, tiny_model_dir: Path) -> None:
    good = json.dumps(conversation("How do I reset my password?"))
    data = tmp_path / "bad.jsonl"
    data.write_text(
        "\n".join(
            [
                good,
                "{not json",
                json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
                json.dumps(conversation("word " * 200)),
                json.dumps({"prompt": "x", "completion": "y"}),
                good,
            ]
        )
        + "\n"
    )
    base = ["inference", "lora", "train", "--base", str(tiny_model_dir), "--data", str(data)]
    res = run_cli(*base, "--out", str(tmp_path / "a"), "--max-length", "128", "--no-progress")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    for line, why in (
        (2, "not JSON"),
        (3, "no assistant turn"),
        (4, "longer than --max-length 128"),
        (5, "messages"),
    ):
        assert f"bad.jsonl:{line}: " in res.stderr and why in res.stderr, res.stderr
    assert "4 bad line(s)" in res.stderr and "--skip-invalid" in res.stderr
    assert not (tmp_path / "a" / "adapter_config.json").exists()

    res = run_cli(
        *base, "--out", str(tmp_path / "b"), "--max-length", "128", "--skip-invalid", "--epochs", "1"
    )
    assert res.returncode == 0, res.stderr
    assert "2 conversations, 4 skipped" in res.stderr
    assert json.loads((tmp_path / "b" / "custos-lora.json").read_text())["skipped_lines"] == [2, 3, 4, 5]

    res = run_cli(*base[:-1], str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "c"))
    assert res.returncode == 2 and "Traceback" not in res.stderr and "is not a file" in res.stderr


def test_interrupted_run_resumes_to_the_same_adapter(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    import inference.lora as lora
    from inference.lora import LoraError

    data = write_dataset(tmp_path / "train.jsonl", n=24, emails=0)
    straight = train_adapter(tiny_model_dir, data, tmp_path / "straight", epochs=2, dropout=0.1)

    calls = {"n": 0}
    collate = lora._collate

    def interrupt_at_step_8(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return collate(*args, **kwargs)

    out = tmp_path / "resumed"
    with monkeypatch.context() as m:
        m.setattr(lora, "_collate", interrupt_at_step_8)
        with pytest.raises(KeyboardInterrupt):
            train_adapter(tiny_model_dir, data, out, epochs=2, dropout=0.1)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 7 and not (out / "adapter_config.json").exists()

    # Different hyper-parameters cannot silently continue someone else's run.
    with pytest.raises(LoraError, match="different run"):
        train_adapter(tiny_model_dir, data, out, epochs=2, dropout=0.1, rank=4)
    resumed = train_adapter(tiny_model_dir, data, out, epochs=2, dropout=0.1)
    assert resumed.resumed_from_step == 7 and resumed.steps == straight.steps == 12
    a = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    b = load_file(out / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max() < 1e-5, key
    assert json.loads((out / "custos-lora.json").read_text())["losses"] == pytest.approx(
        json.loads((tmp_path / "straight" / "custos-lora.json").read_text())["losses"], abs=1e-4
    )
    # A finished adapter is not overwritten by accident.
    with pytest.raises(LoraError, match="already holds a trained adapter"):
        train_adapter(tiny_model_dir, data, out, epochs=2)
    assert train_adapter(tiny_model_dir, data, out, epochs=1, overwrite=True).steps == 6
