"""Node-local output folders (``save_on_each_node: true``): every node's local main writes the whole run.

``TrainingArguments.save_on_each_node`` makes ``args.should_save`` true on each node's local rank 0, and
``Trainer._save`` then calls ``save_pretrained(..., is_main_process=True)`` there. But transformers 5's
``PreTrainedModel.should_save_on_this_rank`` also requires global rank 0 once a process group exists, so
on every other node ``save_pretrained`` wrote no weights and no config: node 1's ``checkpoint-N`` and
final folder held the optimizer, tokenizer and RNG state, but no model (found by
tests/distributed/test_multi_node.py). For the duration of one save on such a writer, the model's check
is the caller's ``is_main_process`` again, which is what that argument documents.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


def _trust_is_main_process(is_main_process: bool) -> bool:
    return is_main_process


@contextmanager
def save_pretrained_on_this_node(*models):
    """Within: ``save_pretrained`` of these models writes when called with ``is_main_process=True``."""
    patched = []
    for model in {id(m): m for m in models if hasattr(m, "should_save_on_this_rank")}.values():
        model.should_save_on_this_rank = _trust_is_main_process  # instance attribute, over the class's
        patched.append(model)
    try:
        yield
    finally:
        for model in patched:
            del model.should_save_on_this_rank


def write_deepspeed_latest(folder: str) -> None:
    """Give a node-local DeepSpeed checkpoint the ``latest`` file its resume reads.

    With ``save_on_each_node`` DeepSpeed writes every node's shards into that node's folder
    (``checkpoint.use_node_local_storage``) but its ``latest`` file (the tag ``load_checkpoint`` reads when
    given none, as transformers' resume does) on global rank 0 only, so every other node failed to resume
    ("failed to resume from checkpoint", found by tests/distributed/test_multi_node.py). The tag is the
    folder's one ``global_step*`` directory, which is what rank 0 writes; written through a temporary file
    so a kill leaves no half-written tag.
    """
    tags = sorted(p.name for p in Path(folder).glob("global_step*") if p.is_dir())
    if len(tags) != 1 or (Path(folder) / "latest").is_file():
        return  # not a DeepSpeed checkpoint (or rank 0's own tag is there)
    tmp = Path(folder) / f".latest.{os.getpid()}"
    tmp.write_text(tags[0])
    os.replace(tmp, Path(folder) / "latest")
