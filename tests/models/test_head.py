"""The LM head in chunks of positions: same values as the unchunked formula, no full-vocabulary tensor.

The expected values are written out here from the definitions (full log-softmax, ``p = exp(log p)``,
``mu = sum p log p``, ``var = sum p (log p)^2 - mu^2``), independently of ``alignkit.models.head``.
All in float32, as the statistics always were. From given logits the chunked values are bit-identical.
Where the head runs on a chunk of positions its matmul may round differently from the whole batch's
(a different kernel blocking); ``var = sum p (log p)^2 - mu^2`` (open-unlearning's formula) is a
difference of two numbers near ``(log V)^2``, so there it is compared to 1e-6 of that second moment.
The chunk budget is shrunk so every test runs over many chunks.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from alignkit.eval import mia
from alignkit.eval.scoring import score_token_ids
from alignkit.models import head as head_mod

TEXTS = [
    "The quick brown fox jumps over the lazy dog and runs into the wood.",
    "A short one.",
    "Ministers met on Tuesday to discuss the budget and the new rail line to the north.",
]
CHUNK = 5  # positions per chunk in these tests


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    def shrink(vocab_size: int) -> None:
        monkeypatch.setattr(head_mod, "CHUNK_BYTES", CHUNK * 4 * vocab_size)
        monkeypatch.setattr(head_mod, "HOLD_WEIGHTS", 0)  # no probabilities kept beyond a chunk

    return shrink


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.models import build_tiny_model

    path = build_tiny_model(TEXTS * 4, tmp_path_factory.mktemp("head_tiny"), vocab_size=300, seed=0)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def unchunked(logits: torch.Tensor, targets: torch.Tensor):
    logp = torch.log_softmax(logits.float(), dim=-1)  # float32, as the statistics always were
    p = logp.exp()
    plogp = torch.where(p > 0, p * logp, torch.zeros_like(p))
    mu = plogp.sum(-1)
    var = torch.where(p > 0, plogp * logp, torch.zeros_like(p)).sum(-1) - mu**2
    return logp.gather(-1, targets[:, None])[:, 0], mu, var, logp.argmax(-1)


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=1e-6)


def close_var(actual, expected, mu):
    """``var`` to 1e-6 of the second moment ``var + mu^2`` it is computed from (see the docstring)."""
    close(actual, expected, atol=1e-6 * float((expected + mu**2).max()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_statistics_equal_the_unchunked_formula(small_chunks, dtype):
    gen = torch.Generator().manual_seed(0)
    vocab, positions = 1000, 37
    small_chunks(vocab)
    logits = (torch.randn(positions, vocab, generator=gen) * 4).to(dtype)
    logits[3, :500] = -float("inf")  # a masked vocabulary slice: p = 0 there, no NaN
    targets = torch.randint(500, vocab, (positions,), generator=gen)
    before = logits.clone()
    logps, mu, var, argmax = head_mod.position_stats(logits, None, targets, vocab_stats=True, argmax=True)
    assert torch.equal(logits, before)  # the caller's logits are not modified
    for got, expected in zip((logps, mu, var, argmax), unchunked(logits, targets)):
        assert torch.equal(got, expected)

    linear = torch.nn.Linear(16, vocab, bias=False)
    states = torch.randn(positions, 16, generator=gen)
    logps, mu, var, _ = head_mod.position_stats(states, linear, targets, vocab_stats=True)
    with torch.no_grad():
        exp_logps, exp_mu, exp_var, _ = unchunked(linear(states), targets)
    close(logps, exp_logps)
    close(mu, exp_mu)
    close_var(var, exp_var, exp_mu)


class HeadPositions(TorchDispatchMode):
    """Counts the positions the head's matmul runs on (``[m, V]`` products, forward and backward),
    the most rows of any ``[m, V]`` tensor an operator returns (the head's weight and its views aside)
    and the matmuls that return a new weight-shaped ``[V, d]`` tensor (a weight gradient)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight, self.vocab, self.positions, self.rows = weight, weight.shape[0], 0, 0
        self.weight_products = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        products = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default)  # new tensors, not in place
        if func in products and out.shape == self.weight.shape:
            self.weight_products += 1
        if (
            isinstance(out, torch.Tensor)
            and out.dim() == 2
            and out.shape[-1] == self.vocab
            and out.untyped_storage().data_ptr() != self.weight.untyped_storage().data_ptr()
        ):
            self.rows = max(self.rows, out.shape[0])
            if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default):
                self.positions += out.shape[0]
        return out


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("held", [0, 12, 23])
def test_chunked_token_logps_have_the_gradients_of_the_whole_head(small_chunks, monkeypatch, held, bias):
    """Values and gradients (states, weight, bias) equal autograd of the whole formula, whether the
    probabilities of none, some or all positions are kept for the backward; kept positions are not
    run through the head again, and no vocabulary tensor exceeds the kept block or one chunk."""
    gen = torch.Generator().manual_seed(1)
    vocab, positions, hidden = 500, 23, 8
    small_chunks(vocab)
    # `held` = positions kept: all (they fit hold_bytes), none (one short), or the first 12 (the
    # autograd Function's own argument: token_logps keeps all or none)
    monkeypatch.setattr(head_mod, "HOLD_WEIGHTS", (positions - (held == 0)) / hidden)
    linear = torch.nn.Linear(hidden, vocab, bias=bias)
    states = torch.randn(positions, hidden, generator=gen, requires_grad=True)
    targets = torch.randint(0, vocab, (positions,), generator=gen)
    weights = torch.randn(positions, generator=gen)  # an arbitrary downstream loss of the log-probs

    with HeadPositions(linear.weight) as seen:
        if held in (0, positions):
            logps = head_mod.token_logps(states, linear, targets)
        else:
            step = head_mod.chunk_positions(vocab)
            logps = head_mod._LinearTokenLogps.apply(states, linear.weight, linear.bias, targets, step, held)
        (logps * weights).sum().backward()
    assert seen.positions == 2 * positions - held  # the forward's, then the recomputed ones
    assert seen.rows == max(held, CHUNK)
    params = (linear.weight, linear.bias) if bias else (linear.weight,)
    got = (logps.detach(), states.grad.clone(), *(p.grad.clone() for p in params))

    states.grad = None
    linear.zero_grad()
    full = torch.log_softmax(states @ linear.weight.T + (linear.bias if bias else 0), dim=-1)
    full = full.gather(-1, targets[:, None])[:, 0]
    (full * weights).sum().backward()
    for a, b in zip(got, (full.detach(), states.grad, *(p.grad for p in params)), strict=True):
        close(a, b)
    if held == positions:  # one kept block: autograd's own `gather - logsumexp`, bit for bit
        states.grad = None
        linear.zero_grad()
        plain = linear(states).float()
        plain = plain.gather(-1, targets[:, None])[:, 0] - plain.logsumexp(-1)
        (plain * weights).sum().backward()
        for a, b in zip(got, (plain.detach(), states.grad, *(p.grad for p in params)), strict=True):
            assert torch.equal(a, b)


def test_token_logps_without_scored_positions_or_grad():
    """No position: an empty result whose backward is a zero gradient. Under no_grad nothing is kept."""
    linear = torch.nn.Linear(4, 50, bias=False)
    states = torch.randn(0, 4, requires_grad=True)
    logps = head_mod.token_logps(states, linear, torch.zeros(0, dtype=torch.long))
    assert logps.shape == (0,)
    (logps.sum() + 0 * linear.weight.sum()).backward()
    assert not linear.weight.grad.any()
    with torch.no_grad(), HeadPositions(linear.weight) as seen:
        head_mod.token_logps(torch.randn(7, 4), linear, torch.zeros(7, dtype=torch.long))
    assert seen.positions == 7


class LargestVocabTensor(TorchDispatchMode):
    """Records the most rows of any tensor an operator returns whose last dimension is the vocabulary
    (the head's weight, its views and weight-shaped gradients ``[d, V]`` aside)."""

    def __init__(self, model):
        super().__init__()
        self.weight = model.get_output_embeddings().weight
        self.vocab, self.rows = self.weight.shape[0], 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if (
                isinstance(t, torch.Tensor)
                and t.dim() >= 2
                and t.shape[-1] == self.vocab
                and t.untyped_storage().data_ptr() != self.weight.untyped_storage().data_ptr()
                and t.shape != self.weight.T.shape
            ):
                self.rows = max(self.rows, t.numel() // self.vocab)
        return out


def expected_stats(model, ids):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    return unchunked(logits, torch.tensor(ids[1:]))


@pytest.mark.parametrize("compact", [True, False], ids=["decoder_states", "model_logits"])
def test_min_k_pp_statistics_are_chunked_and_exact(tiny, small_chunks, compact):
    model, tok = tiny
    vocab = model.config.vocab_size
    small_chunks(vocab)
    model.__dict__.pop("_alignkit_head_exact", None)
    if not compact:
        model._alignkit_head_exact = False  # as for a model whose logits are not head(decoder output)
    try:
        with LargestVocabTensor(model) as seen:
            stats = mia.text_token_stats(model, tok, TEXTS, batch_size=2)
    finally:
        model.__dict__.pop("_alignkit_head_exact", None)
    for text, st in zip(TEXTS, stats):
        ids = tok(text, add_special_tokens=True)["input_ids"]
        logps, mu, var, _ = expected_stats(model, ids)
        assert st.target_ids == ids[1:]
        close(st.token_logps, logps)
        close(st.mu, mu)
        close_var(st.var, var, mu)
    longest = max(len(tok(t)["input_ids"]) for t in TEXTS)
    if compact:  # the one-position check of the head aside, no vocabulary tensor beyond a chunk
        assert seen.rows == CHUNK
    else:  # the model's own [2, L, V] logits; every statistic is still reduced a chunk at a time
        assert seen.rows == 2 * longest


def test_teacher_forced_scores_are_chunked_and_exact(tiny, small_chunks):
    model, tok = tiny
    vocab = model.config.vocab_size
    small_chunks(vocab)
    pairs = [(tok(t)["input_ids"][:4], tok(t)["input_ids"][4:]) for t in TEXTS]
    # Argmax predictions for every other pair only: the per-position mask is split with the chunks.
    wanted = [i % 2 == 0 for i in range(len(pairs))]
    with LargestVocabTensor(model) as seen:
        scored = score_token_ids(model, pairs, pad_token_id=tok.pad_token_id, batch_size=3, argmax=wanted)
    assert seen.rows == CHUNK
    for (prompt, target), s, want in zip(pairs, scored, wanted):
        logps, _, _, argmax = expected_stats(model, prompt + target)
        close(s.token_logps, logps[len(prompt) - 1 :])
        assert s.argmax_ids == (argmax[len(prompt) - 1 :].tolist() if want else None)


def test_training_forward_is_chunked_with_the_same_values_and_gradients(tiny, small_chunks):
    """The compact training head (``row_outputs``) over many chunks equals it over one chunk, backward included."""
    from alignkit.trainers.forward import row_outputs

    model, tok = tiny
    batch = text_batch(tok)

    def run():
        model.zero_grad()
        out = row_outputs(model, batch, want_logits=False, fused=False)
        (out.token_logps * torch.linspace(-1, 2, out.token_logps.shape[1])).sum().backward()
        return out.token_logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    whole, g_whole = run()  # the default budget: every position in one chunk
    small_chunks(model.config.vocab_size)
    with LargestVocabTensor(model) as seen:
        chunked, g_chunked = run()
    assert seen.rows == CHUNK
    assert model._alignkit_compact_head is True
    close(chunked, whole)
    for name in g_whole:
        close(g_chunked[name], g_whole[name])


def text_batch(tok) -> dict:
    """TEXTS as a right-padded batch whose completions start at the third token."""
    ids = [tok(t)["input_ids"] for t in TEXTS]
    width = max(map(len, ids))
    return {
        "input_ids": torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i in ids]),
        "attention_mask": torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids]),
        "completion_mask": torch.tensor([[0] * 2 + [1] * (len(i) - 2) + [0] * (width - len(i)) for i in ids]),
    }


def test_lazy_logits_rows_run_the_head_for_token_logps_only_when_read(tiny, small_chunks):
    """With lazy logits (``want_logits``, as UNDIAL and retain KL ask) the forward runs the head for
    no per-token log-probs; read from a slice of the rows, they run it on that slice's scored
    positions only and equal the compact forward's, gradients included. A read without gradient (the
    trainer's logged metrics) builds no graph; a later read that needs one computes them again, once."""
    from alignkit.trainers.forward import row_outputs

    model, tok = tiny
    small_chunks(model.config.vocab_size)
    batch, weight = text_batch(tok), model.get_output_embeddings().weight
    row_outputs(model, batch, want_logits=True, fused=False)  # the one-time exactness check, done
    with HeadPositions(weight) as seen:
        out = row_outputs(model, batch, want_logits=True, fused=False)
    assert seen.positions == len(TEXTS)  # the model's own one kept position per row, nothing more
    rows = out.rows(slice(1, None)).truncate(batch["input_ids"].shape[1])
    scored = int(rows.mask.sum())
    with torch.no_grad(), HeadPositions(weight) as seen:
        logged = rows.seq_logps
    assert seen.positions == scored and not logged.requires_grad
    with HeadPositions(weight) as seen:
        logps = rows.token_logps
        assert rows.token_logps is logps  # kept: read again, not computed again
    assert seen.positions == scored and logps.requires_grad

    def grads(token_logps):
        model.zero_grad()
        (token_logps * torch.linspace(-1, 2, token_logps.shape[1])).sum().backward(retain_graph=True)
        return [p.grad.clone() for p in model.parameters()]

    compact = row_outputs(model, batch, want_logits=False, fused=False).rows(slice(1, None))
    close(logps, compact.token_logps)
    close(logged, compact.seq_logps)
    for a, b in zip(grads(logps), grads(compact.token_logps)):
        close(a, b)


def test_logged_token_logps_come_from_a_fused_losss_chunks(tiny, small_chunks):
    """A fused loss (UNDIAL) computes the logits of every position of the policy's and the
    reference's lazy logits: their per-token log-probs read afterwards without gradient (the
    trainer's logged metrics) run no head matmul and equal the compact forward's. Where the loss
    skipped some scored position (CE-U drops each row's first answer token) they run the head."""
    from alignkit.losses import ceu_loss, undial_loss
    from alignkit.trainers.forward import row_outputs

    model, tok = tiny
    small_chunks(model.config.vocab_size)
    batch, weight = text_batch(tok), model.get_output_embeddings().weight
    rows = slice(1, None)
    policy = row_outputs(model, batch, want_logits=True, fused=False).rows(rows)
    with torch.no_grad():
        reference = row_outputs(model, batch, want_logits=True, fused=False).rows(rows)
    undial_loss(policy.logits, reference.logits, policy.labels, policy.mask, beta=2.0).loss.backward()
    with torch.no_grad(), HeadPositions(weight) as seen:
        logged, ref_logged = policy.seq_logps, reference.seq_logps
    assert seen.positions == 0
    compact = row_outputs(model, batch, want_logits=False, fused=False).rows(rows)
    close(logged, compact.seq_logps)
    close(ref_logged, compact.seq_logps)  # the reference is the same model

    policy = row_outputs(model, batch, want_logits=True, fused=False).rows(rows)
    ceu_loss(policy.logits, policy.labels, policy.mask).loss.backward()
    with torch.no_grad(), HeadPositions(weight) as seen:
        logged = policy.seq_logps
    assert seen.positions == int(policy.mask.sum())
    close(logged, compact.seq_logps)


def test_vocab_size_survives_a_zero3_shard():
    """Under ZeRO-3 a rank's head weight is an empty shard outside the forward: the chunk size must come
    from the module's full shape (the ZeRO-3 launches divided by zero before)."""
    from alignkit.models.head import chunk_positions, head_vocab_size

    head = torch.nn.Linear(16, 1000, bias=False)
    head.weight.data = torch.empty(0)  # what deepspeed.zero.Init leaves on a rank
    assert head_vocab_size(head) == 1000
    bare = torch.nn.Module()
    bare.weight = torch.nn.Parameter(torch.empty(0))
    bare.weight.ds_shape = torch.Size([1000, 16])  # deepspeed's record of the full shape
    assert head_vocab_size(bare) == 1000
    assert chunk_positions(head_vocab_size(head)) == 64 * 2**20 // (4 * 1000)  # 64 MiB of float32


# ----------------------------------------------------------------- full-distribution training losses
def _loss_cases():
    from alignkit.losses import ceu_loss, dipo_loss, retain_kl_loss, undial_loss
    from alignkit.losses.pdu import pdu_forget_loss

    return {
        "undial_all": lambda z, r, y, m: undial_loss(z, r, y, m, beta=2.0),
        "undial_labels": lambda z, r, y, m: undial_loss(z, r, y, m, beta=2.0, positions="labels"),
        "dipo_topk": lambda z, r, y, m: dipo_loss(z, r, y, m, beta=0.5, alpha=1.5, k=3),
        "dipo_label_policy": lambda z, r, y, m: dipo_loss(
            z, r, y, m, beta=0.5, alpha=1.5, select="label", source="policy", length_norm=True
        ),
        "dipo_tau": lambda z, r, y, m: dipo_loss(
            z, r, y, m, beta=0.5, alpha=1.5, select="prob>=tau", tau=0.01
        ),
        "ceu": lambda z, r, y, m: ceu_loss(z, y, m, ignore_first_n=1),
        "pdu_answer": lambda z, r, y, m: pdu_forget_loss(z, m),
        "pdu_all": lambda z, r, y, m: pdu_forget_loss(z, m, positions="all"),
        "retain_kl_all": lambda z, r, y, m: retain_kl_loss(z, r),
        "retain_kl_labels": lambda z, r, y, m: retain_kl_loss(z, r, m, positions="labels"),
    }


# The losses whose head gradients mean_positions accumulates in the forward (_LinearPositionsMean).
FUSED = {"undial_all", "undial_labels", "ceu", "retain_kl_all", "retain_kl_labels"}


@pytest.mark.parametrize("keep", ["first chunk", "all"])
@pytest.mark.parametrize("case", list(_loss_cases()))
def test_full_distribution_losses_in_chunks_equal_the_whole_logits(small_chunks, monkeypatch, case, keep):
    """Each loss over ``HeadLogits`` (many chunks) equals it over the materialised ``head(states)``, values
    and gradients (states, head weight) to 1e-6; the reference side gets no gradient; no
    vocabulary-wide tensor holds more than one chunk of positions. Where the chunks' autograd state
    fits the budget (``keep="all"``) no head matmul runs again in the backward; with no budget only
    the first chunk is kept and every other chunk's head runs again, except for the losses whose
    gradient goes through ``mean_positions``' fused path (``FUSED``): never recomputed."""
    loss_fn = _loss_cases()[case]
    gen = torch.Generator().manual_seed(3)
    vocab, rows, length, width = 400, 3, 9, 8
    small_chunks(vocab)
    if keep == "all":  # 10,000 x the head weight: every chunk's state fits
        monkeypatch.setattr(head_mod, "HOLD_WEIGHTS", 10_000)
    head = torch.nn.Linear(width, vocab, bias=False)
    ref_head = torch.nn.Linear(width, vocab, bias=False).requires_grad_(False)
    states = torch.randn(rows, length, width, generator=gen, requires_grad=True)
    ref_states = torch.randn(rows, length, width, generator=gen)
    labels = torch.randint(0, vocab, (rows, length), generator=gen)
    mask = torch.zeros(rows, length, dtype=torch.bool)
    mask[0, 2:7], mask[1, 4:], mask[2, 1:5] = True, True, True

    with torch.no_grad():
        ref_lazy = head_mod.HeadLogits(ref_states, ref_head)
    with torch.no_grad(), HeadPositions(head.weight) as once:  # the positions the forward runs the heads on
        loss_fn(head_mod.HeadLogits(states, head), ref_lazy, labels, mask)
    with (
        LargestVocabTensor(SimpleNamespace(get_output_embeddings=lambda: head)) as seen,
        HeadPositions(head.weight) as runs,
    ):
        got = loss_fn(head_mod.HeadLogits(states, head), ref_lazy, labels, mask)
        got.loss.backward()
    assert seen.rows <= CHUNK
    if keep == "all" or case in FUSED:
        assert runs.positions == once.positions  # nothing recomputed in the backward
    else:
        # one (policy) or two (policy, reference) heads run again on all but the first chunk
        assert runs.positions in (2 * once.positions - CHUNK, 2 * once.positions - 2 * CHUNK)
    got_grads = (states.grad.clone(), head.weight.grad.clone())
    states.grad, head.weight.grad = None, None

    expected = loss_fn(head(states), ref_head(ref_states), labels, mask)
    expected.loss.backward()
    close(got.loss, expected.loss)
    for name in expected.metrics:
        close(got.metrics[name], expected.metrics[name])
    for a, b in zip(got_grads, (states.grad, head.weight.grad)):
        close(a, b)
    assert b.abs().sum() > 0  # the loss does reach the head


@pytest.mark.parametrize("variant", ["plain", "bias", "frozen weight", "tied"])
@pytest.mark.parametrize("case", sorted(FUSED))
def test_fused_losses_run_the_head_once_into_one_weight_gradient(small_chunks, case, variant):
    """Through ``mean_positions``' fused path, with no kept-state budget (HOLD_WEIGHTS 0) and many
    chunks: the loss, its metrics and the gradients (states, head weight unless frozen, bias, a head
    tied to the input embedding) equal autograd of the loss on the materialised ``head(states)`` to
    1e-6, under a loss weight (2.5) as trainers apply one; the heads run once per position (nothing
    recomputed in the backward) and one ``[V, d]`` weight gradient is made, not one per chunk."""
    loss_fn = _loss_cases()[case]
    gen = torch.Generator().manual_seed(4)
    vocab, rows, length, width = 400, 3, 9, 8
    small_chunks(vocab)
    head = torch.nn.Linear(width, vocab, bias=variant == "bias")
    ref_head = torch.nn.Linear(width, vocab, bias=False).requires_grad_(False)
    ids = torch.randint(0, vocab, (rows, length), generator=gen)
    embed = torch.nn.Embedding(vocab, width)
    if variant == "tied":
        head.weight = embed.weight
    head.weight.requires_grad_(variant != "frozen weight")
    leaf = (
        embed.weight
        if variant == "tied"
        else torch.randn(rows, length, width, generator=gen, requires_grad=True)
    )

    def states():  # the policy's states: from the tied embedding, or a leaf
        return embed(ids) if variant == "tied" else leaf * 1.0

    ref_states = torch.randn(rows, length, width, generator=gen)
    labels = torch.randint(0, vocab, (rows, length), generator=gen)
    mask = torch.zeros(rows, length, dtype=torch.bool)  # ignored positions in every row
    mask[0, 2:7], mask[1, 4:], mask[2, 1:5] = True, True, True
    with torch.no_grad():
        ref_lazy = head_mod.HeadLogits(ref_states, ref_head)
    with torch.no_grad(), HeadPositions(head.weight) as once:
        loss_fn(head_mod.HeadLogits(states(), head), ref_lazy, labels, mask)
    with HeadPositions(head.weight) as runs:
        got = loss_fn(head_mod.HeadLogits(states(), head), ref_lazy, labels, mask)
        (2.5 * got.loss).backward()
    assert runs.positions == once.positions  # forward only: no head matmul again in the backward
    assert runs.weight_products == (variant != "frozen weight")  # one [V, d] buffer, whatever the chunks
    tensors = [t for t in (leaf, head.weight, head.bias) if t is not None and t.requires_grad]
    got_grads = [t.grad.clone() for t in tensors]
    for t in tensors:
        t.grad = None

    expected = loss_fn(head(states()), ref_head(ref_states), labels, mask)
    (2.5 * expected.loss).backward()
    close(got.loss, expected.loss)
    for name in expected.metrics:
        close(got.metrics[name], expected.metrics[name])
    for a, t in zip(got_grads, tensors):
        close(a, t.grad)
    assert head.weight.grad is None or head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("head_kind", ["zero3 shard", "wrapped"])
def test_heads_that_cannot_fuse_keep_the_generic_path(small_chunks, head_kind):
    """A head whose weight ZeRO-3 gathers in module hooks (``ds_shape``) or a head that is not a bare
    ``nn.Linear`` (a LoRA/PEFT wrapper) goes through ``map_positions``: same values and gradients,
    its chunks recomputed past the (here empty) budget and one weight gradient per chunk."""
    from alignkit.losses import retain_kl_loss

    gen = torch.Generator().manual_seed(5)
    vocab, rows, length, width = 400, 2, 8, 8
    small_chunks(vocab)

    class Wrapped(torch.nn.Linear):  # as peft's LoRA layers: a head module of another type
        pass

    head = (torch.nn.Linear if head_kind == "zero3 shard" else Wrapped)(width, vocab, bias=False)
    if head_kind == "zero3 shard":
        head.weight.ds_shape = head.weight.shape  # deepspeed's marker (the weight is whole here)
    ref_head = torch.nn.Linear(width, vocab, bias=False).requires_grad_(False)
    states = torch.randn(rows, length, width, generator=gen, requires_grad=True)
    with torch.no_grad():
        ref_lazy = head_mod.HeadLogits(torch.randn(rows, length, width, generator=gen), ref_head)
    with HeadPositions(head.weight) as runs:
        got = retain_kl_loss(head_mod.HeadLogits(states, head), ref_lazy)
        got.loss.backward()
    chunks = -(-rows * length // CHUNK)
    assert runs.weight_products == chunks
    got_grads = states.grad.clone(), head.weight.grad.clone()
    states.grad, head.weight.grad = None, None
    expected = retain_kl_loss(head(states), ref_lazy.head(ref_lazy.states))
    expected.loss.backward()
    close(got.loss, expected.loss)
    for a, b in zip(got_grads, (states.grad, head.weight.grad)):
        close(a, b)


def test_head_logits_run_the_head_inside_their_context_and_grad_mode():
    """A reference's lazy logits apply its head later, inside the reference's context (adapters off) and
    outside autograd, whatever the grad mode of the loss that reads them."""
    entered = []

    @contextmanager
    def context():
        entered.append(True)
        yield

    head = torch.nn.Linear(4, 50, bias=False)
    with torch.no_grad():
        lazy = head_mod.HeadLogits(torch.randn(2, 3, 4), head, context)[:, :2]
    assert lazy.shape == (2, 2, 50)
    values = head_mod.map_positions(lambda z: z.logsumexp(-1), (lazy,), None)
    assert entered and values.shape == (4,) and not values.requires_grad


def test_training_forward_gives_lazy_logits_and_packed_rows_chunked(tiny, small_chunks):
    """``row_outputs(want_logits=True)`` returns the rows' logits as ``HeadLogits`` that reproduce the
    model's own logits; the packed ``share_prompt`` forward builds no vocabulary tensor beyond a chunk
    and gives the flat log-probs, gradients included."""
    from alignkit.trainers.forward import row_outputs

    model, tok = tiny
    small_chunks(model.config.vocab_size)
    prompt = tok(TEXTS[0])["input_ids"][:9]
    completions = [tok(t)["input_ids"][1:5] for t in TEXTS[1:]]
    rows = [prompt + c for c in completions]
    batch = {
        "input_ids": torch.tensor(rows),
        "attention_mask": torch.ones(len(rows), len(rows[0]), dtype=torch.long),
        "completion_mask": torch.tensor([[0] * len(prompt) + [1] * 4] * len(rows)),
    }
    from alignkit.trainers import shared_prompt

    assert shared_prompt.attention_implementation(model) in shared_prompt.MASKABLE
    assert shared_prompt.pack(batch) is not None  # the rows do go through packed
    out = row_outputs(model, batch, want_logits=True, fused=False)
    assert isinstance(out.logits, head_mod.HeadLogits)
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"]).logits[:, :-1]
    whole = torch.cat([out.logits.logits(s) for s in out.logits.states]).view(full.shape)
    close(whole, full)

    def logps_and_grads(share):
        model.zero_grad()
        with LargestVocabTensor(model) as seen:
            r = row_outputs(model, batch, want_logits=False, fused=False, share_prompt=share)
            (r.token_logps * torch.linspace(-1, 2, r.token_logps.shape[1])).sum().backward()
        assert seen.rows <= CHUNK
        return r.token_logps.detach(), [p.grad.clone() for p in model.parameters()]

    flat, g_flat = logps_and_grads(False)
    packed, g_packed = logps_and_grads(True)
    close(packed, flat)
    for a, b in zip(g_packed, g_flat):
        close(a, b)
