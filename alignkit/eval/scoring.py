"""Teacher-forced scoring and greedy generation, batched, shared by every benchmark.

Scoring (``shared/design/benchmarks.md`` §0, §1.1): for a prompt ``x`` and target ``y`` the scored
tokens are ``y_1..y_T`` (EOS included when added) and ``log p(y_t | x, y_<t)`` comes from the
float32 log-softmax of the logits. ``avg_loss = -(1/T) Σ_t log p(y_t|…)``, so ``exp(-avg_loss)``
is the per-token geometric-mean probability every TOFU "probability" uses.

Generation (§1.2, open-unlearning's protocol): greedy, left padding, KV cache, new tokens decoded
with special tokens skipped, cut at the first decoded EOS string and then at each stop string in
order, then stripped.

``progress`` (both functions): ``None`` or a callable ``progress(n)`` called with the number of
items finished after each batch (``rich.progress.Progress.advance`` wrapped in a lambda fits).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from alignkit.data.tokenize import Boundary, Encode, encode_prompt_completion
from alignkit.models.attention_cost import SHARE_PROMPT, layout_cost, worth_sharing
from alignkit.models.head import forward_states, position_stats

logger = logging.getLogger(__name__)

Progress = Callable[[int], None] | None


@dataclass
class ScoredText:
    """One (prompt, target) pair, teacher-forced."""

    token_logps: torch.Tensor  # [T] float32 log p(target token)
    target_ids: list[int]
    valid: bool  # False when no target token remains; such items are left out of every average
    argmax_ids: list[int] | None = None  # [T] teacher-forced argmax prediction at each target position

    @property
    def avg_loss(self) -> float:
        """``-mean(token_logps)``; NaN for an invalid item."""
        if not self.valid or self.token_logps.numel() == 0:
            return float("nan")
        return float(-self.token_logps.double().mean())


def encode_for_scoring(
    tokenizer,
    prompt: str,
    target: str,
    *,
    boundary: Boundary = "separate",
    add_eos: bool = True,
    add_special_tokens: bool = True,
    max_length: int | None = None,
    max_length_includes_eos: bool = False,
    encode: Encode | None = None,
) -> tuple[list[int], list[int]]:
    """``(prompt_ids, target_ids)`` after truncation; ``target_ids`` are the scored tokens.

    ``max_length`` truncates ``prompt_ids + target_ids`` from the right. Two conventions:

    * ``max_length_includes_eos=False`` (open-unlearning): the text is cut to ``max_length`` tokens,
      then EOS is appended anyway (so up to ``max_length + 1`` tokens).
    * ``max_length_includes_eos=True`` (original TOFU): the whole sequence including EOS is at most
      ``max_length``; EOS is only added when there is room for it.

    ``encode``: see :func:`~alignkit.data.tokenize.encode_prompt_completion`.
    """
    prompt_ids, target_ids = encode_prompt_completion(
        tokenizer,
        prompt,
        target,
        boundary=boundary,
        add_eos=False,
        add_special_tokens=add_special_tokens,
        encode=encode,
    )
    eos = tokenizer.eos_token_id
    if max_length is not None:
        full = (prompt_ids + target_ids)[:max_length]
        prompt_ids, target_ids = full[: len(prompt_ids)], full[len(prompt_ids) :]
    want_eos = add_eos and eos is not None and (not target_ids or target_ids[-1] != eos)
    if want_eos and max_length_includes_eos and max_length is not None:
        want_eos = len(prompt_ids) + len(target_ids) < max_length
    if want_eos:
        target_ids = [*target_ids, eos]
    return prompt_ids, target_ids


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - parameterless models do not exist in practice
        return torch.device("cpu")


SharePrompt = Literal["auto", "on", "off"]

# Rows per window, in batches: a window's prompts are prefilled together and their keys and values
# held until its rows are scored, so the cache held is bounded by this many batches' prompts.
SHARE_WINDOW_BATCHES = 8


@torch.inference_mode()
def score_token_ids(
    model,
    pairs: Sequence[tuple[list[int], list[int]]],
    *,
    pad_token_id: int,
    batch_size: int = 16,
    progress: Progress = None,
    stats: dict | None = None,
    argmax: bool | Sequence[bool] = False,
    share_prompt: SharePrompt = "auto",
) -> list[ScoredText]:
    """Score already-tokenised ``(prompt_ids, target_ids)`` pairs.

    Identical pairs are scored once. Pairs are sorted by length so a batch holds similar lengths
    (less padding); padding is on the right, where it cannot change the real positions.
    ``stats`` (optional dict) accumulates ``forwards`` (model calls), ``sequences`` (rows run) and
    ``shared_rows`` (rows scored after a shared prompt).
    ``argmax`` (one flag for all pairs, or one per pair): also keep the teacher-forced argmax
    prediction at each target position (``argmax_ids``, which memorisation metrics read). It costs
    as much as the log-softmax over the vocabulary, so a pair without it has ``argmax_ids=None``.

    ``share_prompt``: pairs with the same prompt (TOFU's answer, paraphrase and perturbed answers of
    one question) can run the prompt once: ``prompt[:-1]`` is prefilled into a KV cache, copied to each
    of its rows, and each row runs ``prompt[-1] + target`` after it, with the positions and the
    context it has in the flat layout, so the log-probs are the flat ones up to float rounding.
    (Scoring has no backward, so the cache does what the training side's packed rows do,
    ``alignkit.trainers.shared_prompt``, without their dense block mask.) ``"auto"`` does so for a
    window of prompts where the cost model predicts it pays (:func:`_plan_shared`), ``"on"`` for every
    prompt with two or more targets, ``"off"`` never. Models with sliding-window or chunked attention,
    or whose cache is not a plain ``DynamicCache``, are scored flat.
    """
    if share_prompt not in SHARE_PROMPT:
        raise ValueError(f"score_token_ids: share_prompt must be one of {SHARE_PROMPT}, got {share_prompt!r}")
    wants = [argmax] * len(pairs) if isinstance(argmax, bool) else list(argmax)
    if len(wants) != len(pairs):
        raise ValueError(f"score_token_ids: {len(pairs)} pairs but {len(wants)} argmax flags")
    unique: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    order: list[int] = []
    for p, t in pairs:
        order.append(unique.setdefault((tuple(p), tuple(t)), len(unique)))
    keys = list(unique)
    keep_argmax = [False] * len(keys)
    for k, want in zip(order, wants):
        keep_argmax[k] = keep_argmax[k] or bool(want)
    results: list[ScoredText | None] = [None] * len(keys)
    copies = [0] * len(keys)  # how many input pairs each unique pair stands for (progress counts)
    for k in order:
        copies[k] += 1

    # A target token at sequence position j is predicted by the logits at j - 1; position 0 has no
    # context, so with an empty prompt the first target token cannot be scored.
    todo = []
    for k, (p, t) in enumerate(keys):
        start = max(len(p), 1)
        n = len(p) + len(t) - start
        if n <= 0:
            results[k] = ScoredText(torch.zeros(0), [], valid=False)
        else:
            todo.append(k)

    if progress is not None and len(todo) < len(keys):
        progress(sum(copies[k] for k in range(len(keys)) if results[k] is not None))
    hidden = getattr(getattr(model, "config", None), "hidden_size", None) or 1024
    mode = share_prompt if _full_attention(model) else "off"
    shared, flat = _plan_shared(keys, todo, batch_size, mode, int(hidden))
    for i, window in enumerate(shared):
        if not _score_shared(
            model, keys, window, batch_size, keep_argmax, results, pad_token_id, stats, progress, copies
        ):
            flat += [k for w in shared[i:] for k in w]  # the model's cache cannot be shared: flat
            break
    for chunk in _batches(flat, batch_size, lambda k: len(keys[k][0]) + len(keys[k][1])):
        _score_flat(model, keys, chunk, keep_argmax, results, pad_token_id, stats)
        if progress is not None:
            progress(sum(copies[k] for k in chunk))
    return [results[k] for k in order]  # type: ignore[misc]


def _right_padded(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of ``seqs`` right-padded to the longest.

    Built from one flat list and a mask (nested lists per batch cost more than the model's head)."""
    width = max(len(s) for s in seqs)
    attention = (torch.arange(width) < torch.tensor([len(s) for s in seqs])[:, None]).long()
    input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    input_ids[attention.bool()] = torch.tensor([tok for s in seqs for tok in s], dtype=torch.long)
    return input_ids, attention


def _count(stats: dict | None, rows: int, *, forwards: int = 1, shared: int = 0) -> None:
    if stats is not None:
        stats["forwards"] = stats.get("forwards", 0) + forwards
        stats["sequences"] = stats.get("sequences", 0) + rows
        if shared:
            stats["shared_rows"] = stats.get("shared_rows", 0) + shared


def _keep_scores(x, head, chunk, first, targets, keep_argmax, results) -> None:
    """Log-probs of each row's ``targets`` from the states ``x [B, W, d]`` (or logits), row ``i``'s
    first target predicted at ``x[i, first[i]]`` and the next ones at the following positions."""
    sizes = [len(t) for t in targets]
    # The LM head runs on the scored positions only, a chunk at a time (alignkit.models.head): no
    # [B, L, V] logits, whatever the prompt's length or the vocabulary. Every row's scored positions
    # go through it together (one gather, one log-softmax per chunk), then split per row.
    n = torch.tensor(sizes)
    rows = torch.repeat_interleave(torch.arange(len(chunk)), n)
    cols = (
        torch.repeat_interleave(torch.tensor(first), n)
        + torch.arange(int(n.sum()))
        - torch.repeat_interleave(n.cumsum(0) - n, n)
    )
    ids = torch.tensor([tok for t in targets for tok in t], dtype=torch.long, device=x.device)
    flags = [keep_argmax[k] for k in chunk]
    which = torch.tensor([f for f, m in zip(flags, sizes) for _ in range(m)]) if any(flags) else False
    logps, _, _, best = position_stats(x[rows.to(x.device), cols.to(x.device)], head, ids, argmax=which)
    best_rows = best.cpu().split(sizes) if best is not None else [None] * len(chunk)
    for k, target, lp, flag, am in zip(chunk, targets, logps.cpu().split(sizes), flags, best_rows):
        results[k] = ScoredText(lp, list(target), valid=True, argmax_ids=am.tolist() if flag else None)


def _score_flat(model, keys, chunk, keep_argmax, results, pad, stats) -> None:
    """One batch, each row ``prompt + target`` right-padded."""
    seqs = [keys[k][0] + keys[k][1] for k in chunk]
    starts = [max(len(keys[k][0]), 1) for k in chunk]
    input_ids, attention = _right_padded(seqs, pad)
    device = _model_device(model)
    # Right padding comes after every real token, so a causal model's real positions never see it: the
    # padding mask changes nothing there (the same values, bit for bit) and costs a mask build and a
    # masked attention kernel per forward (~10% of a forward at TOFU's shapes on CPU; on a GPU, sdpa's
    # flash kernel takes no arbitrary mask). With no mask, the attention is causal only.
    mask = None if _causal_lm(model) else attention.to(device)
    x, head = forward_states(model, input_ids.to(device), mask)
    _count(stats, len(chunk))
    _keep_scores(
        x, head, chunk, [s - 1 for s in starts], [s[i:] for s, i in zip(seqs, starts)], keep_argmax, results
    )


def _full_attention(model) -> bool:
    """Whether every layer attends to the whole causal context. A sliding window or chunked attention
    masks by cache index, and a shared prompt's right padding moves a row's suffix off its positions."""
    config = getattr(model, "config", None)
    if config is None or not _causal_lm(model):
        return False
    layer_types = getattr(config, "layer_types", None) or ()
    return (
        not getattr(config, "sliding_window", None)
        and getattr(config, "attention_chunk_size", None) is None
        and all(t == "full_attention" for t in layer_types)
    )


def _causal_lm(model) -> bool:
    config = getattr(model, "config", None)
    return (
        config is not None
        and not getattr(config, "is_encoder_decoder", False)
        and hasattr(model, "get_decoder")
    )


def _batches(rows: list[int], batch_size: int, length) -> list[list[int]]:
    rows = sorted(rows, key=length, reverse=True)
    return [rows[b : b + batch_size] for b in range(0, len(rows), batch_size)]


def _plan_shared(keys, todo: list[int], batch_size: int, share_prompt: str, hidden: int):
    """``(windows, flat keys)``: the windows of keys to score after their shared prompts, the rest flat.

    A window holds whole prompts' groups, up to ``SHARE_WINDOW_BATCHES`` batches of rows. Under
    ``"auto"`` a window is shared where its flat batches are predicted ``AUTO_MIN_RATIO`` times as
    costly as its shared ones (training's margin, :mod:`alignkit.models.attention_cost`; the costs are
    :func:`window_costs`'). Measured on TOFU forget10's pairs (``scripts/bench_share_scoring.py``,
    docs/performance.md "Scoring: the prompt encoded once"): predicted 1.09 / 1.19 / 1.26 / 1.31,
    measured 1.05 / 1.16 / 1.31 / 1.30x faster shared at hidden 64 / 256 / 512 / 1,024.
    """
    if share_prompt == "off":
        return [], list(todo)
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for k in todo:
        by_prompt.setdefault(keys[k][0], []).append(k)
    groups, flat = [], []
    for p, ks in by_prompt.items():
        # A prompt of one token has no prefix to share; a prompt with one target, no one to share it with.
        if len(p) >= 2 and len(ks) >= 2:
            groups.append(ks)
        else:
            flat += ks
    groups.sort(key=lambda ks: len(keys[ks[0]][0]), reverse=True)  # similar prompt lengths together
    windows, window = [], []
    for ks in groups:
        window += ks
        if len(window) >= SHARE_WINDOW_BATCHES * batch_size:
            windows.append(window)
            window = []
    windows += [window] if window else []
    if share_prompt == "on":
        return windows, flat
    shared = []
    for window in windows:
        if worth_sharing(*window_costs(keys, window, batch_size, hidden)):
            shared.append(window)
        else:
            flat += window
    return shared, flat


def window_costs(keys, window: list[int], batch_size: int, hidden: int) -> tuple[float, float]:
    """``(flat, shared)`` predicted cost of scoring the keys ``window`` (indices into ``keys``, the
    ``(prompt_ids, target_ids)`` tuples): positions, padding included, plus score pairs over
    ``PAIRS_PER_POSITION * hidden``. Flat rows ``prompt + target``, batched by length, attend causally;
    shared, each prompt's ``prompt[:-1]`` runs once (batched by length, causal) and each row's
    ``prompt[-1] + target`` (batched by target length) attends through a padding mask to the batch's
    widest prompt and to itself."""

    def prompt(k):
        return len(keys[k][0])

    def target(k):
        return len(keys[k][1])

    def full(k):
        return prompt(k) + target(k)

    def causal(batch, width) -> float:
        return layout_cost(len(batch), width, width * (width + 1) / 2, hidden)

    cost_flat = sum(causal(b, full(b[0])) for b in _batches(window, batch_size, full))
    prompts = list({keys[k][0]: k for k in window}.values())
    cost_shared = sum(causal(b, prompt(b[0]) - 1) for b in _batches(prompts, batch_size, prompt))
    for b in _batches(window, batch_size, target):
        wp, ws = max(prompt(k) for k in b) - 1, target(b[0]) + 1
        cost_shared += layout_cost(len(b), ws, ws * (wp + ws), hidden)
    return cost_flat, cost_shared


def _plain_dynamic(cache) -> bool:
    """Whether ``cache`` holds plain per-layer keys and values (``DynamicLayer``: no sliding window, no
    quantisation), whose rows can be selected, copied and joined."""
    return bool(cache.layers) and all(type(layer).__name__ == "DynamicLayer" for layer in cache.layers)


def _prefill(model, prompts: list[tuple[int, ...]], batch_size: int, pad: int, device, stats):
    """``(keys, values, mask)``: each layer's ``[G, heads, W, d]`` keys and values of every prompt's
    ``prompt[:-1]`` (right-padded to the longest, in the order given), and the ``[G, W]`` padding mask;
    None where the model's cache is not a plain ``DynamicCache``, whose rows can be copied."""
    from transformers import DynamicCache

    keys: list[list[torch.Tensor]] = []
    values: list[list[torch.Tensor]] = []
    masks = []
    width = max(len(p) for p in prompts) - 1
    for b in range(0, len(prompts), batch_size):
        ids, mask = _right_padded([p[:-1] for p in prompts[b : b + batch_size]], pad)
        cache = DynamicCache()
        try:
            model(
                input_ids=ids.to(device), attention_mask=mask.to(device), past_key_values=cache,
                use_cache=True, logits_to_keep=1,
            )  # fmt: skip
        except (TypeError, ValueError):  # a model whose forward takes no cache object or no logits_to_keep
            return None
        if not _plain_dynamic(cache):
            return None
        _count(stats, 0)
        grow = width - ids.shape[1]  # right padding up to the window's widest prompt (masked)
        keys.append([torch.nn.functional.pad(layer.keys, (0, 0, 0, grow)) for layer in cache.layers])
        values.append([torch.nn.functional.pad(layer.values, (0, 0, 0, grow)) for layer in cache.layers])
        masks.append(torch.nn.functional.pad(mask, (0, grow)))
    layers = range(len(keys[0]))
    return (
        [torch.cat([k[i] for k in keys]) for i in layers],
        [torch.cat([v[i] for v in values]) for i in layers],
        torch.cat(masks),
    )


def _score_shared(
    model, keys, window, batch_size, keep_argmax, results, pad, stats, progress, copies
) -> bool:
    """One window: its prompts prefilled once (``prompt[:-1]``), then its rows, batched by target
    length, each running ``prompt[-1] + target`` after a copy of its prompt's keys and values, at the
    positions and with the context it has in the flat layout. False (nothing scored) where the model's
    cache cannot be copied so."""
    from transformers import DynamicCache

    device = _model_device(model)
    prompts = sorted({keys[k][0] for k in window}, key=len, reverse=True)
    cached = _prefill(model, prompts, batch_size, pad, device, stats)
    if cached is None:
        return False
    layer_keys, layer_values, prefix_mask = cached
    index = {p: i for i, p in enumerate(prompts)}
    for chunk in _batches(window, batch_size, lambda k: len(keys[k][1])):
        idx = torch.tensor([index[keys[k][0]] for k in chunk])
        # Row i's prompt sits at positions 0..len-2 of the cache (right-padded, the padding masked) and
        # its suffix continues at len - 1; columns past the batch's longest prompt are padding for all.
        width = max(len(keys[k][0]) for k in chunk) - 1
        cache = DynamicCache()
        on = idx.to(device)
        for i, (k_, v_) in enumerate(zip(layer_keys, layer_values)):
            cache.update(k_[on, :, :width], v_[on, :, :width], i)
        suf_ids, suf_mask = _right_padded([(keys[k][0][-1], *keys[k][1]) for k in chunk], pad)
        attention = torch.cat([prefix_mask[idx, :width], suf_mask], dim=1)
        positions = torch.tensor([len(keys[k][0]) - 1 for k in chunk])[:, None] + torch.arange(
            suf_ids.shape[1]
        )
        x, head = forward_states(
            model, suf_ids.to(device), attention.to(device), past_key_values=cache,
            position_ids=positions.to(device), use_cache=True,
        )  # fmt: skip
        _count(stats, len(chunk), shared=len(chunk))
        _keep_scores(x, head, chunk, [0] * len(chunk), [keys[k][1] for k in chunk], keep_argmax, results)
        if progress is not None:
            progress(sum(copies[k] for k in chunk))
    return True


def score_texts(
    model,
    tokenizer,
    prompts: list[str],
    targets: list[str],
    *,
    batch_size: int = 16,
    boundary: Boundary = "separate",
    add_eos: bool = True,
    add_special_tokens: bool = True,
    max_length: int | None = None,
    max_length_includes_eos: bool = False,
    progress: Progress = None,
    stats: dict | None = None,
) -> list[ScoredText]:
    """Teacher-forced per-token log-probs of each ``targets[i]`` after ``prompts[i]``.

    ``boundary``: ``"separate"`` scores ``ids(prompt) + ids(target) + [eos]``; ``"joint"`` is
    open-unlearning's ``ids(prompt + target)`` with the first ``len(ids(prompt))`` tokens masked
    (see :mod:`alignkit.data.tokenize`). ``max_length`` / ``max_length_includes_eos``: see
    :func:`encode_for_scoring`. An item with no target token left is returned with ``valid=False``
    and a warning is logged.
    """
    if len(prompts) != len(targets):
        raise ValueError(
            f"score_texts: {len(prompts)} prompts but {len(targets)} targets; they pair up one to one."
        )
    pairs = [
        encode_for_scoring(
            tokenizer,
            p,
            t,
            boundary=boundary,
            add_eos=add_eos,
            add_special_tokens=add_special_tokens,
            max_length=max_length,
            max_length_includes_eos=max_length_includes_eos,
        )
        for p, t in zip(prompts, targets)
    ]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = score_token_ids(
        model, pairs, pad_token_id=pad or 0, batch_size=batch_size, progress=progress, stats=stats
    )
    n_invalid = sum(not s.valid for s in out)
    if n_invalid:
        logger.warning(
            "%d of %d items have no target token left (tokenisation boundary merge or truncation); "
            "they are marked invalid and left out of every average.",
            n_invalid,
            len(out),
        )
    return out


def postprocess_generation(text: str, *, eos_text: str | None, stop_strings: Sequence[str] = ()) -> str:
    """open-unlearning's cut: at the decoded EOS string, then at each stop string in turn; strip."""
    for word in ([eos_text] if eos_text else []) + list(stop_strings):
        if word and word in text:
            text = text.split(word)[0]
    return text.strip()


def _greedy_config(model, tokenizer, pad_token_id: int):
    cfg = copy.deepcopy(model.generation_config)
    cfg.do_sample = False
    # Sampling knobs left in a model's generation_config only trigger warnings under greedy decoding.
    for name in ("temperature", "top_p", "top_k", "typical_p", "min_p"):
        if hasattr(cfg, name):
            setattr(cfg, name, None)
    cfg.num_beams = 1
    cfg.pad_token_id = pad_token_id
    if cfg.eos_token_id is None:
        cfg.eos_token_id = tokenizer.eos_token_id
    cfg.use_cache = True
    return cfg


# generation_config fields that add a logits processor or a stopping rule to greedy decoding: where any
# is set, generation goes through `model.generate`, which applies them.
_PROCESSOR_FIELDS = {
    "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None, "min_length": 0, "min_new_tokens": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "sequence_bias": None, "exponential_decay_length_penalty": None, "renormalize_logits": False,
    "guidance_scale": None, "max_time": None, "stop_strings": None, "diversity_penalty": 0.0,
    "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "watermarking_config": None, "assistant_model": None,
    "prompt_lookup_num_tokens": None,
}  # fmt: skip


def _plain_greedy(model, cfg) -> bool:
    """Whether greedy decoding here is argmax of the last logits and nothing else (see `_greedy_stream`)."""
    if getattr(model.config, "is_encoder_decoder", False) or not hasattr(model, "get_decoder"):
        return False
    return all(getattr(cfg, name, default) in (default, None) for name, default in _PROCESSOR_FIELDS.items())


def _left_pad(x: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n == 0:
        return x
    shape = list(x.shape)
    shape[dim] = n
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def _join_caches(cache, attention, new_cache, new_attention):
    """Rows of ``new_cache`` appended to ``cache``, the shorter one left-padded (masked) to the other's length."""
    t, w = attention.shape[1], new_attention.shape[1]
    for layer, new in zip(cache.layers, new_cache.layers):
        for name in ("keys", "values"):
            old_rows, new_rows = getattr(layer, name), getattr(new, name)
            joined = [_left_pad(old_rows, max(0, w - t), 2), _left_pad(new_rows, max(0, t - w), 2)]
            setattr(layer, name, torch.cat(joined))
    return torch.cat([_left_pad(attention, max(0, w - t), 1), _left_pad(new_attention, max(0, t - w), 1)])


def _greedy_stream(
    model,
    prompts: list[list[int]],
    budgets: list[int],
    *,
    batch_size: int,
    pad: int,
    eos_ids: set[int],
    device,
    progress: Progress = None,
) -> tuple[list[list[int]], int]:
    """Greedy decoding of ``prompts`` (each to its EOS or its budget) with at most ``batch_size`` rows in flight.

    ``model.generate`` keeps every row of a batch in each forward until the batch's longest answer ends
    (finished rows decode padding), so a batch costs its longest answer in steps. Here a row leaves the
    batch and the KV cache at its EOS, and once a quarter of the rows are free the next prompts are
    prefilled and join the running batch (their cache left-padded to its length, or it to theirs; padding
    is masked), so the number of decoding steps follows the answers' total length instead of each
    batch's longest. Same inputs per row as ``generate`` builds (left padding, positions from the
    attention mask's cumulative sum); a row's tokens are the argmax of its last logits, EOS included.
    Returns the tokens and the number of prefills.
    """
    from transformers import DynamicCache

    out: list[list[int]] = [[] for _ in prompts]
    queue = list(range(len(prompts)))
    cache = attention = last = nxt = None
    rows: list[int] = []
    prefills = 0
    refill_at = max(1, batch_size // 4)
    # A decoding step's mask, built here as the [B, 1, 1, T] bool mask sdpa reads (True: attend), which
    # transformers passes through as it is: from the 2-D padding mask it would build the same mask
    # anew at every step (~10% of a step at TOFU's shapes on CPU). Other attention kernels read other
    # masks, so they get the 2-D one.
    sdpa = getattr(model.config, "_attn_implementation", None) == "sdpa"
    while queue or rows:
        if queue and (not rows or batch_size - len(rows) >= min(refill_at, len(queue))):
            new = queue[: batch_size - len(rows)]
            del queue[: len(new)]
            ids, mask = (x.to(device) for x in _left_padded([prompts[i] for i in new], pad))
            positions = (mask.cumsum(-1) - 1).clamp_(min=0)
            new_cache = DynamicCache()
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=new_cache,
                use_cache=True, logits_to_keep=1,
            ).logits  # fmt: skip
            prefills += 1
            if not _plain_dynamic(new_cache):
                raise TypeError(
                    "not a plain DynamicCache (sliding window, quantised, ...)"
                )  # generate() instead
            tokens = logits[:, -1].argmax(-1)
            if cache is None:
                cache, attention, last, nxt = new_cache, mask, positions[:, -1], tokens
            else:
                attention = _join_caches(cache, attention, new_cache, mask)
                last, nxt = torch.cat([last, positions[:, -1]]), torch.cat([nxt, tokens])
            rows += new
            fresh = slice(len(rows) - len(new), len(rows))
        else:
            attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], dim=1)
            last = last + 1
            logits = model(
                input_ids=nxt[:, None], attention_mask=attention.bool()[:, None, None, :] if sdpa else attention,
                position_ids=last[:, None], past_key_values=cache, use_cache=True,
            ).logits  # fmt: skip
            nxt = logits[:, -1].argmax(-1)
            fresh = slice(0, len(rows))
        for r, t in zip(rows[fresh], nxt[fresh].tolist()):
            out[r].append(t)
        # On the tokens just copied to the host: a row not refreshed this step passed this test at its
        # last token already.
        kept = [i for i, r in enumerate(rows) if out[r][-1] not in eos_ids and len(out[r]) < budgets[r]]
        if len(kept) < len(rows):
            if progress is not None:
                progress(len(rows) - len(kept))
            rows = [rows[i] for i in kept]
            if not rows:
                cache = attention = last = nxt = None
                continue
            idx = torch.tensor(kept, device=device)
            cache.batch_select_indices(idx)
            attention, nxt, last = attention[idx], nxt[idx], last[idx]
            start = int(attention.any(0).nonzero()[0])  # columns no remaining row attends to
            if start:
                for layer in cache.layers:  # DynamicCache crops on the right only
                    layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
                attention = attention[:, start:]
    return out, prefills


def _left_padded(prompts: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of ``prompts`` left-padded to the longest (as ``generate`` takes them)."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    return ids, mask


@torch.inference_mode()
def generate_token_ids(
    model,
    tokenizer,
    prompt_ids: Sequence[list[int]],
    *,
    max_new_tokens: int,
    max_total_length: int | None = None,
    stop_strings: Sequence[str] = (),
    batch_size: int = 16,
    progress: Progress = None,
    stats: dict | None = None,
) -> list[list[int]]:
    """Greedy continuations (new token ids only) of tokenised prompts, batched with left padding.

    ``max_total_length`` (original TOFU's ``max_length=200``) caps prompt + new tokens per item:
    each item gets ``min(max_new_tokens, max_total_length - len(prompt))`` new tokens. Original
    TOFU subtracted the *padded batch* length instead; per item equals it at batch size 1 and keeps
    results independent of batching. Greedy decoding is prefix-stable, so generating to the batch's
    largest budget and cutting each row to its own is exact.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    cfg = _greedy_config(model, tokenizer, pad)
    budgets = [
        max_new_tokens if max_total_length is None else max(0, min(max_new_tokens, max_total_length - len(p)))
        for p in prompt_ids
    ]
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]), reverse=True)
    device = _model_device(model)
    out: list[list[int]] = [[] for _ in prompt_ids]
    extra = {"stop_strings": list(stop_strings), "tokenizer": tokenizer} if stop_strings else {}
    eos_cfg = cfg.eos_token_id
    eos = {eos_cfg} if isinstance(eos_cfg, int) else set(eos_cfg or ())
    fast = bool(eos) and not stop_strings and _plain_greedy(model, cfg)
    live = [i for i in order if budgets[i] > 0 and len(prompt_ids[i]) > 0]
    if fast and live:
        try:
            new, prefills = _greedy_stream(
                model, [list(prompt_ids[i]) for i in live], [budgets[i] for i in live], batch_size=batch_size,
                pad=pad, eos_ids=eos, device=device, progress=progress,
            )  # fmt: skip
        except TypeError:  # a forward without position_ids / logits_to_keep, or another cache: generate()
            pass
        else:
            if progress is not None and len(live) < len(order):
                progress(len(order) - len(live))  # the rows with nothing to generate
            for i, tokens in zip(live, new):
                out[i] = tokens
            if stats is not None:
                stats["generate_calls"] = stats.get("generate_calls", 0) + prefills
                stats["generated_sequences"] = stats.get("generated_sequences", 0) + len(live)
            return out
    for b in range(0, len(order), batch_size):
        chunk = [i for i in order[b : b + batch_size]]
        live = [i for i in chunk if budgets[i] > 0 and len(prompt_ids[i]) > 0]
        if live:
            input_ids, attention = _left_padded([prompt_ids[i] for i in live], pad)
            cfg.max_new_tokens = max(budgets[i] for i in live)  # our copy; set here, not as a kwarg
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*generation flags are not valid.*")
                gen = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    generation_config=cfg,
                    **extra,
                )
            new = gen[:, input_ids.shape[1] :].cpu().tolist()
            if stats is not None:
                stats["generate_calls"] = stats.get("generate_calls", 0) + 1
                stats["generated_sequences"] = stats.get("generated_sequences", 0) + len(live)
            for r, i in enumerate(live):
                out[i] = new[r][: budgets[i]]
        if progress is not None:
            progress(len(chunk))
    return out


def generate_texts(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    stop_strings: Sequence[str] = (),
    batch_size: int = 16,
    max_length: int | None = None,
    add_special_tokens: bool = True,
    max_total_length: int | None = None,
    progress: Progress = None,
    stats: dict | None = None,
) -> list[str]:
    """Greedy generations for ``prompts``, post-processed as open-unlearning does (§1.2).

    Each prompt is tokenised on its own (``add_special_tokens``: BOS for tokenizers that use one;
    pass False for chat-template text) and truncated to ``max_length`` tokens from the right, as
    open-unlearning's tag mode does. Decoding stops at EOS or a stop string; the new tokens are
    decoded without special tokens, cut at the decoded EOS string and the stop strings, and stripped.
    """
    prompt_ids = [
        list(tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"])[: max_length or None]
        for p in prompts
    ]
    new_ids = generate_token_ids(
        model,
        tokenizer,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        max_total_length=max_total_length,
        stop_strings=stop_strings,
        batch_size=batch_size,
        progress=progress,
        stats=stats,
    )
    return decode_generations(tokenizer, new_ids, stop_strings=stop_strings)


def decode_generations(
    tokenizer, new_ids: Sequence[list[int]], *, stop_strings: Sequence[str] = ()
) -> list[str]:
    eos_text = tokenizer.decode([tokenizer.eos_token_id]) if tokenizer.eos_token_id is not None else None
    # open-unlearning also asks for clean_up_tokenization_spaces=True; transformers 5 ignores it for
    # BPE tokenizers (with a warning) and it only moves spaces around punctuation, which ROUGE's
    # tokenizer drops, so the tokenizer's default is used.
    texts = tokenizer.batch_decode(list(new_ids), skip_special_tokens=True)
    return [postprocess_generation(t, eos_text=eos_text, stop_strings=stop_strings) for t in texts]
