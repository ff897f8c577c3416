"""WPN, weighted positional N-pair unlearning (arXiv 2408.09459; methods-alignment-2.md §6).

Per harmful prompt: one harmless response (``chosen``) and N harmful outputs (``rejected``). The final
hidden state (the final norm's output, captured by a hook during the one shared forward) is pooled with
SGPT's position weights over the prompt (anchor ``a``), the harmless response (``p``) and each harmful one
(``n_j``); ``L = -log(e^{cos(a,p)/τ} / (e^{cos(a,p)/τ} + Σ_j e^{cos(a,n_j)/τ}))`` (``wpn_loss``), plus the
usual optional retain term. Confirmed: position-weighted pooling inside an N-pair loss (abstract, Fig. 1).
RECONSTRUCTION (each a switch): the hidden state, the anchor (``anchor_from``), the spans
(``pool_span``), cosine vs dot product, τ 0.1, and whether any LM loss is added (off by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from alignkit.data import PreferenceRecord, RecordError, normalize_record, to_dense
from alignkit.losses import WPN_SIMILARITIES, LossOutput, position_weighted_pool, wpn_loss
from alignkit.models import final_norm
from alignkit.trainers.base import AlignKitTrainer
from alignkit.trainers.config import UnlearnConfig
from alignkit.trainers.forward import ForwardOutput, Needs, row_outputs
from alignkit.trainers.registry import register


@dataclass
class WPNConfig(UnlearnConfig):
    """WPN. Defaults are ours (§6 d): τ 0.1, cosine, every negative, no retain term."""

    temperature: float = field(
        default=0.1, metadata={"help": "τ of the N-pair loss (0.1: ours; low values saturate fast)."}
    )
    similarity: str = field(default="cos", metadata={"help": "cos (default) or dot (an alternative, §6 b)."})
    anchor_from: str = field(
        default="policy",
        metadata={
            "help": "Anchor representation: policy (the prompt's pooled state under the model being trained) "
            "or reference (from the frozen starting model: stops the loss being met by moving the prompt, §6 f)."
        },
    )
    pool_span: str = field(
        default="response",
        metadata={
            "help": "What p and n_j pool over: response (the completion tokens, default) or sequence "
            "(prompt + completion, an alternative of §6 b)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {self.temperature}.")
        if self.similarity not in WPN_SIMILARITIES:
            raise ValueError(f"`similarity` must be one of {WPN_SIMILARITIES}, got {self.similarity!r}.")
        if self.anchor_from not in ("policy", "reference"):
            raise ValueError(f"`anchor_from` must be 'policy' or 'reference', got {self.anchor_from!r}.")
        if self.pool_span not in ("response", "sequence"):
            raise ValueError(f"`pool_span` must be 'response' or 'sequence', got {self.pool_span!r}.")


@register(
    "wpn",
    family="unlearning",
    data="one_vs_n",
    tags=("wpn",),
    summary="position-weighted N-pair loss: harmful prompt towards a harmless response, away from harmful ones",
)
class WPNTrainer(AlignKitTrainer):
    config_class = WPNConfig
    needs = Needs(hidden=True)
    paper = {
        "title": "An Unlearning Method Based on N-pair Contrastive Learning in Language Models",
        "id": "2408.09459",
    }

    def __init__(self, model, args: WPNConfig | None = None, *a, **kw):
        anchor = getattr(args, "anchor_from", "policy")  # a wrong args type is reported by the base class
        self.needs = Needs(reference="hidden" if anchor == "reference" else "none", hidden=True)
        super().__init__(model, args, *a, **kw)

    def transform_row(self, row: dict, index: int) -> PreferenceRecord:
        record = normalize_record(row, index=index, source="train_dataset")
        if not record.roles or record.roles[0] != "chosen" or set(record.roles[1:]) != {"rejected"}:
            raise RecordError(
                "train_dataset",
                index,
                "chosen" if record.roles[:1] != ["chosen"] else "rejected",
                f"WPN needs one `chosen` (the harmless response) and at least one `rejected` (a harmful "
                f"output) per prompt, got roles {record.roles}",
            )
        return record

    def _hidden_module(self, model) -> torch.nn.Module:
        return final_norm(model)  # hidden_states[-1]: the final norm's output, not the last block's

    def forward(self, model, inputs) -> ForwardOutput:
        out = super().forward(model, inputs)
        n, width = inputs["num_main"], out.policy.hidden.shape[1]
        out.prompt_mask = inputs["attention_mask"][:n, :width].bool() & ~out.policy.hidden_mask
        if self.args.anchor_from == "reference":
            out.ref = self._reference_prompt_states(model, inputs, width)
        return out

    @torch.no_grad()
    def _reference_prompt_states(self, model, inputs, width: int):
        """The frozen model's final hidden states on the first row of each prompt (the anchor's rows)."""
        first = torch.cumsum(inputs["group_sizes"], 0) - inputs["group_sizes"]
        rows = {k: inputs[k][first, :width] for k in ("input_ids", "attention_mask", "completion_mask")}
        unwrapped = self.accelerator.unwrap_model(model)
        reference = self.ref_model if self.ref_mode == "model" else model
        with self._reference_context(unwrapped if self.ref_mode == "adapter_off" else None):
            return row_outputs(
                reference,
                rows,
                want_logits=False,
                fused=self.fused_lm_head,
                hidden_module=final_norm(self.accelerator.unwrap_model(reference)),
            )

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        hidden, response = out.policy.hidden, out.policy.hidden_mask
        span = response | out.prompt_mask if self.args.pool_span == "sequence" else response
        pooled, valid = to_dense(position_weighted_pool(hidden, span), out.group_sizes)
        first = torch.cumsum(out.group_sizes, 0) - out.group_sizes
        if out.ref is not None:  # anchor_from="reference"
            anchor = position_weighted_pool(out.ref.hidden, out.prompt_mask[first])
        else:
            anchor = position_weighted_pool(hidden[first], out.prompt_mask[first])
        return wpn_loss(
            anchor,
            pooled[:, 0],
            pooled[:, 1:],
            valid[:, 1:],
            temperature=self.args.temperature,
            similarity=self.args.similarity,
        )
