"""The batching core in-process: batching must never change what a request generates.

A request's greedy tokens must be the same whether it runs alone, starts together with others (left
padding), joins a batch that is already decoding (KV cache merge), or keeps running after others
left (rows removed, dead padding trimmed). Checked over three architectures: the tiny Llama, a Qwen2
(attention biases) and a Mistral with a sliding window shorter than the sequences.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from inference.engine import Delta, Engine, RequestSink, Sequence, load_model  # noqa: E402
from inference.sampling import SamplingParams  # noqa: E402


def _variant(tiny_model_dir: Path, target: Path, arch: str) -> Path:
    """The tiny model's tokenizer with a freshly initialised network of another architecture."""
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    common = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        initializer_range=0.3,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(1)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = MistralForCausalLM(MistralConfig(**common, sliding_window=16))
    model.save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_model_dir / name).exists():
            shutil.copy(tiny_model_dir / name, target / name)
    return target


@pytest.fixture(scope="module", params=["llama", "qwen2", "mistral-sliding"])
def core(request, tiny_model_dir: Path, tmp_path_factory):
    model_dir = tiny_model_dir
    if request.param != "llama":
        model_dir = _variant(tiny_model_dir, tmp_path_factory.mktemp(request.param), request.param)
    torch.set_num_threads(1)  # as the engine runs tiny models (see inference.engine.cpu_threads)
    model, tok, device = load_model(model_dir, "cpu", "auto")
    engine = Engine(model, tok, device, model_name=request.param, max_batch_tokens=4096, max_batch_size=8)
    engine.start()
    yield engine
    engine.stop()


def seq(prompt: list[int], max_tokens: int, sink: RequestSink, index: int = 0) -> Sequence:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    return Sequence(index=index, prompt_ids=prompt, params=params, sink=sink)


async def run(
    engine: Engine, prompts: list[tuple[list[int], int]], *, stagger_after: int | None = None
) -> list[list[int]]:
    """Generate greedily; with ``stagger_after``, each request joins once the previous one has produced
    that many tokens (so it merges into a batch that is already decoding)."""
    loop = asyncio.get_running_loop()
    sinks = [RequestSink(loop) for _ in prompts]
    seqs = [seq(p, n, s) for (p, n), s in zip(prompts, sinks, strict=True)]
    done = [False] * len(seqs)

    async def next_delta(i: int) -> Delta:
        item = await asyncio.wait_for(sinks[i].queue.get(), 120)
        assert isinstance(item, Delta), item
        done[i] = done[i] or bool(item.finish_reason)
        return item

    if stagger_after is None:
        engine.submit(seqs)
    else:
        for i, s in enumerate(seqs):
            engine.submit([s])
            while (
                i + 1 < len(seqs) and not done[i] and (await next_delta(i)).completion_tokens < stagger_after
            ):
                pass
    for i in range(len(seqs)):
        while not done[i]:
            await next_delta(i)
    return [s.output_ids for s in seqs]


PROMPTS = [
    (list(range(20, 25)), 40),  # short prompt
    (list(range(100, 160)), 30),  # long prompt: the others are left-padded against it
    (list(range(300, 312)), 8),  # finishes early: its row leaves, padding gets trimmed
]


async def test_batching_does_not_change_greedy_output(core: Engine) -> None:
    alone = [(await run(core, [p]))[0] for p in PROMPTS]
    assert [len(a) for a in alone] == [40, 30, 8]
    together = await run(core, PROMPTS)
    assert together == alone
    staggered = await run(core, PROMPTS, stagger_after=5)
    assert staggered == alone
    # Reverse order: the short request joins a batch whose cache is longer than its prompt.
    reversed_ = await run(core, PROMPTS[::-1], stagger_after=3)
    assert reversed_ == alone[::-1]
