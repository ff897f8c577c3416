"""RMU, Representation Misdirection for Unlearning (Li et al., WMDP, arXiv 2403.03218), as open-unlearning runs it.

The output of decoder block ``layer`` on forget answer tokens is pushed towards a fixed random vector
``c·u``; on retain tokens it is held at the frozen reference's (``retain_loss="embed_diff"``):
``L = γ·A(h_L(x_f), c·u) + α·A(h_L(x_r), h_L^ref(x_r))`` with ``A`` a masked MSE (spec2 §2). The block's
output is captured by a hook during the one shared forward; no logits are used.

Only the embedding and blocks ``0..layer`` can receive a gradient, so the others are frozen. With LoRA the
reference is the same model with its adapters off; ``rmu_lora_preset`` puts the adapters where they can
learn (``wmdp``: ``mlp.down_proj`` of blocks L-2..L; ``ou``: every linear module of blocks 0..L), and
adapters on later blocks or ``lm_head`` are refused (they would never receive a gradient).
"""

from __future__ import annotations

import copy
import logging
import os
import re
from dataclasses import dataclass, field

import datasets
import torch

from alignkit.losses import RMU_REDUCTIONS, LossOutput, control_vectors, embed_diff_loss, rmu_forget_loss
from alignkit.models import decoder_layers
from alignkit.trainers.base import AlignKitTrainer, _is_peft
from alignkit.trainers.config import RETAIN_LOSSES, UnlearnConfig
from alignkit.trainers.forward import ForwardOutput, Needs
from alignkit.trainers.registry import register

logger = logging.getLogger(__name__)


def drop_short_texts(rows, min_chars: int, name: str):
    """The rows whose ``text`` has more than ``min_chars`` characters (the WMDP code's ``len(text) > 50``)."""
    texts = rows["text"] if isinstance(rows, datasets.Dataset) and "text" in rows.column_names else None
    if texts is None and isinstance(rows, list) and all("text" in r for r in rows):
        texts = [r["text"] for r in rows]
    if texts is None:
        raise ValueError(f"RMUTrainer: `min_text_chars` reads each row's `text`; {name} rows have none.")
    keep = [i for i, t in enumerate(texts) if len(t) > min_chars]
    logger.warning(
        "RMU: %s: dropped %d of %d rows of <= %d characters",
        name,
        len(texts) - len(keep),
        len(texts),
        min_chars,
    )
    return rows.select(keep) if isinstance(rows, datasets.Dataset) else [rows[i] for i in keep]


def topic_batches(rows, field: str, batch_size: int):
    """Forget rows reordered into batches of one topic, topics in turn (first-appearance order),
    stopping when a topic runs out of full batches; returns (rows, topic id per row, topic names)."""
    values = rows[field] if isinstance(rows, datasets.Dataset) and field in rows.column_names else None
    if values is None and isinstance(rows, list) and all(field in r for r in rows):
        values = [r[field] for r in rows]
    if values is None:
        raise ValueError(f"RMUTrainer: `topic_field={field!r}` but the train rows have no {field!r} field.")
    names = list(dict.fromkeys(values))
    by_topic = [[i for i, v in enumerate(values) if v == name] for name in names]
    n_batches = min(len(ix) // batch_size for ix in by_topic)
    if n_batches == 0:
        raise ValueError(f"RMUTrainer: a topic of {field!r} has fewer rows than one batch ({batch_size}).")
    order, topics = [], []
    for b in range(n_batches):
        for k, ix in enumerate(by_topic):
            order += ix[b * batch_size : (b + 1) * batch_size]
            topics += [k] * batch_size
    if len(order) < len(values):
        logger.warning(
            "RMU: topic batches use %d of %d forget rows (the shortest topic ends them)",
            len(order),
            len(values),
        )
    picked = rows.select(order) if isinstance(rows, datasets.Dataset) else [rows[i] for i in order]
    return picked, topics, names


LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class RMUConfig(UnlearnConfig):
    retain_losses = (*RETAIN_LOSSES, "embed_diff")

    layer: int = field(
        default=7,
        metadata={"help": "Decoder block L whose output is steered, 0-based (7: WMDP, open-unlearning)."},
    )
    steering_coeff: float = field(
        default=2.0,
        metadata={"help": "c, norm of the control vector (2: open-unlearning RMU.yaml; WMDP code 6.5)."},
    )
    control_seed: int = field(
        default=0,
        metadata={
            "help": "Seed of the control vector's own generator (same vector on every rank and resume)."
        },
    )
    rmu_reduction: str = field(
        default="seq_mean",
        metadata={
            "help": "Activation MSE reduction: seq_mean (per-row token mean), ou_compat (open-unlearning's broadcast) or wmdp (unmasked)."
        },
    )
    retain_loss: str = field(
        default="embed_diff",
        metadata={
            "help": "Retain term: embed_diff (keep the reference's activations at block L, RMU's), nll, kl or none."
        },
    )
    trainable: str = field(
        default="all",
        metadata={
            "help": "Full fine-tuning: all (embedding + blocks 0..L), wmdp (mlp.down_proj of blocks L-2..L) or a regex over parameter names."
        },
    )
    rmu_lora_preset: str = field(
        default="none",
        metadata={
            "help": "With LoRA: none (the given adapters, checked), wmdp (down_proj of blocks L-2..L) or ou (all linear modules of blocks 0..L)."
        },
    )

    min_text_chars: int = field(
        default=0,
        metadata={
            "help": "Drop forget and retain rows whose `text` has <= N characters before training (the WMDP "
            "code drops <= 50); how many were dropped is logged."
        },
    )
    topic_field: str | None = field(
        default=None,
        metadata={
            "help": "A forget-row field naming its topic (`dataset_config`: the file of a '+'-joined "
            "train_dataset_config): one control vector per topic (the k-th topic's is the k-th draw of "
            "control_seed's generator) and batches of one topic each, in turn (the WMDP loop's bio/cyber "
            "alternation). Needs train_sampling_strategy: sequential."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.min_text_chars < 0:
            raise ValueError(f"`min_text_chars` must be >= 0, got {self.min_text_chars}.")
        if self.topic_field and self.train_sampling_strategy != "sequential":
            raise ValueError(
                "`topic_field` builds batches of one topic taken in turn; set `train_sampling_strategy: "
                f"sequential` (got {self.train_sampling_strategy!r}: it would mix and reorder them)."
            )
        if self.layer < 0:
            raise ValueError(f"`layer` must be >= 0, got {self.layer}.")
        if self.steering_coeff <= 0:
            raise ValueError(f"`steering_coeff` must be > 0, got {self.steering_coeff}.")
        if self.rmu_reduction not in RMU_REDUCTIONS:
            raise ValueError(f"`rmu_reduction` must be one of {RMU_REDUCTIONS}, got {self.rmu_reduction!r}.")
        if self.rmu_lora_preset not in ("none", "wmdp", "ou"):
            raise ValueError(f"`rmu_lora_preset` must be none, wmdp or ou, got {self.rmu_lora_preset!r}.")


def rmu_lora_targets(layer: int, preset: str) -> dict:
    """``LoraConfig`` fields of a preset: which modules of which blocks get adapters (spec2 §2, LoRA mapping)."""
    if preset == "wmdp":
        return {
            "target_modules": ["down_proj"],
            "layers_to_transform": list(range(max(0, layer - 2), layer + 1)),
        }
    return {"target_modules": list(LINEAR_MODULES), "layers_to_transform": list(range(layer + 1))}


@register(
    "rmu",
    family="unlearning",
    data="single",
    summary="representation misdirection: steer block-L activations of forget tokens to a random vector",
)
class RMUTrainer(AlignKitTrainer):
    config_class = RMUConfig
    needs = Needs(hidden=True)
    paper = {
        "title": "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning",
        "id": "2403.03218",
    }

    def __init__(self, model, args: RMUConfig | None = None, *a, peft_config=None, **kw):
        self._topic_of_row, self._row_ids = None, None
        if isinstance(args, RMUConfig):
            kw = self._wmdp_data(args, a, kw)
        retain_loss = getattr(
            args, "retain_loss", "embed_diff"
        )  # a wrong args type is reported by the base class
        self.needs = Needs(reference="hidden" if retain_loss == "embed_diff" else "none", hidden=True)
        preset = getattr(args, "rmu_lora_preset", "none")
        if peft_config is not None and preset != "none":
            peft_config = copy.deepcopy(peft_config)
            for key, value in rmu_lora_targets(args.layer, preset).items():
                setattr(peft_config, key, value)
            logger.info(
                "RMU: LoRA preset %r puts adapters on %s", preset, rmu_lora_targets(args.layer, preset)
            )
        super().__init__(model, args, *a, peft_config=peft_config, **kw)
        blocks = decoder_layers(self.model)
        if self.args.layer >= len(blocks):
            raise ValueError(
                f"RMUTrainer: `layer={self.args.layer}` but the model has {len(blocks)} decoder blocks; "
                f"choose 0..{len(blocks) - 1} (mid-network is usual)."
            )
        self._select_trainable(blocks)
        n_topics = 1 if self._topic_of_row is None else int(self._topic_of_row.max()) + 1
        self.controls = control_vectors(
            self.model.config.hidden_size, self.args.steering_coeff, self.args.control_seed, n_topics
        )
        self.control = self.controls[0]

    def _wmdp_data(self, args: RMUConfig, a: tuple, kw: dict) -> dict:
        """``min_text_chars``: short rows dropped; ``topic_field``: forget rows reordered into one-topic batches."""
        if a and (args.min_text_chars or args.topic_field):
            raise TypeError(
                "RMUTrainer: pass train_dataset/retain_dataset by keyword with min_text_chars/topic_field."
            )
        if args.min_text_chars:
            for key in ("train_dataset", "retain_dataset"):
                if kw.get(key) is not None:
                    kw[key] = drop_short_texts(kw[key], args.min_text_chars, key)
        if args.topic_field and kw.get("train_dataset") is not None:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise ValueError(
                    "RMUTrainer: `topic_field` batches are built for one process; drop it under a launch."
                )
            rows, topics, names = topic_batches(
                kw["train_dataset"], args.topic_field, args.per_device_train_batch_size
            )
            kw["train_dataset"] = rows
            self._topic_of_row = torch.tensor(topics, dtype=torch.long)
            logger.info("RMU: %d topics, one control vector each, batches in turn: %s", len(names), names)
        return kw

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._row_ids = inputs.get("row_ids")  # which forget rows: their topics pick the control vectors
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def hidden_layer(self) -> int:
        return self.args.layer

    def _select_trainable(self, blocks) -> None:
        """Freeze what can never get a gradient (blocks after L, final norm, lm_head); refuse LoRA there."""
        layer = self.args.layer
        reachable = {id(p) for p in self.model.get_input_embeddings().parameters()}
        for block in blocks[: layer + 1]:
            reachable |= {id(p) for p in block.parameters()}
        if _is_peft(self.model):
            dead = [n for n, p in self.model.named_parameters() if p.requires_grad and id(p) not in reachable]
            if dead:
                raise ValueError(
                    f"RMUTrainer: LoRA adapters after block {layer} or on lm_head can never receive a gradient "
                    f"({dead[0]}, ...); set `rmu_lora_preset` to 'wmdp' or 'ou', or target blocks 0..{layer} only."
                )
            return
        pattern = self.args.trainable
        if pattern == "wmdp":
            pattern = rf".*layers\.({'|'.join(str(i) for i in range(max(0, layer - 2), layer + 1))})\.mlp\.down_proj\.weight"
        chosen = []
        for name, p in self.model.named_parameters():
            keep = id(p) in reachable and (pattern == "all" or re.fullmatch(pattern, name) is not None)
            p.requires_grad_(keep)
            chosen += [name] if keep else []
        if not chosen:
            raise ValueError(
                f"RMUTrainer: `trainable={self.args.trainable!r}` matches no parameter of blocks 0..{layer}."
            )

    def method_loss(self, out: ForwardOutput) -> LossOutput:
        h = out.policy.hidden
        control = self.control
        if self._topic_of_row is not None and self.model.training and self._row_ids is not None:
            control = self.controls[self._topic_of_row[self._row_ids.cpu()]].unsqueeze(1)  # [B, 1, d]
        control = control.to(h.device, h.dtype)  # cast to the activation dtype, as open-unlearning does
        return rmu_forget_loss(h, control, out.policy.hidden_mask, reduction=self.args.rmu_reduction)

    def retain_loss(self, out: ForwardOutput) -> LossOutput | None:
        if self.args.retain_loss != "embed_diff" or out.retain is None:
            return super().retain_loss(out)
        return embed_diff_loss(
            out.retain.hidden,
            out.retain_ref.hidden,
            out.retain.hidden_mask,
            reduction=self.args.rmu_reduction,
        )
