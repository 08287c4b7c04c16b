"""Every GPU GRPO recipe composes through verl's own Hydra ``ppo_trainer`` config, on CPU: no key that
verl does not know (a misspelled key would be silently accepted by Hydra), the paper's settings, the
plugin paths resolve, privacy defaults hold, and verl's own ``validate_config`` accepts it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("verl")
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODELS = ("qwen2.5-1.5b-instruct", "qwen3-4b")
DATASETS = ("mimic3_full", "mimic3_top50", "mimic4_full", "mimic4_top50")
RECIPES = [(m, d) for m in MODELS for d in DATASETS]
REQUIRED = {"data.train_files": "/data/train.parquet", "data.val_files": "/data/val.parquet",
            "actor_rollout_ref.model.path": "/models/sft", "trainer.default_local_dir": "/ckpt"}
PHI_OVERRIDES = ["data.custom_cls.path=pkg://llm4icd_plugins.verl_dataset", "data.custom_cls.name=PHIDataset",
                 "+data.phi_inject_prob=0.5", "+data.phi_max_hints=5", "+data.phi_temperature=3.0"]


def _compose(config_dir: Path, name: str, overrides=()):
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(config_name=name, overrides=list(overrides))


@pytest.fixture(scope="module")
def base():
    import verl.trainer.config as verl_config

    cfg = _compose(Path(verl_config.__file__).parent, "ppo_trainer")
    return OmegaConf.to_container(cfg, resolve=False)


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def _has(tree: dict, dotted: str) -> bool:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _recipe(model, dataset, extra=()):
    overrides = [f"{k}={v}" for k, v in REQUIRED.items()] + list(extra)
    return _compose(REPO / "recipes" / model / "grpo", f"config_{dataset}", overrides)


@pytest.mark.parametrize("model,dataset", RECIPES)
def test_recipe_keys_all_exist_in_verl(base, model, dataset):
    raw = OmegaConf.to_container(OmegaConf.load(REPO / "recipes" / model / "grpo" / f"config_{dataset}.yaml"))
    raw.pop("hydra"), raw.pop("defaults")
    unknown = [key for key, _ in _leaves(raw) if not _has(base, key)]
    # apply_chat_template_kwargs is an open dict in verl ({}): its keys are chat-template arguments
    unknown = [k for k in unknown if not k.startswith("data.apply_chat_template_kwargs.")]
    assert not unknown, f"keys verl's ppo_trainer does not define (misspelled?): {unknown}"


def test_key_check_catches_a_misspelling(base):
    assert _has(base, "data.max_response_length") and not _has(base, "data.max_response_lenght")


@pytest.mark.parametrize("model,dataset", RECIPES)
def test_recipe_composes_with_paper_settings(model, dataset):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    cfg = _recipe(model, dataset)
    OmegaConf.resolve(cfg)
    assert cfg.algorithm.adv_estimator == "grpo" and not cfg.algorithm.use_kl_in_reward
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert rollout.n == 8 and rollout.name == "vllm" and rollout.top_p < 1.0 and rollout.temperature > 0
    assert actor.use_kl_loss and actor.kl_loss_coef == pytest.approx(1e-3)
    assert cfg.actor_rollout_ref.model.lora_rank > 0 and rollout.load_format == "safetensors"
    assert (cfg.data.max_response_length == 196) == dataset.endswith("top50")
    assert cfg.data.max_response_length >= 196
    assert not rollout.val_kwargs.do_sample
    assert cfg.trainer.n_gpus_per_node == 4 and cfg.trainer.nnodes == 1
    # privacy: no prompt or generation text leaves the machine or lands in a dump
    assert list(cfg.trainer.logger) == ["console", "tensorboard"]
    assert cfg.trainer.log_val_generations == 0
    assert cfg.trainer.rollout_data_dir is None and cfg.trainer.validation_data_dir is None
    thinking = OmegaConf.to_container(cfg.data.apply_chat_template_kwargs).get("enable_thinking")
    assert thinking is (False if model == "qwen3-4b" else None)
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    assert need_reference_policy(cfg) and not need_critic(cfg)


@pytest.mark.parametrize("model,dataset", RECIPES)
def test_plugin_paths_resolve(model, dataset):
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.utils.dataset.rl_dataset import get_dataset_class
    from verl.utils.import_utils import load_extern_object

    from llm4icd_plugins import reward
    from llm4icd_plugins.verl_dataset import PHIDataset

    cfg = _recipe(model, dataset, PHI_OVERRIDES)
    fn = load_extern_object(cfg.reward.custom_reward_function.path, cfg.reward.custom_reward_function.name)
    assert fn is reward.compute_score
    assert get_custom_reward_fn(cfg) is not None  # verl's own loader (wraps the function)
    assert get_dataset_class(cfg.data) is PHIDataset
    assert cfg.data.phi_inject_prob == 0.5


def test_paths_are_mandatory_in_every_recipe(monkeypatch):
    """Without overrides, a path comes from an environment variable and its absence is an error naming it
    (``???`` would not do: merged over verl's defaults it silently keeps verl's example gsm8k paths)."""
    for var in ("LLM4ICD_TRAIN_FILE", "LLM4ICD_VAL_FILE", "MODEL_PATH", "LLM4ICD_CKPT_DIR"):
        monkeypatch.delenv(var, raising=False)
    for model, dataset in RECIPES:
        cfg = _compose(REPO / "recipes" / model / "grpo", f"config_{dataset}")
        for key in REQUIRED:
            with pytest.raises(Exception, match="Environment variable .* not found"):
                OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    monkeypatch.setenv("LLM4ICD_TRAIN_FILE", "/x/train.parquet")
    assert OmegaConf.select(cfg, "data.train_files") == "/x/train.parquet"


@pytest.mark.parametrize("script", [f"grpo_{d}.sh" for d in DATASETS] + [f"phi_{d}.sh" for d in DATASETS])
def test_wrapper_fails_clearly_without_paths(script, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM4ICD_", "MODEL_PATH", "OUTPUT_DIR"))}
    env["LLM4ICD_DATA_ROOT"] = str(tmp_path / "nowhere")
    proc = subprocess.run(["bash", str(REPO / "recipes" / script), MODELS[0]], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "error" in proc.stderr and ("MODEL_PATH" in proc.stderr or "nowhere" in proc.stderr)
