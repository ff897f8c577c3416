"""The LM head applied to a few positions at a time, so no ``[batch, length, vocab]`` logits are built.

A causal LM's logits are ``head(decoder(x))``. With a 32k-152k vocabulary the ``[B, L, V]`` float32
logits of a batch (8 x 2048 x 128,256 x 4 bytes = 8.4 GB) dwarf everything else a small model
holds, and each full-vocabulary statistic computed from them (log-softmax, its exp, ``p log p``)
adds another tensor of that size. Here the decoder runs once and the head is applied to chunks of
positions sized so that one chunk's float32 logits stay under :data:`CHUNK_BYTES`; every statistic
is reduced per chunk, so peak memory no longer grows with the batch's positions times the vocabulary.

:func:`decoder_states` gets the decoder's output without the full logits: the model is called with
``logits_to_keep=1`` while a hook on the decoder keeps its output, and it is checked once per model
that ``head(that output)`` reproduces the model's own logits (models that scale or soft-cap their
logits after the head, or that do not take ``logits_to_keep``, fail the check; callers then fall back
to the model's logits, still reduced a chunk at a time). The training forward has the same idea
with autograd (:func:`token_logps`).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch.utils.checkpoint import checkpoint

# One chunk's float32 logits stay under this (64 MiB: 130 positions at a 128,256 vocabulary, 524 at 32,000).
CHUNK_BYTES = 64 * 2**20


def chunk_positions(vocab_size: int) -> int:
    """How many positions' float32 logits fit in :data:`CHUNK_BYTES` (at least one)."""
    return max(1, CHUNK_BYTES // (4 * vocab_size))


def head_vocab_size(head: torch.nn.Module) -> int:
    """The head's output size. Not ``weight.shape[0]``: under ZeRO-3 a rank's weight is an empty shard
    outside the forward (``ds_shape`` keeps the full shape)."""
    size = getattr(head, "out_features", None)
    if size:
        return int(size)
    weight = head.weight
    return int(getattr(weight, "ds_shape", weight.shape)[0])


def _decoder(model) -> torch.nn.Module | None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder() if hasattr(base, "get_decoder") else None


def _last_state(output) -> torch.Tensor:
    state = getattr(output, "last_hidden_state", None)
    return state if state is not None else output[0]


def decoder_states(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, **forward
) -> torch.Tensor | None:
    """The ``[B, L, d]`` states the LM head reads, from one forward that builds no full logits.

    ``forward``: more arguments of the model's forward (``past_key_values``, ``position_ids``, ...);
    ``use_cache`` is False unless given.

    None when the model's logits are not ``head(decoder output)`` (checked once per model and cached
    on it) or the model has no decoder/head to reach; the caller then uses ``model(...).logits``.
    """
    decoder, head = _decoder(model), model.get_output_embeddings()
    if decoder is None or head is None or getattr(model, "_alignkit_head_exact", True) is False:
        return None
    store: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output) -> None:  # returns None: the output itself is left as it is
        store.setdefault("out", _last_state(output))

    handle = decoder.register_forward_hook(keep)
    try:
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            **{"use_cache": False, **forward},
            logits_to_keep=1,
        )
    except (TypeError, ValueError):  # a model whose forward does not take logits_to_keep
        model._alignkit_head_exact = False
        return None
    finally:
        handle.remove()
    states = store.get("out")
    if not hasattr(model, "_alignkit_head_exact"):
        model._alignkit_head_exact = bool(
            states is not None
            and out.logits.shape[1] == 1
            and states.shape[:2] == input_ids.shape
            and torch.allclose(head(states[:, -1:]).float(), out.logits.float(), rtol=1e-4, atol=1e-5)
        )
    return states if model._alignkit_head_exact else None


def forward_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, **forward):
    """``(x, head)``: the decoder states and the LM head, or ``(logits, None)`` where the compact
    path does not reproduce the model (see :func:`decoder_states`); :func:`position_stats` reads either.
    ``forward``: as in :func:`decoder_states`."""
    states = decoder_states(model, input_ids, attention_mask, **forward)
    if states is not None:
        return states, model.get_output_embeddings()
    return model(
        input_ids=input_ids, attention_mask=attention_mask, **{"use_cache": False, **forward}
    ).logits, None


def position_stats(x: torch.Tensor, head: torch.nn.Module | None, targets: torch.Tensor, **kwargs):
    """:func:`reduce_logits` of some positions ``x [T, ...]`` of :func:`forward_states`' output, in chunks."""
    if head is not None:
        return head_stats(x, head, targets, **kwargs)
    step = chunk_positions(x.shape[-1])
    return _cat([reduce_logits(c, t, **kw) for c, t, kw in _chunked(x, targets, step, kwargs)])


def _chunked(x: torch.Tensor, targets: torch.Tensor, step: int, kwargs: dict):
    """``(x, targets, kwargs)`` of each chunk of ``step`` positions (a per-position ``argmax`` mask split too)."""
    argmax = kwargs.get("argmax")
    masks = argmax.split(step) if isinstance(argmax, torch.Tensor) else None
    for i, (c, t) in enumerate(zip(x.split(step), targets.split(step))):
        yield c, t, (kwargs if masks is None else {**kwargs, "argmax": masks[i]})


def _cat(parts):
    return tuple(None if part[0] is None else torch.cat(part) for part in zip(*parts))


def reduce_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    vocab_stats: bool = False,
    argmax: bool | torch.Tensor = False,
):
    """Per-position statistics of one chunk of logits ``[T, V]`` in float32 (``p log p`` in place).

    Returns ``(token_logps, mu, var, argmax_ids)``: ``log p(target)``; with ``vocab_stats`` the mean
    and variance of ``log p(v)`` for ``v ~ p`` (Min-K%++'s ``mu``/``var``; ``p log p`` counts 0 where
    ``p`` underflows to 0); with ``argmax`` the most likely token (``argmax`` may be a ``[T]`` bool
    mask: the argmax is taken at those positions only, ``-1`` elsewhere, as it costs a pass over the
    vocabulary). float32 throughout.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    del logits  # the chunk's logits go before p log p is built: at most two [T, V] tensors at a time
    arg = None
    if isinstance(argmax, torch.Tensor):
        arg = torch.full(targets.shape, -1, dtype=torch.long, device=logp.device)
        where = argmax.to(logp.device)
        arg[where] = logp[where].argmax(-1)
    elif argmax:
        arg = logp.argmax(-1)
    token_logps = logp.gather(-1, targets[:, None])[:, 0]
    mu = var = None
    if vocab_stats:
        plogp = logp.exp().mul_(logp).nan_to_num_(nan=0.0)  # 0 * -inf = nan where p underflows: 0
        mu = plogp.sum(-1)
        var = plogp.mul_(logp).nan_to_num_(nan=0.0).sum(-1) - mu.square()
    return token_logps, mu, var, arg


def head_stats(states: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, **kwargs):
    """:func:`reduce_logits` of ``head(states)`` for ``states [T, d]``, a chunk of positions at a time."""
    step = chunk_positions(head_vocab_size(head))
    return _cat([reduce_logits(head(s), t, **kw) for s, t, kw in _chunked(states, targets, step, kwargs)])


def scored_token_logps(
    states: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor, scored: torch.Tensor
) -> torch.Tensor:
    """``[N, T]`` log-probs of ``targets`` where ``scored``, 0 elsewhere, from states ``[N, T, d]``.

    Only the scored positions go through the head, through :func:`token_logps` (a chunk of positions
    at a time): a batch's ``[T, V]`` logits are never held.
    """
    logps = token_logps(states[scored], head, targets[scored])
    # masked_scatter keeps the graph even when no position is scored (a zero, not an error, in backward)
    return logps.new_zeros(scored.shape).masked_scatter(scored, logps)


def _chunk_logps(states: torch.Tensor, targets: torch.Tensor, head: torch.nn.Module) -> torch.Tensor:
    logits = head(states).float()
    return logits.gather(-1, targets[:, None])[:, 0] - logits.logsumexp(-1)


def token_logps(states: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor) -> torch.Tensor:
    """``log_softmax(head(states))[t, targets[t]]`` for ``states [T, d]``, differentiable, in chunks.

    A plain ``nn.Linear`` head (no hooks, no autocast, not a ZeRO-3 shard) goes through
    :class:`_LinearTokenLogps`, which writes its own backward; it keeps every position's probabilities
    for the backward when they fit :func:`hold_bytes`, else recomputes each chunk. Any other head (a LoRA-wrapped one, say): where the whole
    ``[T, V]`` fits one chunk it is computed directly; otherwise each chunk runs under activation
    checkpointing (its logits recomputed in the backward, one more head matmul per chunk).
    """
    step = chunk_positions(head_vocab_size(head))
    if _plain_linear(head):
        fits = states.shape[0] * 4 * head_vocab_size(head) <= max(hold_bytes(head), CHUNK_BYTES)
        held = states.shape[0] if fits and torch.is_grad_enabled() else 0
        return _LinearTokenLogps.apply(states, head.weight, head.bias, targets, step, held)
    if states.shape[0] <= step:
        return _chunk_logps(states, targets, head)
    recompute = torch.is_grad_enabled()
    return torch.cat(
        [
            checkpoint(_chunk_logps, s, t, head, use_reentrant=False)
            if recompute
            else _chunk_logps(s, t, head)
            for s, t in zip(states.split(step), targets.split(step))
        ]
    )


# The training step keeps the scored positions' probabilities from the forward to the backward (no
# head matmul recomputed) when they take at most this many times the head weight's float32 bytes,
# i.e. at most 4 x hidden_size positions: the step already holds the weight, its gradient and two
# AdamW moments of that size, so the head's memory at most doubles (or when they fit one chunk,
# CHUNK_BYTES). Beyond, nothing is kept: every chunk is recomputed and one chunk's logits exist at
# a time (long answers keep their memory low). map_positions keeps its chunks' autograd state within the
# same budget.
HOLD_WEIGHTS = 4


def hold_bytes(head: torch.nn.Module, width: int | None = None) -> int:
    """How many bytes :func:`token_logps` (float32 probabilities) and :func:`map_positions` (autograd
    state) may keep for the backward: :data:`HOLD_WEIGHTS` times the head weight's float32 bytes.
    ``width``: the hidden size, when the weight's own shape does not give it (a ZeRO-3 shard)."""
    width = head.weight.shape[1] if width is None else width
    return int(HOLD_WEIGHTS * 4 * head_vocab_size(head) * width)


def _plain_linear(head: torch.nn.Module) -> bool:
    """A bare ``nn.Linear`` whose weight is a plain tensor that its forward neither gathers nor casts."""
    weight = getattr(head, "weight", None)
    return (
        type(head) is torch.nn.Linear
        and type(weight) is torch.nn.Parameter
        and weight.dim() == 2
        and not hasattr(weight, "ds_shape")  # ZeRO-3 gathers it in module hooks
        and not (head._forward_hooks or head._forward_pre_hooks)
        and not torch.is_autocast_enabled(weight.device.type)
    )


class _LinearTokenLogps(torch.autograd.Function):
    """Per-token log-probs through a linear head, written with their own backward.

    Same values and gradients as autograd of ``log_softmax(linear(x)).gather(targets)`` (the
    gradient of the logits is ``g (onehot - p)``), written by hand as Liger's fused linear
    cross-entropy is (that library has no CPU path): autograd of the chunked formula builds several
    ``[m, V]`` temporaries per chunk (the log-sum-exp's input copy and backward, the gather's zeros,
    their sum) and one ``[V, d]`` weight gradient per chunk. Here the first ``held`` positions form
    one block whose probabilities are computed in place over its logits and kept for the backward
    (no head matmul again); the rest go a chunk of ``step`` positions at a time (one chunk's logits
    exist at a time) and are recomputed in the backward from the saved log-sum-exps. ``p`` is
    ``exp(logits - logsumexp)`` exactly as autograd's log-sum-exp backward computes it, so with one
    block the values and gradients are autograd's bit for bit. The weight's gradient accumulates
    into one buffer.
    """

    @staticmethod
    def forward(ctx, states, weight, bias, targets, step: int, held: int):
        blocks = [(0, min(held, states.shape[0]))] if held > 0 else []
        start = blocks[0][1] if blocks else 0
        blocks += [(i, min(i + step, states.shape[0])) for i in range(start, states.shape[0], step)]
        logps, lses, kept = [], [], None
        for n, (lo, hi) in enumerate(blocks):
            logits = _linear_float(states[lo:hi], weight, bias)
            # torch.logsumexp a chunk at a time (its temporary stays one chunk), as autograd's formula
            lse = torch.cat([c.logsumexp(-1) for c in logits.split(step)])
            logps.append(logits.gather(-1, targets[lo:hi, None])[:, 0] - lse)
            lses.append(lse)
            if n == 0 and held > 0:
                kept = logits.sub_(lse[:, None]).exp_()  # p, in place: what logsumexp's backward computes
        ctx.blocks, ctx.kept = blocks, kept
        none = states.new_zeros(0, dtype=torch.float32)  # no scored position: an empty result
        ctx.save_for_backward(states, weight, bias, targets, torch.cat(lses) if lses else none)
        return torch.cat(logps) if logps else none

    @staticmethod
    def backward(ctx, grad):
        states, weight, bias, targets, lse = ctx.saved_tensors
        blocks, kept = ctx.blocks, ctx.kept
        ctx.kept = None
        grad = grad.float().contiguous()
        grads = _HeadGrads(states, weight, ctx.needs_input_grad[:3])
        for n, (lo, hi) in enumerate(blocks):
            s, t, g = states[lo:hi], targets[lo:hi, None], grad[lo:hi, None]
            if n == 0 and kept is not None:
                p, kept = kept, None
            else:
                p = _linear_float(s, weight, bias).sub_(lse[lo:hi, None]).exp_()
            # d logp[t] / d logits = onehot(t) - p, times the incoming gradient (autograd's sum, in its order)
            grads.add(lo, s, p.mul_(-g).scatter_add_(1, t, g))
        grad_weight, grad_bias = grads.weight, grads.bias
        return (
            grads.states,
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
            None,
            None,
            None,
        )


class _HeadGrads:
    """A linear head's gradients summed over chunks of positions, from each chunk's gradient of the
    logits: the states' rows, and ONE ``[V, d]`` weight gradient (and bias) added to in place, in
    float32 at least; the first chunk's product starts each sum (no ``[V, d]`` zero fill). Shared by
    :class:`_LinearTokenLogps` (in its backward) and :class:`_LinearPositionsMean` (in its forward)."""

    def __init__(self, states: torch.Tensor, weight: torch.Tensor, wants) -> None:
        self.want_states, self.want_weight, self.want_bias = wants
        self.head_weight = weight
        self.acc = torch.promote_types(weight.dtype, torch.float32)
        self.states = torch.empty_like(states) if self.want_states else None
        self.weight = self.bias = None

    def add(self, lo: int, states: torch.Tensor, dlogits: torch.Tensor) -> None:
        """The chunk ``states = all_states[lo : lo + m]`` whose logits have the gradient ``dlogits [m, V]``."""
        if self.want_weight or self.want_bias:
            wide = dlogits.to(self.acc)
            if self.want_weight:
                part = (wide.T, states.to(self.acc))
                self.weight = torch.mm(*part) if self.weight is None else self.weight.addmm_(*part)
            if self.want_bias:
                self.bias = wide.sum(0) if self.bias is None else self.bias.add_(wide.sum(0))
        if self.want_states:
            rows = self.states[lo : lo + states.shape[0]]
            torch.mm(dlogits.to(self.head_weight.dtype), self.head_weight, out=rows)


def _linear_float(states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``linear(states)`` as float32 logits, computed in the weight's dtype (as the head module does)."""
    return torch.nn.functional.linear(states, weight, bias).float()


class HeadLogits:
    """The logits ``head(states)`` of ``states [N, T, d]``, never built whole: a stand-in for an
    ``[N, T, V]`` logits tensor that full-distribution losses read through :func:`map_positions`.

    ``states`` are in the head's dtype. Slicing (``x[rows]``, ``x[:, :t]``) and ``shape`` behave as
    on the logits tensor. The head runs under the grad mode of the moment the object was made (a
    reference's logits stay out of autograd) and inside ``context`` (e.g. the adapters-off
    context of a PEFT reference: its head may carry an adapter too).
    """

    def __init__(
        self,
        states: torch.Tensor,
        head: torch.nn.Module,
        context=None,
        grad: bool | None = None,
        targets: torch.Tensor | None = None,
        seen: torch.Tensor | None = None,
    ):
        self.states, self.head, self.context = states, head, context
        self.grad = torch.is_grad_enabled() if grad is None else grad
        # targets [N, T]: the next tokens whose log-probs token_logps gives. seen [N, T]: their
        # detached log-probs where a fused loss has already computed the logits (NaN elsewhere),
        # shared with every slice of this object (views), so a logged metric costs no head matmul.
        self.targets = targets
        self.seen = seen
        if seen is None and targets is not None:
            self.seen = torch.full(targets.shape, float("nan"), device=states.device)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((*self.states.shape[:-1], head_vocab_size(self.head)))

    def __getitem__(self, index) -> HeadLogits:
        sliced = (None if t is None else t[index] for t in (self.targets, self.seen))
        return HeadLogits(self.states[index], self.head, self.context, self.grad, *sliced)

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """``head(states)`` for a chunk of positions ``[T, d]``."""
        with self._mode():
            return self.head(states)

    def token_logps(self, scored: torch.Tensor) -> torch.Tensor:
        """``[N, T]`` log-probs of ``targets`` where ``scored``, 0 elsewhere (:func:`scored_token_logps`:
        only the scored positions go through the head). Without autograd, from ``seen`` where a fused
        loss has computed them all (no head matmul)."""
        if not self.builds_graph and self.seen is not None:
            known = self.seen[scored]
            if not known.isnan().any():
                return self.seen.new_zeros(scored.shape).masked_scatter(scored, known)
        with self._mode():
            return scored_token_logps(self.states, self.head, self.targets, scored)

    @property
    def builds_graph(self) -> bool:
        """Whether the head, run now, would be recorded by autograd (grad on now and when made)."""
        return self.grad and torch.is_grad_enabled()

    @contextmanager
    def _mode(self):
        with torch.set_grad_enabled(self.builds_graph), self.context() if self.context else nullcontext():
            yield


def _flat_sources(sources: tuple, rows: torch.Tensor | None, extras: tuple):
    """``(flat, flat_extras, heads)``: :func:`map_positions`' inputs at the selected positions, flat
    (states of a :class:`HeadLogits`), and each source's :class:`HeadLogits` (None for a tensor)."""
    heads = [s if isinstance(s, HeadLogits) else None for s in sources]
    flat = [_flat_rows(s if h is None else s.states, rows) for s, h in zip(sources, heads)]
    return flat, [_flat_rows(e, rows) for e in extras], heads


def _chunk_logits(heads: list, parts) -> list[torch.Tensor]:
    """The logits of one chunk: ``parts`` are the flat sources' chunks (states of a lazy source)."""
    return [h.logits(p) if h is not None else p for h, p in zip(heads, parts[: len(heads)])]


def _flat_rows(x, rows: torch.Tensor | None):
    """``x [N, T, ...]`` -> ``[M, ...]``: the positions where ``rows`` is true (all when None)."""
    if rows is None:
        return x.reshape(-1, *x.shape[2:])
    return x[rows.bool()]


class _SavedBytes:
    """A ``saved_tensors_hooks`` pack hook that tallies the bytes autograd saves for the backward in
    storage of its own (the inputs' and the head parameters' storage, held anyway, does not count)."""

    def __init__(self, known):
        self.seen = {t.untyped_storage().data_ptr() for t in known}
        self.bytes = 0

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.seen:
            self.seen.add(storage.data_ptr())
            self.bytes += storage.nbytes()
        return tensor


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def map_positions(fn, sources: tuple, rows: torch.Tensor | None, extras: tuple = ()) -> torch.Tensor:
    """``fn(*logits, *extra)`` over the positions ``rows`` selects (all when None), as a ``[M]`` tensor.

    ``sources`` are ``[N, T, V]`` logits tensors or :class:`HeadLogits`; ``extras`` are ``[N, T]``
    per-position tensors (labels, flags). ``fn`` maps ``[m, V]`` logits chunks (and ``[m]`` extras)
    to ``[m]`` per-position values and must treat positions independently. With only tensors it is
    called once on all positions (the plain formula). With :class:`HeadLogits` the logits of at most
    :func:`chunk_positions` positions exist at a time. Under autograd the first chunks keep what
    their backward needs (the head's and the term's saved tensors, several ``[m, V]`` each: their
    bytes are tallied as autograd saves them) while all kept chunks' bytes fit :func:`hold_bytes`
    (the first chunk always): nothing of theirs is recomputed. The chunks past that budget run under
    activation checkpointing (head and term recomputed in the backward, one chunk's intermediates
    at a time). Values and gradients are those of the one-call formula either way.
    """
    lazy = [isinstance(s, HeadLogits) for s in sources]
    flat, flat_extras, heads = _flat_sources(sources, rows, extras)
    if not any(lazy):
        return fn(*flat, *flat_extras)

    def chunk_values(*parts):
        return fn(*_chunk_logits(heads, parts), *parts[len(heads) :])

    first = sources[lazy.index(True)]
    step = chunk_positions(first.shape[-1])
    count = flat[0].shape[0]
    if count <= step:
        return chunk_values(*flat, *flat_extras)
    known = [*flat, *flat_extras, *(p for h in heads if h is not None for p in h.head.parameters())]
    budget, kept, kept_positions = hold_bytes(first.head, first.states.shape[-1]), 0, 0
    values = []
    for start in range(0, count, step):
        parts = [p[start : start + step] for p in (*flat, *flat_extras)]
        size = parts[0].shape[0]
        if not torch.is_grad_enabled():
            values.append(chunk_values(*parts))
        elif kept_positions == 0 or kept + kept * size / kept_positions <= budget:
            tally = _SavedBytes(known)
            with torch.autograd.graph.saved_tensors_hooks(tally, _same):
                values.append(chunk_values(*parts))
            kept, kept_positions = kept + tally.bytes, kept_positions + size
        else:
            values.append(checkpoint(chunk_values, *parts, use_reentrant=False))
    return torch.cat(values)


def mean_positions(fn, sources: tuple, rows: torch.Tensor | None, extras: tuple = (), *, value_and_grad=None):
    """``map_positions(fn, sources, rows, extras).mean()`` (0 where no position is selected).

    ``value_and_grad``, when given, maps the same chunk inputs as ``fn`` to ``(fn's values [m], their
    gradient [m, V] with respect to the first source's logits, that source's log-softmax [m, V])``
    (each position's value depends on its own logits only; the log-softmax fills
    :class:`HeadLogits`' ``seen``). Where the first source is :class:`HeadLogits` through a plain
    linear head (:func:`_plain_linear`: not a LoRA/PEFT wrapper, not a ZeRO-3 shard, no autocast)
    and the step records autograd, the mean then goes through :class:`_LinearPositionsMean`: the head's gradients
    are accumulated chunk by chunk during the forward, so nothing is recomputed or kept for the
    backward whatever the number of chunks. Elsewhere :func:`map_positions` (its budgeted keep and
    recompute). The other sources get no gradient through ``value_and_grad`` (the losses using it
    detach them: a frozen reference, a detached target).
    """
    first = sources[0]
    fused = (
        value_and_grad is not None
        and isinstance(first, HeadLogits)
        and first.builds_graph
        and _plain_linear(first.head)
        and any(t is not None and t.requires_grad for t in (first.states, first.head.weight, first.head.bias))
    )
    if fused:
        flat, flat_extras, heads = _flat_sources(sources, rows, extras)
        count = flat[0].shape[0]
        if count:
            states, others = flat[0], [*flat[1:], *flat_extras]

            seen = [_Seen(h, rows) if h is not None and h.seen is not None else None for h in heads]

            def chunk_terms(lo: int, hi: int, logits: torch.Tensor):
                parts = [p[lo:hi] for p in others]
                chunk = [logits, *_chunk_logits(heads[1:], parts)]
                for note, source_logits in zip(seen[1:], chunk[1:]):
                    if note is not None:
                        note.logits(lo, hi, source_logits)
                values, grad, logp = value_and_grad(*chunk, *parts[len(heads) - 1 :])
                if seen[0] is not None:
                    seen[0].logps(lo, hi, logp)
                return values, grad

            step = chunk_positions(head_vocab_size(first.head))
            head = first.head
            loss = _LinearPositionsMean.apply(states, head.weight, head.bias, chunk_terms, step)
            for note in seen:
                if note is not None:
                    note.keep()
            return loss
    values = map_positions(fn, sources, rows, extras)
    return values.mean() if values.numel() else values.sum()


class _Seen:
    """Notes the detached log-probs of a :class:`HeadLogits`' targets at the positions (selected by
    ``rows``; a negative target: not wanted) whose logits go by, a chunk at a time, and keeps them
    in its ``seen`` (``keep``)."""

    def __init__(self, source: HeadLogits, rows: torch.Tensor | None):
        self.source, self.rows = source, rows
        self.targets = _flat_rows(source.targets, rows)
        self.values = torch.full(self.targets.shape, float("nan"), device=self.targets.device)

    def logits(self, lo: int, hi: int, logits: torch.Tensor) -> None:
        """From a chunk's logits: ``logit[target] - logsumexp`` (:class:`_LinearTokenLogps`' formula),
        on the wanted positions only (the log-sum-exp costs about half a head matmul per position)."""
        targets = self.targets[lo:hi]
        where = (targets >= 0).nonzero()[:, 0]
        z = logits.detach().index_select(0, where).float()
        self.values[lo + where] = z.gather(-1, targets[where, None])[:, 0] - z.logsumexp(-1)

    def logps(self, lo: int, hi: int, logp: torch.Tensor) -> None:
        """From a chunk's log-softmax, which the loss has computed anyway."""
        targets = self.targets[lo:hi]
        picked = logp.detach().gather(-1, targets.clamp_min(0)[:, None])[:, 0]
        self.values[lo:hi] = torch.where(targets >= 0, picked, self.values[lo:hi])

    def keep(self) -> None:
        seen = self.source.seen
        if self.rows is None:
            seen.copy_(self.values.view(seen.shape))
        else:
            seen[self.rows.bool()] = self.values


class _LinearPositionsMean(torch.autograd.Function):
    """The mean over positions of per-position terms of ``linear(states)``, with the head's gradients
    accumulated in the forward (the idea of Liger's fused linear cross-entropy; written here for CPU
    as well, that library has none).

    Per chunk of ``step`` positions the forward computes the logits, ``chunk_terms``' values and their
    gradient ``g`` with respect to the logits (written per loss, checked against autograd in the
    tests), then at once ``grad_states[chunk] = g @ W`` and ``grad_W += g^T @ states[chunk]`` into
    ONE ``[V, d]`` buffer (in place after the first chunk) and frees the chunk. The backward only
    scales the stored gradients by the incoming one (a scalar: hence a mean, not per-position
    values). So each position goes through the head once, no logits or probabilities are kept, and
    autograd builds no ``[V, d]`` gradient per chunk. Not twice differentiable (no loss here needs it).
    """

    @staticmethod
    def forward(ctx, states, weight, bias, chunk_terms, step: int):
        count = states.shape[0]
        grads = _HeadGrads(states, weight, ctx.needs_input_grad[:3])
        values = []
        for lo in range(0, count, step):
            s = states[lo : lo + step]
            value, grad = chunk_terms(lo, lo + s.shape[0], _linear_float(s, weight, bias))
            values.append(value)
            # the mean's 1/M, applied to the logits' gradient as autograd does
            grads.add(lo, s, grad.div_(count))
            del grad
        ctx.grads = grads.states, grads.weight, grads.bias
        ctx.dtypes = weight.dtype, getattr(bias, "dtype", None)
        return torch.cat(values).mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (grad_states, grad_weight, grad_bias), (weight_dtype, bias_dtype) = ctx.grads, ctx.dtypes
        ctx.grads = None

        # in place: the buffers are ours
        def scaled(g: torch.Tensor | None, dtype=None) -> torch.Tensor | None:
            return None if g is None else g.mul_(grad.to(g.dtype)).to(dtype or g.dtype)

        return (
            scaled(grad_states),
            scaled(grad_weight, weight_dtype),
            scaled(grad_bias, bias_dtype),
            None,
            None,
        )
