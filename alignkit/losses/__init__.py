"""Pure loss functions: tensors in, :class:`LossOutput` (loss + detached metrics) out."""

from alignkit.losses.alignment import (
    LIPO_LOSS_TYPES,
    labels_from_ranks,
    labels_from_scores,
    lambda_weights,
    lipo_loss,
    score_ranks,
    softmax_dpo_loss,
)
from alignkit.losses.constraints import (
    DualState,
    chosen_logp_floor,
    dual_ascent_step,
    lagrangian,
    logratio_budget,
    rejected_logp_ceiling,
)
from alignkit.losses.core import LossOutput, masked_rows, sequence_logps, token_mean
from alignkit.losses.d2o import d2o_loss
from alignkit.losses.rmu import (
    RMU_REDUCTIONS,
    activation_distance,
    control_vector,
    embed_diff_loss,
    rmu_forget_loss,
)
from alignkit.losses.token_unlearning import ceu_loss, satimp_loss, undial_loss, wga_loss
from alignkit.losses.unlearning import (
    IDK_ANSWERS,
    altpo_loss,
    catnip_loss,
    dipo_loss,
    dpo_loss,
    ga_loss,
    idk_dpo_loss,
    nll_loss,
    npo_loss,
    retain_kl_loss,
    simnpo_loss,
)
from alignkit.losses.wpn import WPN_SIMILARITIES, position_weighted_pool, wpn_loss

__all__ = [
    "IDK_ANSWERS",
    "LIPO_LOSS_TYPES",
    "RMU_REDUCTIONS",
    "activation_distance",
    "altpo_loss",
    "ceu_loss",
    "control_vector",
    "embed_diff_loss",
    "rmu_forget_loss",
    "satimp_loss",
    "undial_loss",
    "wga_loss",
    "DualState",
    "LossOutput",
    "catnip_loss",
    "chosen_logp_floor",
    "d2o_loss",
    "dipo_loss",
    "dpo_loss",
    "dual_ascent_step",
    "ga_loss",
    "idk_dpo_loss",
    "labels_from_ranks",
    "labels_from_scores",
    "lagrangian",
    "lambda_weights",
    "lipo_loss",
    "logratio_budget",
    "masked_rows",
    "nll_loss",
    "npo_loss",
    "rejected_logp_ceiling",
    "retain_kl_loss",
    "sequence_logps",
    "score_ranks",
    "simnpo_loss",
    "softmax_dpo_loss",
    "token_mean",
    "WPN_SIMILARITIES",
    "position_weighted_pool",
    "wpn_loss",
]
