"""K completions per prompt from a causal LM: batched, left-padded, and seeded per prompt.

``transformers``' sampling draws every row of a batch from one global torch RNG, so a completion
would depend on which other prompts share its batch, on the batch size and on the rank that drew it.
Here sampling is done as greedy decoding over Gumbel-perturbed scores (the Gumbel-max trick: the
argmax of ``log p + G``, ``G ~ Gumbel(0, 1)``, is an exact draw from ``p``), with the noise of each
row drawn from its own generator seeded by ``(seed, round, prompt key, sample index, step)``. A
completion is then a function of its prompt alone: the same seed gives the same samples with any
batch size, on one process or on several. Temperature, top-k and top-p are ``transformers``' own
logits warpers, applied before the noise.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

__all__ = [
    "GenerateBackend",
    "SamplingResult",
    "SamplingSettings",
    "VLLMBackend",
    "sample_prompts",
]


@dataclass(frozen=True)
class SamplingSettings:
    """How completions are drawn. Everything but ``batch_size`` changes the samples (and the cache key)."""

    num_samples: int = 4  # K completions per prompt
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    max_new_tokens: int = 64
    instruction_prefix: str | None = None  # prepended to the prompt for sampling only
    seed: int = 0
    batch_size: int = 16  # prompts per `generate` call (rows = batch_size x K)

    def __post_init__(self):
        checks = (
            ("num_samples", self.num_samples >= 1, "an integer >= 1"),
            ("temperature", self.temperature > 0, "> 0"),
            ("top_k", self.top_k >= 0, ">= 0 (0 turns it off)"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1] (1 turns it off)"),
            ("max_new_tokens", self.max_new_tokens >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
        )
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"sampling `{name}` must be {allowed}, got {getattr(self, name)!r}.")

    def fingerprint(self) -> dict:
        """The settings that determine the samples (batching does not, by construction)."""
        out = asdict(self)
        out.pop("batch_size")
        return out


@dataclass
class SamplingResult:
    completions: list[list[str]]  # [num_prompts][K], in the order of the prompts given
    seconds: float = 0.0
    generate_calls: int = 0
    new_tokens: int = 0
    stats: dict = field(default_factory=dict)


def _row_seed(seed: int, round_index: int, key: int, sample: int, step: int) -> int:
    text = f"{seed}-{round_index}-{key}-{sample}-{step}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & (2**63 - 1)


class SeededGumbelSampling(LogitsProcessor):
    """Warps the scores, then adds per-row Gumbel noise so that greedy decoding samples (see module doc)."""

    def __init__(
        self,
        settings: SamplingSettings,
        row_keys: Sequence[tuple[int, int]],
        prompt_length: int,
        round_index: int,
    ):
        self.settings, self.row_keys, self.prompt_length, self.round = (
            settings,
            row_keys,
            prompt_length,
            round_index,
        )
        warpers = [TemperatureLogitsWarper(settings.temperature)]
        if settings.top_k:
            warpers.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            warpers.append(TopPLogitsWarper(settings.top_p))
        self.warpers = LogitsProcessorList(warpers)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_length
        scores = torch.log_softmax(self.warpers(input_ids, scores.float()), dim=-1)
        noise = torch.empty_like(scores)
        tiny = torch.finfo(noise.dtype).tiny
        for row, (key, sample) in enumerate(self.row_keys):
            g = torch.Generator().manual_seed(_row_seed(self.settings.seed, self.round, key, sample, step))
            u = torch.rand(scores.shape[-1], generator=g, dtype=torch.float64).clamp_(tiny, 1.0)
            noise[row] = (-torch.log(-torch.log(u))).to(noise.dtype)
        return scores + noise


class GenerateBackend:
    """The default backend: the model's own ``generate``, on whatever device the model is on."""

    name = "generate"

    def __init__(self):
        self.generate_calls = 0

    @torch.no_grad()
    def __call__(
        self,
        model,
        tokenizer,
        prompt_ids: Sequence[Sequence[int]],
        keys: Sequence[int],
        settings: SamplingSettings,
        round_index: int,
    ) -> tuple[list[list[str]], int]:
        """K completions for each prompt of one batch (left-padded); returns them and the new-token count."""
        k = settings.num_samples
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        length = max(len(p) for p in prompt_ids)
        device = next(model.parameters()).device
        input_ids = torch.full((len(prompt_ids), length), pad, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for i, ids in enumerate(prompt_ids):  # left padding: every prompt ends where generation starts
            input_ids[i, length - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
            attention[i, length - len(ids) :] = 1
        input_ids = input_ids.repeat_interleave(k, 0).to(device)
        attention = attention.repeat_interleave(k, 0).to(device)
        row_keys = [(key, j) for key in keys for j in range(k)]
        config = GenerationConfig(
            max_new_tokens=settings.max_new_tokens,
            do_sample=False,  # the sampling is the Gumbel noise of SeededGumbelSampling
            num_beams=1,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        processor = SeededGumbelSampling(settings, row_keys, length, round_index)
        self.generate_calls += 1
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            generation_config=config,
            logits_processor=LogitsProcessorList([processor]),
        )
        texts, new_tokens = [], 0
        for row in out[:, length:].tolist():
            if tokenizer.eos_token_id in row:
                row = row[: row.index(tokenizer.eos_token_id)]
            while row and row[-1] == pad:
                row.pop()
            new_tokens += len(row)
            texts.append(tokenizer.decode(row, skip_special_tokens=True))
        return [texts[i * k : (i + 1) * k] for i in range(len(prompt_ids))], new_tokens


class VLLMBackend:
    """Optional vLLM backend (``pip install alignkit[vllm]``, GPU): same interface, offline sampling only.

    It serves a model saved at ``model_path`` (the starting weights), so it cannot follow a policy that
    changes during training; the trainer refuses it in online mode. Per-prompt seeds keep draws
    reproducible, but vLLM's sampler is not the Gumbel path above, so its samples differ from
    ``generate``'s for the same seed.
    """

    name = "vllm"

    def __init__(self, model_path: str, **llm_kwargs):
        try:
            from vllm import LLM
        except ImportError as error:
            raise ImportError(
                "sampling_backend='vllm' needs the optional `vllm` package (pip install 'alignkit[vllm]', GPU "
                "only); use sampling_backend='generate'."
            ) from error
        self.llm = LLM(model=model_path, **llm_kwargs)
        self.generate_calls = 0

    def __call__(self, model, tokenizer, prompt_ids, keys, settings: SamplingSettings, round_index: int):
        from vllm import SamplingParams

        params = [
            SamplingParams(
                n=settings.num_samples,
                temperature=settings.temperature,
                top_k=settings.top_k or -1,
                top_p=settings.top_p,
                max_tokens=settings.max_new_tokens,
                seed=_row_seed(settings.seed, round_index, key, 0, 0) % (2**31),
            )
            for key in keys
        ]
        self.generate_calls += 1
        outputs = self.llm.generate(
            [{"prompt_token_ids": list(p)} for p in prompt_ids], params, use_tqdm=False
        )
        completions = [[c.text for c in out.outputs] for out in outputs]
        return completions, sum(len(c.token_ids) for out in outputs for c in out.outputs)


Backend = Callable[..., tuple[list[list[str]], int]]


def sample_prompts(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    settings: SamplingSettings,
    *,
    round_index: int = 0,
    backend: Backend | None = None,
    process_index: int = 0,
    num_processes: int = 1,
    show_progress: bool = True,
    desc: str = "Sampling",
) -> SamplingResult:
    """K completions for every prompt; prompt ``i`` is keyed (and seeded) by its position ``i``.

    With several processes each rank samples the prompts ``i ≡ rank (mod world)`` and the shards are
    gathered, so every rank returns the full, ordered set: the one a single process would draw.
    """
    from tqdm.auto import tqdm

    backend = backend if backend is not None else GenerateBackend()
    mine = list(range(process_index, len(prompt_ids), num_processes))
    # Every rank makes the same number of `generate` calls: under ZeRO-3 `generate` runs with
    # `synced_gpus` (ranks step together), so an uneven shard is padded with repeats of its last
    # prompt, whose draw is identical (seeded per prompt) and counted once.
    per_rank = math.ceil(len(prompt_ids) / num_processes)
    padded = mine + [mine[-1] if mine else 0] * (per_rank - len(mine))
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    start, calls, new_tokens, local = time.perf_counter(), 0, 0, {}
    bar = tqdm(total=per_rank, desc=desc, unit="prompt", disable=not show_progress, leave=False)
    try:
        for first in range(0, per_rank, settings.batch_size):
            chunk = padded[first : first + settings.batch_size]
            texts, count = backend(
                model, tokenizer, [prompt_ids[i] for i in chunk], chunk, settings, round_index
            )
            if len(texts) != len(chunk) or any(len(t) != settings.num_samples for t in texts):
                raise ValueError(
                    f"the sampling backend {getattr(backend, 'name', backend)!r} returned "
                    f"{[len(t) for t in texts]} completions for {len(chunk)} prompts; expected "
                    f"{settings.num_samples} per prompt."
                )
            local.update(zip(chunk, texts))
            calls, new_tokens = calls + 1, new_tokens + count
            bar.update(len(chunk))
    finally:
        bar.close()
        if was_training:
            model.train()
    seconds = time.perf_counter() - start
    if num_processes > 1:
        from accelerate.utils import gather_object

        merged: dict[int, list[str]] = {}
        for part in gather_object([local]):
            merged.update(part)
        local = merged
        seconds = max(gather_object([seconds]))
        new_tokens = sum(gather_object([new_tokens]))
    completions = [local[i] for i in range(len(prompt_ids))]
    rate = new_tokens / seconds if seconds > 0 else math.nan
    return SamplingResult(completions, seconds, calls, new_tokens, {"tokens_per_second": rate})
