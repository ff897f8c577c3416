"""Data layer: one canonical record for every input shape, and the shared collator."""

from alignkit.data.collator import PreferenceCollator, to_dense
from alignkit.data.loading import PAIRINGS, ForgetRetainDataset, load_pairs, load_rows, prepare_dataset
from alignkit.data.prompt_format import PromptFormat
from alignkit.data.records import ROLE_IDS, ROLES, PreferenceRecord, RecordError, normalize_record
from alignkit.data.tokenize import encode_prompt_completion

__all__ = [
    "ROLES",
    "ROLE_IDS",
    "PAIRINGS",
    "ForgetRetainDataset",
    "PreferenceCollator",
    "PreferenceRecord",
    "PromptFormat",
    "RecordError",
    "encode_prompt_completion",
    "load_pairs",
    "load_rows",
    "normalize_record",
    "prepare_dataset",
    "to_dense",
]
