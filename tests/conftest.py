"""Shared fixtures: offline settings, the real-data locations, and a tiny model built on the spot."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Caches (reference log-probs, drawn samples, generated data) go to a folder of this session, never
# the user's ~/.cache: a test must not reuse what an earlier run left, nor leave anything behind.
# Set before anything is imported, so subprocess launches (DDP, ZeRO) inherit the same folder.
if "ALIGNKIT_CACHE" not in os.environ:
    import tempfile

    os.environ["ALIGNKIT_CACHE"] = tempfile.mkdtemp(prefix="alignkit-test-cache-")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

CORPUS = [
    "The author was born in Paris in 1970 and writes mystery novels.",
    "Question: Where was the author born? Answer: The author was born in Paris.",
    "I don't know the answer to that question.",
    "Recommend a movie: a quiet drama about the sea, a loud action film, a comedy of errors.",
    "The capital of France is Paris. Water boils at one hundred degrees.",
    "Hello there! How can I help you today? Thank you, goodbye.",
]


def shared_dir(name: str) -> Path:
    """A folder of ../shared/data, or skip: a user's clone has no ../shared beside it."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(
            f"real data not available: {path} is absent (it sits beside the repo only in CI/dev checkouts)"
        )
    return path


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine a second thread made
    a tiny-model forward 20-50x slower. Session scope: set before every other fixture runs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tofu_dir() -> Path:
    return shared_dir("tofu")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from alignkit.models import build_tiny_model

    return build_tiny_model(CORPUS * 3, tmp_path_factory.mktemp("tiny_model"), vocab_size=400, seed=0)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def plain_tokenizer(tiny_model_dir):
    """The tiny tokenizer without a chat template, as a base model's tokenizer would be."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    return tok


@pytest.fixture(scope="session")
def bos_tokenizer(tiny_model_dir):
    """The tiny tokenizer made to prepend BOS (as Llama's does), chat template kept."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.backend_tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.bos_token_id)]
            ),
        ]
    )
    assert tok("x")["input_ids"][0] == tok.bos_token_id
    return tok
