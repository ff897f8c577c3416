"""The flags every ``alignkit eval`` benchmark shares, checked before any model is loaded."""

from __future__ import annotations

from pathlib import Path


def check_eval_args(args) -> None:
    """Flags every benchmark shares, checked before any model is loaded (each error is one line)."""
    from alignkit.errors import MissingFileError, UserError
    from alignkit.models.source import check_pretrained_source

    for flag in ("batch_size", "max_examples", "num_prompts", "attack_batch_size"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {value}.")
    if getattr(args, "skip", 0) < 0:
        raise UserError(f"--skip must be 0 or more (prompts skipped from the start), got {args.skip}.")
    for flag in ("model", "retain_model", "ref_model", "target_model"):
        if getattr(args, flag, None):
            check_pretrained_source(getattr(args, flag), flag=f"--{flag.replace('_', '-')}")
    logs = getattr(args, "retain_logs", None)
    if logs and not Path(logs).exists():
        raise MissingFileError(
            f"--retain-logs {logs} does not exist; give the retain model's eval log or its folder."
        )
