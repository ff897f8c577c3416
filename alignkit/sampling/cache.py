"""On-disk cache of drawn samples and their reference log-probs (safetensors + JSON, never pickle).

The key hashes everything that determines the contents: the weights and config of the sampling
model and of each reference, the tokenised data, the sampling settings, and the caller's encoding
settings. A different model, dataset or temperature therefore never reuses a stale cache, and a
re-run (or a resumed run) with the same inputs draws nothing again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import nullcontext
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from alignkit._trl_compat import hash_module
from alignkit.paths import cache_root

FORMAT_VERSION = 1


def default_sample_cache_dir() -> Path:
    return cache_root() / "samples"


def gathered_parameters(module: torch.nn.Module):
    """Whole parameters under DeepSpeed ZeRO-3 (a collective: every rank enters), else nothing to do.

    Hash (:func:`model_fingerprint`) or sample from a sharded model inside it.
    """
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(module.parameters()))


def config_fingerprint(config) -> str:
    """A model config's hash, without ``_name_or_path``: where the folder lies is not what the model computes
    (the same model read from each node's own disk, or from a moved folder, keys the same cache entry)."""
    if config is None:
        return hashlib.sha256(b"").hexdigest()
    settings = json.loads(config.to_json_string(use_diff=False))
    settings.pop("_name_or_path", None)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def model_fingerprint(model: torch.nn.Module) -> str:
    """Weights (TRL's ``hash_module``) and config: identical weights under another config score differently."""
    return f"{hash_module(model)}-{config_fingerprint(getattr(model, 'config', None))}"


def sample_cache_key(*, models: list[str], data: str, settings: dict, extra: dict) -> str:
    payload = json.dumps(
        {"v": FORMAT_VERSION, "models": models, "data": data, "settings": settings, "extra": extra},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _flat(values: list[list[float]]) -> dict[str, torch.Tensor]:
    return {
        "values": torch.tensor([v for row in values for v in row], dtype=torch.float64),
        "sizes": torch.tensor([len(row) for row in values], dtype=torch.long),
    }


def _nested(stored: dict[str, torch.Tensor]) -> list[list[float]]:
    flat, out, start = stored["values"].tolist(), [], 0
    for k in stored["sizes"].tolist():
        out.append(flat[start : start + k])
        start += k
    return out


def is_cache_writer() -> bool:
    """Whether this process writes the sample cache: each node's local main process.

    The cache directory may be node-local (``$ALIGNKIT_CACHE`` on local disk) or shared: one writer per
    node fills every node-local cache, and on a shared one the nodes' writes of the same draw are atomic
    renames of identical files (see docs/architecture.md, "Who writes what on several nodes").
    """
    from accelerate import PartialState

    return PartialState().is_local_main_process


def _temporary(final: Path) -> Path:
    # A name of its own per writer: several nodes may write the same entry of a shared cache at once.
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    return Path(name)


def save_samples(
    directory: str | Path, key: str, completions: list[list[str]], ref_logps: list[list[float]], meta: dict
) -> Path:
    """Write ``<key>.safetensors`` (reference log-probs) then ``<key>.json`` (texts), each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, text = directory / f"{key}.safetensors", directory / f"{key}.json"
    tmp = _temporary(tensors)
    save_file(_flat(ref_logps), str(tmp))
    os.replace(tmp, tensors)
    tmp = _temporary(text)
    tmp.write_text(json.dumps({"v": FORMAT_VERSION, "completions": completions, "meta": meta}))
    os.replace(tmp, text)  # the JSON is the commit marker: written last, a killed run leaves no half cache
    return text


def load_samples(directory: str | Path, key: str) -> tuple[list[list[str]], list[list[float]], dict] | None:
    directory = Path(directory)
    tensors, text = directory / f"{key}.safetensors", directory / f"{key}.json"
    if not (tensors.is_file() and text.is_file()):
        return None
    stored = json.loads(text.read_text())
    return stored["completions"], _nested(load_file(str(tensors))), stored["meta"]


def load_samples_on_every_rank(directory: str | Path, key: str):
    """:func:`load_samples`, or ``None`` on every rank unless every rank's cache holds the draw.

    A draw is collective (each rank samples a shard, the shards are gathered), so the ranks must agree
    on drawing: with node-local caches one node may hold a draw that another lacks (a node that is new,
    or whose disk was wiped), and then every rank draws again rather than one node waiting forever.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    stored = load_samples(directory, key)
    if PartialState().num_processes > 1 and not all(gather_object([stored is not None])):
        return None
    return stored
