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

from contextlib import contextmanager


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
