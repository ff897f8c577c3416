"""Generated data with a known ground truth, for the offline embedded default.

* :mod:`alignkit.data.synthetic.tofu`: a TOFU-format benchmark of fictitious people, written in the
  exact schema of the real TOFU files so the same loaders and metrics run on both.
* :mod:`alignkit.data.synthetic.preference`: preference tasks (1-vs-N recommendation, graded lists,
  negatives-only safety) whose outputs can be scored exactly, without a reward model.
"""

from alignkit.data.synthetic.preference import (
    PreferenceTask,
    graded_list_task,
    hit_ratio_at_1,
    is_flagged,
    recommendation_task,
    safety_task,
    score_completion,
    to_pairwise,
)
from alignkit.data.synthetic.tofu import build_tofu_files, generate_tofu_benchmark, make_people, tofu_texts

__all__ = [
    "PreferenceTask",
    "build_tofu_files",
    "generate_tofu_benchmark",
    "graded_list_task",
    "hit_ratio_at_1",
    "is_flagged",
    "make_people",
    "recommendation_task",
    "safety_task",
    "score_completion",
    "to_pairwise",
    "tofu_texts",
]
