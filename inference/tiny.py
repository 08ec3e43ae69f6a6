"""A tiny random-weight causal LM with a locally trained tokenizer, so everything runs offline on a CPU.

The model is a real Llama-architecture network (GQA, RoPE, KV cache) small enough to build and run in
seconds; its output is gibberish, which is fine for exercising the serving path. The tokenizer is a
byte-level BPE trained here on an embedded English/Chinese/digits corpus: byte-level means any text
round-trips (Chinese, emoji, digits), and training locally means no hub download.

Bump ``TINY_MODEL_VERSION`` whenever the recipe changes: caches are keyed on it.
"""

from __future__ import annotations

import os
from pathlib import Path

TINY_MODEL_VERSION = "3"

TINY_MODEL_NAME = "custos-tiny"  # the name it is served under unless configured otherwise
MARKER = "custos-tiny.txt"

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, IM_START, IM_END]

# ChatML, the format of Qwen and many other open models. Content arrives as a plain string (the engine
# flattens OpenAI content parts before templating).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_CORPUS_EN = """\
The quick brown fox jumps over the lazy dog.
A sidecar sits next to the model server and watches every request.
Compliance teams need an audit trail: who asked what, when, and what the model answered.
Please summarise the quarterly report in three bullet points and list the open risks.
My name is Alice Smith, my email is alice.smith@example.com and my phone number is +1 415 555 0100.
The invoice number is 2024-0042, due on 15 March, total amount 1,234.56 EUR.
Latency, throughput, tokens per second, time to first token and queue depth are the key serving metrics.
Hello! How can I help you today? I would like to know the weather in Paris tomorrow.
Write a short poem about the sea, the wind and the stars at night.
Translate the following sentence into French: the cat is sleeping on the warm windowsill.
Errors happen: retry with backoff, log the request id, and alert the on-call engineer.
"""

_CORPUS_ZH = """\
你好，我想了解一下明天北京的天气。请帮我总结这份季度报告的要点。
我的名字是张伟，电话号码是13800138000，邮箱是zhangwei@example.cn。
模型服务需要审计日志：谁在什么时候问了什么问题，模型回答了什么。
人工智能正在改变我们的工作方式，数据安全和隐私保护非常重要。
请把下面这句话翻译成英文：今天天气很好，我们去公园散步吧。
中文、英文和数字混合的文本也必须能够正确地编码和解码。
"""

_CORPUS_DIGITS = (
    " ".join(str(n) for n in range(0, 1000, 7))
    + "\n3.14159 2.71828 1.41421 100% 42 007 2026-11-28 12:00:00\n"
)


def corpus() -> list[str]:
    """The embedded training text, repeated a little so BPE learns common merges of every script."""
    lines = [*_CORPUS_EN.splitlines(), *_CORPUS_ZH.splitlines(), *_CORPUS_DIGITS.splitlines()]
    return [line for line in lines if line] * 4


def train_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained on ``corpus()``, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # Keeps offsets right for byte-level tokens; adds no special tokens of its own.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        # The full 256-byte alphabet, so any input (any script, any bytes) is encodable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
        padding_side="left",
    )


def make_tiny_model(directory: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny Llama-architecture model + tokenizer to ``directory`` (created; files overwritten).

    Written to a sibling temporary directory first and renamed into place, so a concurrent reader
    (two test sessions building the same cache entry) never sees half a model.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    target = Path(directory).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    eos_ids = [tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(IM_END)]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,  # the smallest head size vLLM's attention kernels accept
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        # Larger than the usual 0.02 so the random network has peaked, varied next-token distributions
        # (greedy output then changes with the prompt instead of repeating one token).
        initializer_range=0.3,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id
    )

    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / MARKER).write_text(f"custos tiny model, recipe version {TINY_MODEL_VERSION}\n")
    if target.exists():
        import shutil

        shutil.rmtree(target)
    os.replace(staging, target)
    return target


def default_served_name(model_dir: str | Path) -> str:
    """``custos-tiny`` for a tiny model directory, else the directory's name (as vLLM names models)."""
    path = Path(model_dir)
    return TINY_MODEL_NAME if (path / MARKER).exists() else path.name


def default_tiny_model_dir() -> Path:
    """Where ``custos up`` and ``custos inference serve`` keep the tiny model when none is configured."""
    cache = Path(os.environ.get("CUSTOS_CACHE", Path.home() / ".cache" / "custos"))
    return cache / "models" / f"tiny-{TINY_MODEL_VERSION}"


def ensure_tiny_model(directory: str | Path | None = None) -> Path:
    """The tiny model directory, built first if it is missing."""
    target = Path(directory).expanduser() if directory is not None else default_tiny_model_dir()
    if not (target / "config.json").exists():
        make_tiny_model(target)
    return target
