"""Precomputed reference log-probs: one pass before training, cached on disk, reused across runs.

The cache key hashes the reference weights (TRL's ``hash_module``), its config and the tokenised rows, so a
different model, dataset, prompt format or truncation never reuses a stale cache. Files are
safetensors (no pickle).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import datasets
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from alignkit.paths import cache_root
from alignkit.sampling.cache import model_fingerprint

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return cache_root() / "ref_logps"


def data_hash(encoded: datasets.Dataset) -> str:
    h = hashlib.sha256()
    for column in ("prompt_ids", "completion_ids"):
        h.update(json.dumps(encoded.data.column(column).to_pylist(), separators=(",", ":")).encode())
    return h.hexdigest()


def cache_key(ref_model: torch.nn.Module, encoded: datasets.Dataset) -> str:
    # The config joins the weights in the key (identical weights under another config, rope scaling,
    # softcapping, ..., give other log-probs); the folder's path does not (each node's own copy).
    parts = f"{model_fingerprint(ref_model)}-{data_hash(encoded)}"
    return hashlib.sha256(parts.encode()).hexdigest()[:32]


@torch.no_grad()
def compute_ref_logps(
    forward_fn, encoded: datasets.Dataset, collator, batch_size: int, device
) -> list[list[float]]:
    """Summed reference log-prob of every completion of every row, in row order."""
    loader = DataLoader(encoded, batch_size=batch_size, shuffle=False, collate_fn=collator)
    out: list[list[float]] = []
    for batch in loader:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        seq = forward_fn(batch).seq_logps.float().cpu()
        for k in batch["group_sizes"].tolist():
            out.append(seq[:k].tolist())
            seq = seq[k:]
    return out


def with_ref_logps(
    encoded: datasets.Dataset,
    ref_model,
    forward_fn,
    collator,
    *,
    batch_size: int,
    device,
    cache_dir: str | Path | None,
) -> datasets.Dataset:
    """Return ``encoded`` with a ``ref_logps`` column, from the cache when the key matches."""
    directory = Path(cache_dir) if cache_dir else default_cache_dir()
    path = directory / f"{cache_key(ref_model, encoded)}.safetensors"
    if path.is_file():
        stored = load_file(path)
        flat, sizes = stored["ref_logps"].tolist(), stored["group_sizes"].tolist()
        logger.info("Reference log-probs loaded from cache %s", path)
        values, start = [], 0
        for k in sizes:
            values.append(flat[start : start + k])
            start += k
    else:
        values = compute_ref_logps(forward_fn, encoded, collator, batch_size, device)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file(
            {
                "ref_logps": torch.tensor([v for row in values for v in row], dtype=torch.float32),
                "group_sizes": torch.tensor([len(row) for row in values], dtype=torch.long),
            },
            tmp,
        )
        os.replace(tmp, path)  # atomic: a killed run never leaves a half-written cache behind
        logger.info("Reference log-probs computed and cached at %s", path)
    if "ref_logps" in encoded.column_names:
        encoded = encoded.remove_columns("ref_logps")
    return encoded.add_column("ref_logps", values)
