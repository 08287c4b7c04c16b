"""Shared fixtures of the verl tests: the tiny tokenizer of a module's ``data`` fixture, and verl's data config
and dataset factory for ``PHIDataset`` (the module's ``MAX_PROMPT`` and ``DATA_SEED``, plus ``phi_*`` keys).

The modules here skip on ``importorskip("verl.trainer")``, not ``"verl"``: pytest puts tests/ on sys.path, where
this folder reads as a namespace package ``verl`` in an environment without the real one."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def tokenizer(data):
    """The tokenizer the module's ``data`` fixture prepared its parquet files with."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(data["tokenizer_dir"])


@pytest.fixture(scope="module")
def data_config(request):
    """``data_config(**phi)``: verl's legacy data config naming PHIDataset, with ``phi_<key>=value`` added the way
    ``+data.phi_<key>=value`` adds it on the command line."""
    import verl.trainer.config as verl_config
    from omegaconf import OmegaConf, open_dict

    def make(**phi):
        cfg = OmegaConf.load(Path(verl_config.__file__).parent / "data" / "legacy_data.yaml")
        cfg.custom_cls.path = "pkg://llm4icd_plugins.verl.dataset"
        cfg.custom_cls.name = "PHIDataset"
        cfg.max_prompt_length = request.module.MAX_PROMPT
        cfg.seed = request.module.DATA_SEED
        cfg.dataloader_num_workers = 0
        OmegaConf.set_struct(cfg, True)
        with open_dict(cfg):
            for key, value in phi.items():
                cfg[f"phi_{key}"] = value
        return cfg

    return make


@pytest.fixture(scope="module")
def build(data_config):
    """``build(path, tokenizer, **phi)``: a training dataset through verl's own ``create_rl_dataset``."""
    from verl.trainer.ppo.utils import create_rl_dataset

    def make(path, tokenizer, **phi):
        return create_rl_dataset(str(path), data_config(**phi), tokenizer, None, is_train=True)

    return make
