"""One forward over every row of a collated batch, and the tensors losses read from it."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from alignkit._trl_compat import selective_log_softmax
from alignkit.models.head import HeadLogits, scored_token_logps
from alignkit.trainers import shared_prompt

# The `auto` rule of `fused_lm_head`. On CPU TRL's kernel scores every position in tiles (its compact,
# valid-positions-only path needs Triton) and measured slower than alignkit's compact head (below) at every
# vocabulary tried: tiny Llama, hidden 256, 4 layers, 8 x 128 tokens of which half completion, fwd+bwd,
# 1 thread: 1.4x at vocab 1k, 2.7x at 32k, 3.9x at 128k (and 1.7x for a whole NPO step at 4k, see
# `scripts/bench_npo_step.py`). On CUDA/XPU it never builds the [rows, length, vocab] logits, which
# dominate activation memory once the vocabulary is large (8 x 512 tokens x 128k vocab = 2.1 GB in fp32);
# TRL's own DPOTrainer always uses it there. Not measured on a GPU in this repository (none available).
FUSED_HEAD_DEVICES = ("cuda", "xpu")
FUSED_HEAD_MIN_VOCAB = 32000


def resolve_fused_lm_head(
    setting: str, *, device_type: str, vocab_size: int, available: bool
) -> tuple[bool, str]:
    """Whether TRL's fused LM head runs (``setting`` is ``auto``, ``on`` or ``off``), and why, in words."""
    if setting == "on":
        if not available:
            raise ValueError(
                "`fused_lm_head='on'` needs TRL's fused LM head (trl >= 1.16), which this TRL lacks; "
                "set fused_lm_head='auto' or 'off'."
            )
        return True, "on (fused_lm_head='on')"
    if setting == "off":
        return False, "off (fused_lm_head='off')"
    if not available:
        return False, "off (auto: this TRL has no fused LM head)"
    if device_type not in FUSED_HEAD_DEVICES:
        return False, f"off (auto: device {device_type}, the fused head is slower off CUDA/XPU)"
    if vocab_size < FUSED_HEAD_MIN_VOCAB:
        return False, f"off (auto: vocabulary {vocab_size} < {FUSED_HEAD_MIN_VOCAB})"
    return True, f"on (auto: device {device_type}, vocabulary {vocab_size} >= {FUSED_HEAD_MIN_VOCAB})"


@dataclass
class Needs:
    """What a method's loss reads, declared once on its trainer.

    ``reference``: ``none``; ``seq`` (summed sequence log-probs, cacheable); ``token`` (per-token
    log-probs); ``logits`` (full-vocabulary reference logits on the main rows).
    ``logits``: the policy's full logits on the main rows (otherwise TRL's fused head gives
    log-probs without materialising ``[N, L, V]``).
    ``retain``: ``optional``, ``required`` or ``never``.
    ``hidden``: the output of one decoder block (the trainer's ``hidden_layer()`` names it), captured by a
    forward hook during the shared forward; with ``reference="hidden"`` the reference's activations at
    the same block are computed on the retain rows.
    """

    reference: str = "none"
    logits: bool = False
    retain: str = "optional"
    hidden: bool = False


@dataclass
class RowOutputs:
    """Per-token quantities of a set of rows, shifted so position t scores token t+1.

    ``token_logps`` of rows whose logits are :class:`~alignkit.models.head.HeadLogits` are computed
    from them when first read, not in the forward: a loss that reads only the full distributions
    (UNDIAL, retain KL) costs no head matmul for them. Read without gradient (the trainer's logged
    metrics), they are computed without autograd and computed again by a later read that needs it.
    """

    stored_logps: torch.Tensor | None  # [N, L-1] token_logps; None: computed from `logits` when read
    mask: torch.Tensor  # [N, L-1] bool, 1 on completion tokens
    labels: torch.Tensor  # [N, L-1] next-token ids
    logits: torch.Tensor | HeadLogits | None = None  # [N, L-1, V] only when asked for
    hidden: torch.Tensor | None = None  # [N, L, d] a decoder block's output (unshifted), when asked for
    hidden_mask: torch.Tensor | None = None  # [N, L] bool, the completion tokens (unshifted)
    stored_graph: bool = True  # whether stored_logps carry the autograd graph a read may need

    @property
    def token_logps(self) -> torch.Tensor:  # [N, L-1], 0 where mask is 0
        lazy = isinstance(self.logits, HeadLogits)
        if lazy and (self.stored_logps is None or (not self.stored_graph and self.logits.builds_graph)):
            self.stored_graph = self.logits.builds_graph or not self.logits.grad
            self.stored_logps = self.logits.token_logps(self.mask)
        return self.stored_logps

    @property
    def seq_logps(self) -> torch.Tensor:  # [N]
        return self.token_logps.sum(-1)

    @property
    def lengths(self) -> torch.Tensor:  # [N]
        return self.mask.sum(-1)

    def rows(self, sl: slice) -> RowOutputs:
        return RowOutputs(*(None if t is None else t[sl] for t in self._tensors()), self.stored_graph)

    def truncate(self, length: int) -> RowOutputs:
        """The first ``length`` tokens of every row (shifted tensors get ``length - 1`` positions).

        Rows of one batch are padded to the longest row of the whole forward (forget + retain); a term
        that averages over "all positions" must see only the padding its own rows would have alone.
        """
        shifted = (self.stored_logps, self.mask, self.labels, self.logits)
        return RowOutputs(
            *(None if t is None else t[:, : length - 1] for t in shifted),
            *(None if t is None else t[:, :length] for t in (self.hidden, self.hidden_mask)),
            self.stored_graph,
        )

    def _tensors(self):
        return (self.stored_logps, self.mask, self.labels, self.logits, self.hidden, self.hidden_mask)


@dataclass
class ForwardOutput:
    """What a method's loss function is given: main rows, optional reference and retain rows."""

    policy: RowOutputs
    group_sizes: torch.Tensor  # [B]
    roles: torch.Tensor  # [N_main]
    scores: torch.Tensor  # [N_main]
    ref: RowOutputs | None = None
    stored_ref_seq_logps: torch.Tensor | None = None  # [N_main] precomputed (cache, D2O's draw)
    retain: RowOutputs | None = None
    retain_ref: RowOutputs | None = None
    prompt_mask: torch.Tensor | None = None  # [N_main, L] bool prompt tokens; set by methods that pool them
    ref_logps_from_ref: bool = False  # ref_seq_logps are `ref`'s, read when needed (not precomputed)

    @property
    def ref_seq_logps(self) -> torch.Tensor | None:  # [N_main]
        return self.ref.seq_logps if self.ref_logps_from_ref else self.stored_ref_seq_logps

    @ref_seq_logps.setter
    def ref_seq_logps(self, value: torch.Tensor | None) -> None:
        self.stored_ref_seq_logps = value


@contextmanager
def capture_output(module: torch.nn.Module):
    """Store ``module``'s forward output (first element of a tuple) in the yielded dict under ``"out"``."""
    store: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        # Recomputation under activation checkpointing calls the hook again; the first value is the one
        # the loss reads (the recomputed one is identical).
        store.setdefault("out", output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def _innermost(model):
    """The model under DDP/DeepSpeed wrappers (a PEFT model stays: it forwards attribute lookups)."""
    while hasattr(model, "module"):
        model = model.module
    return model


def head_logits(head: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head applied outside the model's forward, in the head's own dtype.

    Under mixed precision accelerate wraps the model's forward in autocast and returns its outputs
    (hidden states included) in float32; the head called here runs outside that autocast, so a
    bf16/fp16 head would meet a float32 input (``--dtype bfloat16 --bf16 true`` on CPU failed with
    "expected m1 and m2 to have the same dtype"). Casting back is exact: the values were that dtype.
    """
    return head(in_head_dtype(head, hidden))


def in_head_dtype(head: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """``hidden`` in the head's weight dtype (see :func:`head_logits` for why)."""
    weight = getattr(head, "weight", None)
    return hidden.to(weight.dtype) if weight is not None else hidden


@torch.no_grad()
def _compact_head_exact(model, ids: torch.Tensor, att: torch.Tensor) -> bool:
    """Whether ``lm_head(hidden_states[-1])`` reproduces the model's own logits, checked once per model.

    True for plain causal LMs (Llama, Qwen, Mistral, ...). Models that scale, soft-cap or otherwise
    transform the logits after the LM head, that do not accept ``logits_to_keep`` or whose last hidden
    state is not the one fed to the head fail the check and keep the full-logits path.
    """
    inner = _innermost(model)
    cached = getattr(inner, "_alignkit_compact_head", None)
    if cached is None:
        try:
            out = model(
                input_ids=ids[:1],
                attention_mask=att[:1],
                use_cache=False,
                output_hidden_states=True,
                logits_to_keep=1,
            )
            head = inner.get_output_embeddings()
            cached = bool(
                out.hidden_states is not None
                and out.logits.shape[1] == 1
                and torch.allclose(
                    head_logits(head, out.hidden_states[-1][:, -1:]).float(),
                    out.logits.float(),
                    rtol=1e-4,
                    atol=1e-5,
                )
            )
        except (TypeError, ValueError, AttributeError):
            cached = False
        inner._alignkit_compact_head = cached
    return cached


def row_outputs(
    model,
    batch: dict,
    *,
    want_logits: bool,
    fused: bool,
    hidden_module: torch.nn.Module | None = None,
    share_prompt: bool | str = False,
    head_context=None,
) -> RowOutputs:
    """Forward every row of ``batch`` through ``model`` (the wrapped one, so DDP/ZeRO hooks run).

    With ``want_logits`` the rows' logits are returned: a :class:`~alignkit.models.head.HeadLogits`
    (the last hidden states and the head; the losses apply the head a chunk of positions at a time,
    inside ``head_context`` when given) where the compact head reproduces the model, else the full
    ``[N, L-1, V]`` tensor. Otherwise only the completion
    positions go through the LM head: TRL's fused head (``fused``; on CUDA it projects only those
    positions, in tiles) or, by default, a compact head: the model runs with ``logits_to_keep=1`` and
    ``output_hidden_states``, and the LM head is applied to the last hidden state at the completion
    positions only, which skips the prompt and padding positions' share of the head's matmul and
    log-softmax (``_compact_head_exact`` checks once that this reproduces the model's logits). Columns
    that are padding in every row are cut first (a subset of a batch, such as the rows sent through the
    reference, is often narrower). The outputs keep the batch's shape.
    ``hidden_module``: also return that module's output from the same forward (a hook, no second pass).
    ``share_prompt`` (True/"on", "auto", False/"off"): rows of one prompt go through as one packed row
    (``shared_prompt``), when neither logits nor hidden states are wanted and the batch has a list of two
    or more; under "auto" only where ``shared_prompt.worth_packing`` judges the batch's saving worth it.
    """
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    mask = batch["completion_mask"][:, 1:].bool()
    labels = input_ids[:, 1:]
    if share_prompt not in (False, "off") and not want_logits and hidden_module is None:
        packed_logps = _shared_prompt_logps(model, batch, fused, auto=share_prompt == "auto")
        if packed_logps is not None:
            return RowOutputs(packed_logps.masked_fill(~mask, 0.0), mask, labels)
    # Right padding (the collator's): nothing after the longest row can be scored. Kept whole when logits
    # or a block's activations are returned: terms over "all positions" (retain KL) read the padding too.
    whole = want_logits or hidden_module is not None
    width = input_ids.shape[1] if whole else max(int(attention_mask.sum(-1).max()), 2)
    ids, att, scored = input_ids[:, :width], attention_mask[:, :width], mask[:, : width - 1]
    logits = None
    # Decided before the capture starts: the one-time check runs a forward of its own.
    compact = not (want_logits or fused) and _compact_head_exact(model, ids, att)
    lazy_logits = want_logits and _compact_head_exact(model, ids, att)
    with capture_output(hidden_module) if hidden_module is not None else _no_capture() as captured:
        if lazy_logits:
            states, head = _last_states(model, ids, att)
            # The full-distribution losses read these through models.head.map_positions, a chunk of
            # positions at a time: the [N, L-1, V] logits are never built. The per-token log-probs
            # come from them when read (RowOutputs.token_logps).
            # targets -1 where not scored: a fused loss notes the log-probs of the scored positions only
            targets = labels.masked_fill(~mask, -1)
            logits = HeadLogits(in_head_dtype(head, states[:, :-1]), head, head_context, targets=targets)
            token_logps = None
        elif want_logits:
            logits = model(input_ids=ids, attention_mask=att, use_cache=False).logits[:, :-1]
            token_logps = selective_log_softmax(logits.float(), labels[:, : width - 1])
        elif fused:
            fused_labels = ids.masked_fill(batch["completion_mask"][:, :width] == 0, -100)
            token_logps = model(
                input_ids=ids, attention_mask=att, labels=fused_labels, fused_lm_head=True
            ).log_probs
        elif compact:
            states, head = _last_states(model, ids, att)
            token_logps = scored_token_logps(
                in_head_dtype(head, states[:, :-1]), head, labels[:, : width - 1], scored
            )
        else:
            full = model(input_ids=ids, attention_mask=att, use_cache=False).logits[:, :-1]
            token_logps = selective_log_softmax(full.float(), labels[:, : width - 1])
    if token_logps is not None:
        token_logps = F.pad(token_logps, (0, mask.shape[1] - token_logps.shape[1])).masked_fill(~mask, 0.0)
    hidden = captured.get("out")
    return RowOutputs(
        token_logps,
        mask,
        labels,
        logits,
        hidden,
        batch["completion_mask"].bool() if hidden is not None else None,
    )


def _last_states(model, ids: torch.Tensor, att: torch.Tensor, **kwargs):
    """``(last hidden states [N, L, d], LM head)`` from a forward whose logits cover one position only."""
    out = model(
        input_ids=ids,
        attention_mask=att,
        use_cache=False,
        output_hidden_states=True,
        logits_to_keep=1,
        **kwargs,
    )
    return out.hidden_states[-1], _innermost(model).get_output_embeddings()


def _shared_prompt_logps(model, batch: dict, fused: bool, auto: bool = False) -> torch.Tensor | None:
    """Per-token log-probs ``[N, L-1]`` from the packed forward, or None where packing does not apply
    (or, with ``auto``, does not pay)."""
    implementation = shared_prompt.attention_implementation(model)
    if implementation not in shared_prompt.MASKABLE:
        return None
    hidden_size = getattr(_innermost(model).config, "hidden_size", None) if auto else None
    if auto and not hidden_size:
        return None
    packed = shared_prompt.pack(batch, hidden_size)
    if packed is None:
        return None
    dtype = next(model.parameters()).dtype
    kwargs = dict(
        input_ids=packed.input_ids,
        attention_mask=packed.attention_mask(implementation, dtype),
        position_ids=packed.position_ids,
    )
    if fused:
        per_position = model(**kwargs, shift_labels=packed.labels, fused_lm_head=True).log_probs
    elif _compact_head_exact(model, batch["input_ids"], batch["attention_mask"]):
        # Only the completion positions go through the head, in chunks (as the flat compact head).
        states, head = _last_states(model, kwargs.pop("input_ids"), kwargs.pop("attention_mask"), **kwargs)
        scored = packed.labels != shared_prompt.IGNORE
        per_position = scored_token_logps(in_head_dtype(head, states), head, packed.labels, scored)
    else:
        logits = model(**kwargs, use_cache=False).logits.float()
        per_position = selective_log_softmax(logits, packed.labels.clamp(min=0))
    return packed.unpack(per_position, tuple(batch["completion_mask"][:, 1:].shape))


@contextmanager
def _no_capture():
    yield {}
