"""The tiny model: built offline by `custos inference make-tiny-model`, a real HF directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.tiny import IM_END, TINY_MODEL_VERSION


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)


def test_directory_is_a_hugging_face_model(tiny_model_dir: Path) -> None:
    assert tiny_model_dir.name == f"tiny-{TINY_MODEL_VERSION}"
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["hidden_size"] == 64 and config["num_hidden_layers"] == 2
    assert (tiny_model_dir / "model.safetensors").exists()
    assert (tiny_model_dir / "tokenizer.json").exists()


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world!",
        "你好，世界！今天天气很好。",
        "0123456789 3.14159 2026-11-28",
        "mixed 中文 and 12345 🙂 ünïcödé",
        "  leading and trailing spaces  ",
        "tabs\tand\nnewlines",
    ],
)
def test_any_text_round_trips(tokenizer, text: str) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids
    assert tokenizer.decode(ids) == text


def test_trained_merges_compress_the_corpus_languages(tokenizer) -> None:
    # A trained BPE packs common words into fewer tokens than bytes; an untrained one would not.
    for text in ["the model answered", "请帮我总结这份季度报告"]:
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) < len(text.encode()) / 2


def test_special_tokens_and_chat_template(tokenizer) -> None:
    assert tokenizer.bos_token and tokenizer.eos_token and tokenizer.pad_token
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert len(tokenizer(IM_END, add_special_tokens=False)["input_ids"]) == 1


def test_generation_config_stops_at_end_of_turn(tiny_model_dir: Path, tokenizer) -> None:
    gen = json.loads((tiny_model_dir / "generation_config.json").read_text())
    assert tokenizer.convert_tokens_to_ids(IM_END) in gen["eos_token_id"]
    assert tokenizer.eos_token_id in gen["eos_token_id"]
