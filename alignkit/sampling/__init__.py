"""Sampling from the model inside training: K seeded completions per prompt, filters, an on-disk cache.

Reusable by any online method: :func:`sample_prompts` draws (batched, left-padded, seeded per prompt,
sharded across ranks), :func:`filter_samples` drops unusable samples, ``cache`` stores a draw with
its reference log-probs.
"""

from alignkit.sampling.cache import (
    default_sample_cache_dir,
    gathered_parameters,
    is_cache_writer,
    load_samples,
    load_samples_on_every_rank,
    model_fingerprint,
    sample_cache_key,
    save_samples,
)
from alignkit.sampling.filters import SampleFilter, filter_samples
from alignkit.sampling.generate import (
    GenerateBackend,
    SamplingResult,
    SamplingSettings,
    VLLMBackend,
    sample_prompts,
)

__all__ = [
    "GenerateBackend",
    "SampleFilter",
    "SamplingResult",
    "SamplingSettings",
    "VLLMBackend",
    "default_sample_cache_dir",
    "filter_samples",
    "gathered_parameters",
    "is_cache_writer",
    "load_samples",
    "load_samples_on_every_rank",
    "model_fingerprint",
    "sample_cache_key",
    "sample_prompts",
    "save_samples",
]
