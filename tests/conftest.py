"""Shared fixtures: the repository root and a tiny Qwen model/tokenizer built locally (no hub).

The tokenizer is trained on notes from ``data_tools.build.synth`` when that module is available, else on
``data_tools.build.tiny_model``'s built-in clinical-style texts. Both fixtures are session-scoped and take
a few seconds; tests that need transformers are skipped in environments without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE_SEED = 0
FIXTURE_ADMISSIONS = 40

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the folder holding pyproject.toml)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_texts() -> list[str]:
    """The deterministic corpus the tiny tokenizer is trained on (synthetic notes + code strings)."""
    from data_tools.build import tiny_model

    try:
        import data_tools.build.synth  # noqa: F401
    except ImportError:
        return tiny_model.builtin_texts()
    return tiny_model.synthetic_texts(FIXTURE_ADMISSIONS, seed=FIXTURE_SEED)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory, tiny_texts) -> Path:
    """A folder with only the tiny Qwen2.5-style tokenizer (tokenizer.json + config + chat template)."""
    pytest.importorskip("transformers")
    from data_tools.build.tiny_model import train_tokenizer

    out = tmp_path_factory.mktemp("tiny_tokenizer")
    train_tokenizer(tiny_texts, out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_texts) -> Path:
    """A tiny Qwen2 model (2 layers, hidden 128, head dim 64, random weights) plus its tokenizer."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from data_tools.build.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen2", tiny_texts, seed=FIXTURE_SEED)


@pytest.fixture(scope="session")
def tiny_qwen3_model_dir(tmp_path_factory, tiny_texts) -> Path:
    """The Qwen3 variant (hybrid-thinking chat format, LlamaFactory template ``qwen3``)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from data_tools.build.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen3", tiny_texts, arch="qwen3",
                            seed=FIXTURE_SEED)


@pytest.fixture(scope="session")
def icd9():
    """The ICD-9-CM code system (diagnoses + procedures), built from the PyPI tables or their cache."""
    from llm4icd_plugins.codes import load_code_system

    return load_code_system("icd9")


@pytest.fixture(scope="session")
def icd10():
    """The ICD-10-CM/PCS code system, built from the PyPI tables or their cache."""
    from llm4icd_plugins.codes import load_code_system

    return load_code_system("icd10")
