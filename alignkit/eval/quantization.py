"""Weight-only post-training quantization of a model's decoder blocks, for the quantization-recovery test.

Spec: ``shared/design/methods-unlearning-2.md`` §10. Every ``nn.Linear`` inside the decoder blocks (q, k, v,
o, gate, up, down) is quantized; embeddings, norms, biases and ``lm_head`` stay in the compute dtype. Scales
are computed per model (never reused from another model).

Quantizers:

* ``torchao_int8`` / ``torchao_int4`` (default): torchao's weight-only ``Int8WeightOnlyConfig`` (per-row
  symmetric int8) and ``IntxWeightOnlyConfig(int4, PerGroup(G))``; real quantized tensors and kernels,
  on CPU. torchao was chosen over bitsandbytes because both of its configs are *weight-only* (bitsandbytes'
  int8 is LLM.int8, which also quantizes activations), it quantizes a loaded model in place (no reload
  through ``from_pretrained``) and it is maintained by the PyTorch team. Optional: ``pip install
  'alignkit[robustness]'``; imported only when used.
* ``rtn_int8`` / ``rtn_int4`` / ``rtn_int4_sym``: the round-to-nearest reference in plain torch (the RTN
  baseline of the GPTQ/AWQ papers), hand-written because the spec pins its exact codes with test vectors and
  it needs no optional dependency: weights are replaced by their dequantized values ("fake quant"). int8 is
  symmetric per output row, int4 asymmetric per group of ``G`` input columns (``rtn_int4_sym``: symmetric).

Backends agree on the weights but not bit for bit on outputs: compare methods within one backend.
"""

from __future__ import annotations

import logging

import torch

QUANTIZERS = ("torchao_int8", "torchao_int4", "rtn_int8", "rtn_int4", "rtn_int4_sym")
DEFAULT_GROUP_SIZE = 128


def _groups(w: torch.Tensor, group: int | None) -> torch.Tensor:
    return w.reshape(w.shape[0], -1, group) if group else w.unsqueeze(1)


def rtn_sym(w: torch.Tensor, bits: int, group: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric RTN: ``s = max|W_g| / (2^(b-1) - 1)``, ``q = clamp(round(W/s), ±qmax)``; ``(W', codes)``.

    ``group=None`` is one group per output row. Computed in fp32 (``torch.round`` rounds half to even).
    """
    qmax = 2 ** (bits - 1) - 1
    wg = _groups(w.float(), group)
    scale = wg.abs().amax(-1, keepdim=True).clamp(min=1e-12) / qmax
    q = torch.round(wg / scale).clamp(-qmax, qmax)
    return (q * scale).reshape(w.shape).to(w.dtype), q.reshape(w.shape).long()


def rtn_asym(w: torch.Tensor, bits: int, group: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric RTN: ``lo = min(min W_g, 0)``, ``hi = max(max W_g, 0)``, ``s = (hi-lo)/(2^b-1)``,
    ``z = round(-lo/s)``, ``q = clamp(round(W/s) + z, 0, 2^b-1)``, ``W' = (q - z) s``; returns ``(W', codes)``."""
    qmax = 2**bits - 1
    wg = _groups(w.float(), group)
    lo = wg.amin(-1, keepdim=True).clamp(max=0)
    hi = wg.amax(-1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / qmax).clamp(min=1e-12)
    zero = torch.round(-lo / scale)
    q = (torch.round(wg / scale) + zero).clamp(0, qmax)
    return ((q - zero) * scale).reshape(w.shape).to(w.dtype), q.reshape(w.shape).long()


def _rtn(name: str, w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "rtn_int8":
        return rtn_sym(w, 8)
    if name == "rtn_int4_sym":
        return rtn_sym(w, 4, group)
    return rtn_asym(w, 4, group)


def block_linears(model) -> dict[str, torch.nn.Linear]:
    """``{qualified name: module}`` of every ``nn.Linear`` inside the decoder blocks (not ``lm_head``)."""
    from alignkit.models import decoder_layers

    layers = decoder_layers(model)
    found = {}
    for i, block in enumerate(layers):
        for name, module in block.named_modules():
            if isinstance(module, torch.nn.Linear):
                found[f"layers.{i}.{name}"] = module
    if not found:
        raise ValueError(f"{type(model).__name__}: no nn.Linear inside the decoder blocks to quantize.")
    return found


def group_size_for(module: torch.nn.Linear, group_size: int) -> int:
    """``group_size``, or the whole row when a layer is narrower (tiny models); must divide the row."""
    g = min(group_size, module.in_features)
    if module.in_features % g:
        raise ValueError(
            f"group size {g} does not divide in_features={module.in_features}; choose a --group-size that does."
        )
    return g


def code_agreement(unlearned, target, quantizer: str, group_size: int = DEFAULT_GROUP_SIZE) -> dict:
    """Weight diagnostics of §10c under the RTN reference codes of ``quantizer``'s precision.

    ``code_agreement``: share of weights whose integer codes are the same in both models; ``bitwise_equal``:
    share of dequantized weights that are identical; ``rel_weight_change``: ``||W_u - W_t|| / ||W_t||``.
    """
    rtn = (
        quantizer
        if quantizer.startswith("rtn_")
        else ("rtn_int8" if quantizer.endswith("int8") else "rtn_int4_sym")
    )
    a, b = block_linears(unlearned), block_linears(target)
    same = equal = total = 0
    diff_sq = ref_sq = 0.0
    for name, mod in a.items():
        wu, wt = mod.weight.detach().float(), b[name].weight.detach().float()
        g = group_size_for(mod, group_size)
        du, cu = _rtn(rtn, wu, g)
        dt, ct = _rtn(rtn, wt, g)
        same += int((cu == ct).sum())
        equal += int((du == dt).sum())
        total += cu.numel()
        diff_sq += float(((wu - wt) ** 2).sum())
        ref_sq += float((wt**2).sum())
    return {
        "codes": rtn,
        "code_agreement": same / total,
        "bitwise_equal": equal / total,
        "rel_weight_change": (diff_sq / ref_sq) ** 0.5 if ref_sq else float("nan"),
    }


def torchao_quantization():
    try:
        import torchao.quantization as q
        from torchao.quantization.granularity import PerGroup
    except ImportError as err:
        raise ImportError(
            "the torchao quantizers need torchao: pip install 'alignkit[robustness]' "
            "(or use --quantizers rtn_int8 rtn_int4, which need nothing extra)"
        ) from err
    return q, PerGroup


@torch.no_grad()
def quantize_model_(model, quantizer: str, *, group_size: int = DEFAULT_GROUP_SIZE) -> dict:
    """Quantize the decoder-block linears of ``model`` in place; returns what was done (for the log)."""
    if quantizer not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {quantizer!r}; choose from {', '.join(QUANTIZERS)}")
    linears = block_linears(model)
    groups = {name: group_size_for(mod, group_size) for name, mod in linears.items()}
    if quantizer.startswith("rtn_"):
        for name, mod in linears.items():
            mod.weight.copy_(_rtn(quantizer, mod.weight.detach(), groups[name])[0])
    else:
        ao, per_group = torchao_quantization()
        logging.getLogger("torchao").setLevel(logging.ERROR)
        chosen = {id(m) for m in linears.values()}
        if quantizer == "torchao_int8":
            ao.quantize_(model, ao.Int8WeightOnlyConfig(), filter_fn=lambda m, _fqn: id(m) in chosen)
        else:
            for g in sorted(set(groups.values())):
                ids = {id(linears[n]) for n, gg in groups.items() if gg == g}
                config = ao.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=per_group(g))
                ao.quantize_(model, config, filter_fn=lambda m, _fqn, ids=ids: id(m) in ids)
    return {
        "quantizer": quantizer,
        "modules": len(linears),
        "group_size": None if quantizer.endswith("int8") else sorted(set(groups.values())),
        "kept_in_compute_dtype": "embeddings, norms, biases, lm_head",
    }
