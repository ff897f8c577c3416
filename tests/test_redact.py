"""Which keys and values count as secrets (the end-to-end scans live in tests/cli/test_secrets.py)."""

from __future__ import annotations

import pytest

from alignkit.redact import REDACTED, is_secret_key, redact, redact_text

FAKE = "hf_FAKEfakeFAKEfake0123456789abcdef"


@pytest.mark.parametrize(
    "key",
    ["hub_token", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "db_password", "client_secret"],
)
def test_credential_keys_are_secret(key):
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "pad_token",
        "eos_token",
        "max_new_tokens",
        "include_tokens_per_second",
        "tokenizer_name_or_path",
        "beta",
    ],
)
def test_ordinary_keys_are_not(key):
    assert not is_secret_key(key)


def test_redact_nested_values_and_token_shaped_strings():
    data = {
        "hub_token": "anything at all",
        "env": {"HF_TOKEN": FAKE, "TOKENIZERS_PARALLELISM": "false"},
        "note": f"pushed with {FAKE} yesterday",
        "pad_token": "<pad>",
        "list": [{"api_key": "x" * 12}],
        "unset_token": None,
    }
    assert redact(data) == {
        "hub_token": REDACTED,
        "env": {"HF_TOKEN": REDACTED, "TOKENIZERS_PARALLELISM": "false"},
        "note": f"pushed with {REDACTED} yesterday",
        "pad_token": "<pad>",
        "list": [{"api_key": REDACTED}],
        "unset_token": None,
    }


def test_environment_secrets_are_scrubbed_from_text(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_SECRET", "plain-looking-value-42")
    assert redact_text("value=plain-looking-value-42;") == f"value={REDACTED};"
