"""Every GPU GRPO recipe (backbone × dataset × profile) composes through verl's own Hydra ``ppo_trainer`` on a
CPU and passes verl's own checks at 1×4 and 2×4 GPUs; both attention branches compose; the tiny CPU recipe is
the users' recipe with only the listed keys changed; the launcher runs with no arguments; a new backbone is
one YAML."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("verl")
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from launcher_env import fake_prepared, run_wrapper  # noqa: E402
from llm4icd_plugins.backbones import DEFAULT_BACKBONE, list_backbones, load_backbone  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
DATASETS = ("mimic3_full", "mimic3_top50", "mimic4_full", "mimic4_top50")
PROFILES = ("paper", "release")
GPU_BACKBONES = [b for b in list_backbones(RECIPES / "models") if b != "tiny"]
REQUIRED_ENV = {"TRAIN_FILE": "/data/train.parquet", "VAL_FILE": "/data/val.parquet", "MODEL_PATH": "/models/sft",
                "CKPT_DIR": "/ckpt"}
PHI_OVERRIDES = ["data.custom_cls.path=pkg://llm4icd_plugins.verl.dataset", "data.custom_cls.name=PHIDataset",
                 "+data.phi_inject_prob=0.5", "+data.phi_max_hints=5", "+data.phi_temperature=3.0"]
# The paper's App. E and the released code, written here independently of recipes/profiles/.
PAPER = {"kl_loss_coef": 1e-3, "n": 8, "lr": 1e-5, "lora_rank": 8, "top50_response": 196}
RELEASE = {"kl_loss_coef": 1e-2, "top_p": 1.0, "lora_alpha": 8, "max_prompt_length": 5120,
           "prompts_full": 512, "prompts_top50": 1024, "full_response": 512}


@pytest.fixture(autouse=True)
def _paths(monkeypatch):
    for key, value in REQUIRED_ENV.items():
        monkeypatch.setenv(key, value)


def _compose(name: str, overrides=(), config_dir: Path = RECIPES):
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = compose(config_name=name, overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


def _recipe(backbone, dataset, profile, *extra):
    return _compose(f"grpo/{dataset}", [f"models@backbone={backbone}", f"profiles@profile={profile}", *extra])


def _verl_checks(cfg) -> None:
    """What main_ppo checks before it starts workers: validate_config and the worker config dataclasses."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    n_gpus = cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    actor.validate(n_gpus, cfg.data.train_batch_size)
    omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    # verl's actor normalises the mini-batch by the data-parallel size: it must split evenly
    assert (actor.ppo_mini_batch_size * cfg.actor_rollout_ref.rollout.n) % n_gpus == 0
    assert need_reference_policy(cfg) and not need_critic(cfg)


@pytest.fixture(scope="module")
def base():
    import verl.trainer.config as verl_config

    with initialize_config_dir(config_dir=str(Path(verl_config.__file__).parent), version_base=None):
        return OmegaConf.to_container(compose(config_name="ppo_trainer"), resolve=False)


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


# verl's open dicts (any key is a valid entry) and the project's own groups
OPEN = ("data.apply_chat_template_kwargs.", "actor_rollout_ref.model.override_config.",
        "ray_kwargs.ray_init.runtime_env.env_vars.")


@pytest.mark.parametrize("path", sorted(RECIPES.glob("grpo/*.yaml")) + sorted(RECIPES.glob("attention/*.yaml"))
                         + [RECIPES / "tiny" / "grpo_synthetic.yaml"], ids=lambda p: p.stem)
def test_recipe_keys_all_exist_in_verl(base, path):
    raw = yaml.safe_load(path.read_text())
    for key in ("hydra", "defaults"):
        raw.pop(key, None)
    unknown = [k for k, _ in _leaves(raw) if not _has(base, k) and not k.startswith(OPEN)]
    assert not unknown, f"{path}: keys verl's ppo_trainer does not define (misspelled?): {unknown}"


def test_key_check_catches_a_misspelling(base):
    assert _has(base, "data.max_response_length") and not _has(base, "data.max_response_lenght")


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("backbone", GPU_BACKBONES)
def test_every_recipe_passes_verl_checks_on_one_and_two_nodes(backbone, dataset, profile):
    spec = load_backbone(backbone)
    for nodes in (1, 2):
        cfg = _recipe(backbone, dataset, profile, f"trainer.nnodes={nodes}")
        assert cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node == 4 * nodes
        _verl_checks(cfg)
    model, actor, rollout = cfg.actor_rollout_ref.model, cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert cfg.algorithm.adv_estimator == "grpo" and not cfg.algorithm.use_kl_in_reward
    assert rollout.n == PAPER["n"] and rollout.name == "vllm" and actor.optim.lr == PAPER["lr"]
    assert model.lora_rank == PAPER["lora_rank"] and rollout.load_format == "safetensors"
    assert actor.kl_loss_coef == pytest.approx(PAPER["kl_loss_coef"] if profile == "paper" else RELEASE["kl_loss_coef"])
    assert rollout.top_p == RELEASE["top_p"] and model.lora_alpha == RELEASE["lora_alpha"]
    assert cfg.data.max_prompt_length == RELEASE["max_prompt_length"]
    kind = dataset.split("_")[1]
    assert cfg.data.train_batch_size == RELEASE[f"prompts_{kind}"] == actor.ppo_mini_batch_size
    assert cfg.data.max_response_length == (PAPER["top50_response"] if kind == "top50" else RELEASE["full_response"])
    # the backbone's GPU settings reach verl: token budgets (dynamic batch size), TP, chat-template arguments
    assert actor.use_dynamic_bsz and actor.ppo_max_token_len_per_gpu == spec.actor_tokens_per_gpu
    assert rollout.log_prob_max_token_len_per_gpu == spec.log_prob_tokens_per_gpu
    assert cfg.actor_rollout_ref.ref.log_prob_use_dynamic_bsz and rollout.log_prob_use_dynamic_bsz
    assert rollout.tensor_model_parallel_size == spec.tensor_parallel_size
    # verl's dynamic batching asserts every budget holds one whole (padded) sequence: prompt + response
    longest = cfg.data.max_prompt_length + cfg.data.max_response_length
    budgets = (actor.ppo_max_token_len_per_gpu, rollout.log_prob_max_token_len_per_gpu,
               cfg.actor_rollout_ref.ref.log_prob_max_token_len_per_gpu)
    assert min(budgets) >= longest, (budgets, longest)
    assert OmegaConf.to_container(cfg.data.apply_chat_template_kwargs) == spec.chat_template_kwargs
    assert model.custom_chat_template == spec.chat_template  # the backbone's own template, None for the model's
    assert cfg.backbone.name in cfg.trainer.experiment_name and profile in cfg.trainer.experiment_name
    # bounded checkpoints; privacy: no prompt or generation text leaves the machine or lands in a dump
    assert cfg.trainer.max_actor_ckpt_to_keep == 2 and cfg.trainer.resume_mode == "auto"
    assert list(cfg.trainer.logger) == ["console", "tensorboard"] and cfg.trainer.log_val_generations == 0
    assert cfg.trainer.rollout_data_dir is None and cfg.trainer.validation_data_dir is None
    env_vars = cfg.ray_kwargs.ray_init.runtime_env.env_vars
    assert env_vars.WANDB_MODE == "disabled" and env_vars.TOKENIZERS_PARALLELISM == "false"


# Keys verl 0.9.1 (the V1 trainer these recipes run) reads nowhere for these recipes, with the reason; setting
# one would look like a setting and change nothing. Each must stay at verl's own default.
IGNORED = {
    "data.truncation": "RLHFDataset stores it and never reads it (prepare fits every prompt)",
    "actor_rollout_ref.actor.ppo_micro_batch_size": "use_dynamic_bsz: token budgets make the micro-batches",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": "use_dynamic_bsz",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size": "log_prob_use_dynamic_bsz",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": "log_prob_use_dynamic_bsz",
    "actor_rollout_ref.ref": "LoRA: the reference is the actor with its adapter off (ref_in_actor), no ref worker",
    "critic": "GRPO has no critic",
}


def _select(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


@pytest.mark.parametrize("name", [f"grpo/{d}" for d in DATASETS] + ["tiny/grpo_synthetic"])
def test_keys_verl_ignores_are_not_set(base, name):
    composed = _unresolved(name)
    for key, why in IGNORED.items():
        assert _select(composed, key) == _select(base, key), f"{name} sets {key}, which verl ignores: {why}"
    cfg = _compose(name)
    # the conditions that make them ignored hold
    assert cfg.trainer.use_v1 and cfg.actor_rollout_ref.model.lora_rank > 0
    assert cfg.actor_rollout_ref.actor.use_dynamic_bsz and cfg.actor_rollout_ref.rollout.log_prob_use_dynamic_bsz
    assert cfg.algorithm.adv_estimator == "grpo" and not cfg.critic.enable


def test_ignored_key_check_sees_a_set_key(base):
    composed = _unresolved("grpo/mimic3_full", ["data.truncation=left",
                                                "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"])
    assert [k for k in IGNORED if _select(composed, k) != _select(base, k)] == [
        "data.truncation", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu"]


def test_verl_still_ignores_them():
    """The reasons above, pinned to verl's source: a verl upgrade that starts reading a key fails here."""
    import verl

    root = Path(verl.__file__).parent
    dataset = (root / "utils" / "dataset" / "rl_dataset.py").read_text()
    assert dataset.count("self.truncation") == 1  # set in __init__, read nowhere
    trainer = (root / "trainer" / "ppo" / "v1" / "trainer_base.py").read_text()
    assert 'self.ref_in_actor = lora_rank > 0' in trainer
    actor = (root / "workers" / "config" / "actor.py").read_text()
    assert "if not self.use_dynamic_bsz:" in actor


def test_checkpoints_are_bounded_and_resumable():
    """verl 0.9.1's V1 trainer deletes actor checkpoints beyond max_actor_ckpt_to_keep; SFT keeps save_total_limit."""
    import verl

    cfg = _recipe(DEFAULT_BACKBONE, "mimic3_full", "paper")
    assert 1 <= cfg.trainer.max_actor_ckpt_to_keep <= 3 and cfg.trainer.save_freq > 0
    assert cfg.trainer.resume_mode == "auto" and not cfg.trainer.get("remove_previous_ckpt_in_save", False)
    trainer = (Path(verl.__file__).parent / "trainer" / "ppo" / "v1" / "trainer_base.py").read_text()
    assert 'self.config.trainer.get("max_actor_ckpt_to_keep", None)' in trainer
    sft = yaml.safe_load((RECIPES / "sft" / "train.yaml").read_text())
    assert 1 <= sft["save_total_limit"] <= 3


# --- a backbone's own chat template reaches verl -----------------------------------------------------------

CHAT_TEMPLATE_BACKBONES = [b for b in GPU_BACKBONES if load_backbone(b).chat_template]


def _local_model(folder: Path, family: str) -> Path:
    """A tokenizer of the family (tests/backbone_tokenizers.py) and a config.json: what HFModelConfig loads."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from backbone_tokenizers import build_tokenizer
    finally:
        sys.path.remove(str(REPO / "tests"))
    from transformers import LlamaConfig

    build_tokenizer(folder, family)
    LlamaConfig(vocab_size=800, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, architectures=["LlamaForCausalLM"]).save_pretrained(folder)
    return folder


def test_a_backbone_chat_template_reaches_verls_tokenizer(tmp_path, monkeypatch):
    """The shipped Llama-3.1 backbone replaces the model's dated template: verl's validated config carries the
    backbone's Jinja, and the tokenizer verl builds from it (dataset and rollouts) renders a date-free prompt."""
    from verl.utils.config import omega_conf_to_dataclass

    assert CHAT_TEMPLATE_BACKBONES, "no shipped backbone sets chat_template: the check below would test nothing"
    model = _local_model(tmp_path / "llama31", "llama3.1")  # the real model's template has 'Today Date'
    monkeypatch.setenv("MODEL_PATH", str(model))
    messages = [{"role": "user", "content": "Q"}]
    for name in CHAT_TEMPLATE_BACKBONES:
        spec = load_backbone(name)
        cfg = _recipe(name, "mimic3_full", "paper", "attention=sdpa")
        _verl_checks(cfg)
        assert cfg.actor_rollout_ref.model.custom_chat_template == spec.chat_template
        tokenizer = omega_conf_to_dataclass(cfg.actor_rollout_ref.model).tokenizer
        assert tokenizer.chat_template == spec.chat_template
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert "Today Date" not in text and "Q<|eot_id|>" in text
    # without a backbone template verl keeps the model's own
    cfg = _recipe(DEFAULT_BACKBONE, "mimic3_full", "paper", "attention=sdpa")
    assert cfg.actor_rollout_ref.model.custom_chat_template is None
    own = omega_conf_to_dataclass(cfg.actor_rollout_ref.model).tokenizer
    assert "Today Date" in own.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_verl_renders_rollouts_with_the_custom_template():
    """verl 0.9.1 sets custom_chat_template on the tokenizer its config builds and again in the agent loop that
    tokenizes rollout prompts for vLLM (pinned here: an upgrade that drops either fails)."""
    import verl

    root = Path(verl.__file__).parent
    model = (root / "workers" / "config" / "model.py").read_text()
    assert "self.tokenizer.chat_template = self.custom_chat_template" in model
    loop = (root / "experimental" / "agent_loop" / "agent_loop.py").read_text()
    assert "self.model_config.tokenizer.chat_template = self.model_config.custom_chat_template" in loop


@pytest.mark.parametrize("attention,remove_padding", [("sdpa", False), ("flash_attention_2", True)])
def test_both_attention_branches_compose(attention, remove_padding):
    cfg = _recipe(DEFAULT_BACKBONE, "mimic4_full", "paper", f"attention={attention}")
    _verl_checks(cfg)
    assert cfg.actor_rollout_ref.model.override_config.attn_implementation == attention
    assert cfg.actor_rollout_ref.model.use_remove_padding is remove_padding
    # verl reads the implementation from override_config (flash_attention_2 when absent)
    from verl.workers.config.model import HFModelConfig  # noqa: F401  (the dataclass main_ppo builds)

    source = Path(sys.modules["verl.workers.config.model"].__file__).read_text()
    assert 'override_config.get("attn_implementation", "flash_attention_2")' in source


def test_launcher_picks_the_attention_that_imports():
    import importlib.util

    sys.path.insert(0, str(RECIPES))
    try:
        import launch
    finally:
        sys.path.remove(str(RECIPES))
    try:
        importlib.import_module("flash_attn")
        expected = "flash_attention_2"
    except ImportError:
        expected = "sdpa"
    assert launch.attention() == expected and (RECIPES / "attention" / f"{expected}.yaml").is_file()


@pytest.mark.parametrize("dataset", DATASETS)
def test_plugin_paths_resolve(dataset):
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.utils.dataset.rl_dataset import get_dataset_class
    from verl.utils.import_utils import load_extern_object

    from llm4icd_plugins.verl import reward
    from llm4icd_plugins.verl.dataset import PHIDataset

    cfg = _recipe(DEFAULT_BACKBONE, dataset, "paper", *PHI_OVERRIDES)
    fn = load_extern_object(cfg.reward.custom_reward_function.path, cfg.reward.custom_reward_function.name)
    assert fn is reward.compute_score and get_custom_reward_fn(cfg) is not None
    assert get_dataset_class(cfg.data) is PHIDataset and cfg.data.phi_inject_prob == 0.5


def test_paths_are_mandatory(monkeypatch):
    """Without the environment variables the launcher sets, a path is an error naming the variable (``???``
    would not do: merged over verl's defaults it silently keeps verl's example gsm8k paths)."""
    for var in REQUIRED_ENV:
        monkeypatch.delenv(var)
    with initialize_config_dir(config_dir=str(RECIPES), version_base=None):
        cfg = compose(config_name="grpo/mimic3_full")
    for key in ("data.train_files", "data.val_files", "actor_rollout_ref.model.path", "trainer.default_local_dir"):
        with pytest.raises(Exception, match="Environment variable .* not found"):
            OmegaConf.select(cfg, key, throw_on_resolution_failure=True)


# --- the tiny CPU recipe is the users' recipe at another scale -----------------------------------------------

# key -> why the CPU ladder may differ from the users' recipe; everything else must be equal
TINY_ALLOWED = {
    "backbone.*": "the tiny backbone (recipes/models/tiny.yaml)",
    "data.max_prompt_length": "scale: the tiny model's prompts",
    "data.max_response_length": "scale",
    "data.train_batch_size": "scale",
    "data.dataloader_num_workers": "two CPU cores",
    "actor_rollout_ref.model.lora_alpha": "scale: LoRA on a 1M-parameter model",
    "actor_rollout_ref.actor.optim.lr": "scale: a 1M-parameter model",
    "actor_rollout_ref.actor.optim.lr_scheduler_type": "scale",
    "actor_rollout_ref.actor.ppo_mini_batch_size": "scale",
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": "tiny backbone's token budget",
    "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu": "tiny backbone's token budget",
    "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu": "tiny backbone's token budget",
    "actor_rollout_ref.rollout.max_num_seqs": "scale",
    "actor_rollout_ref.rollout.max_num_batched_tokens": "scale",
    "trainer.project_name": "name", "trainer.experiment_name": "name",
    "trainer.total_training_steps": "scale", "trainer.save_freq": "scale", "trainer.test_freq": "scale",
}
# CPU-only settings recipes/tiny/grpo/run_cpu.sh adds on the command line (prefixes)
CPU_ALLOWED = ("trainer.device", "trainer.nnodes", "trainer.n_gpus_per_node", "actor_rollout_ref.actor.strategy",
               "actor_rollout_ref.ref.strategy", "actor_rollout_ref.actor.use_torch_compile",
               "actor_rollout_ref.ref.use_torch_compile", "+actor_rollout_ref.actor.fsdp_config.mixed_precision",
               "+actor_rollout_ref.ref.fsdp_config.mixed_precision", "actor_rollout_ref.rollout.dtype",
               "actor_rollout_ref.rollout.name", "actor_rollout_ref.rollout.tensor_model_parallel_size",
               "actor_rollout_ref.rollout.enforce_eager", "+actor_rollout_ref.rollout.enable_sleep_mode",
               "actor_rollout_ref.rollout.agent.num_workers", "reward.num_workers",
               "transfer_queue.backend.SimpleStorage.num_data_storage_units", "ray_kwargs.ray_init.num_cpus",
               "+ray_kwargs.ray_init.num_gpus")


def _allowed(key: str) -> bool:
    return any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in TINY_ALLOWED)


def _unresolved(name: str, overrides=()):
    with initialize_config_dir(config_dir=str(RECIPES), version_base=None):
        return OmegaConf.to_container(compose(config_name=name, overrides=list(overrides)), resolve=False)


def test_tiny_recipe_differs_from_the_users_recipe_only_in_scale():
    """Unresolved, so that a key derived from another (``${data.max_prompt_length}``) counts once."""
    users = dict(_leaves(_unresolved("grpo/mimic3_full", ["models@backbone=tiny"])))
    tiny = dict(_leaves(_unresolved("tiny/grpo_synthetic")))
    assert set(users) == set(tiny)
    differ = {k for k in users if users[k] != tiny[k]}
    assert "data.train_batch_size" in differ, "the comparison found nothing: it would pass on anything"
    assert not {k for k in differ if not _allowed(k)}, "keys the CPU recipe changes without a listed reason"
    # the keys CI now exercises as users run them
    cfg = _compose("tiny/grpo_synthetic")
    model, actor = cfg.actor_rollout_ref.model, cfg.actor_rollout_ref.actor
    assert model.enable_gradient_checkpointing and cfg.actor_rollout_ref.rollout.layered_summon
    assert actor.use_dynamic_bsz and "tensorboard" in cfg.trainer.logger
    assert actor.kl_loss_coef == PAPER["kl_loss_coef"] and cfg.trainer.max_actor_ckpt_to_keep == 2


def test_cpu_launcher_adds_only_cpu_keys():
    text = (RECIPES / "tiny" / "grpo" / "run_cpu.sh").read_text()
    block = text[text.index('--config-name "$CONFIG_NAME"'):text.index('"$@"')]
    keys = re.findall(r"^\s+\"?([+\w.]+)=", block, flags=re.M)
    assert len(keys) >= 10 and set(keys) <= set(CPU_ALLOWED), set(keys) - set(CPU_ALLOWED)


# --- the launcher --------------------------------------------------------------------------------------------

def _launch(args, env_extra=None, cwd=REPO):
    return run_wrapper(args, env_extra, cwd)


@pytest.mark.parametrize("stage", ["grpo", "phi"])
def test_wrapper_runs_without_arguments_and_stops_at_missing_data(stage, tmp_path):
    proc = _launch([RECIPES / f"{stage}_mimic3_full.sh"], {"LLM4ICD_DATA_ROOT": str(tmp_path / "nowhere")})
    assert proc.returncode == 2, proc.stderr
    assert f"backbone {DEFAULT_BACKBONE} (the default" in proc.stderr
    missing = tmp_path / "nowhere" / DEFAULT_BACKBONE / "mimic3_full" / "verl" / "train.parquet"
    assert f"{missing}: no training file" in proc.stderr
    command = proc.stderr.split("prepare it with: ", 1)[1]
    # --backbone, not --tokenizer: it records the fingerprint the data check needs and the backbone's chat template
    assert command.startswith("python -m data_tools.build.prepare mimic3 ")
    assert f"--backbone {DEFAULT_BACKBONE} " in command
    assert f"--out {tmp_path / 'nowhere' / DEFAULT_BACKBONE}" in command
    assert "Traceback" not in proc.stderr


def test_wrapper_help_lists_backbones_and_datasets():
    proc = _launch([RECIPES / "grpo_mimic4_top50.sh", "--help"])
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for name in GPU_BACKBONES + list(DATASETS) + list(PROFILES):
        assert name in text


def test_unknown_backbone_names_the_file_and_the_fix():
    proc = _launch([RECIPES / "grpo_mimic3_full.sh", "--backbone", "qwen9"])
    assert proc.returncode == 2 and "qwen9.yaml: no backbone 'qwen9'" in proc.stderr and "Fix:" in proc.stderr


def _fake_prepared(root: Path, backbone: str, dataset: str) -> Path:
    return fake_prepared(root / backbone / dataset)


def test_adding_a_backbone_is_one_yaml(tmp_path):
    """A backbone in a temporary folder: the registry reads it, the launcher composes verl's command with it."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "mistral-7b-instruct.yaml").write_text(
        "name: mistral-7b-instruct\nmodel: mistralai/Mistral-7B-Instruct-v0.3\ntemplate: mistral\n"
        "chat_template: null\nchat_template_kwargs: {}\ntensor_parallel_size: 2\nactor_tokens_per_gpu: 8192\n"
        "log_prob_tokens_per_gpu: 16384\ngpu_memory_utilization: 0.7\n")
    spec = load_backbone("mistral-7b-instruct", models)
    assert spec.template == "mistral" and spec.tensor_parallel_size == 2
    cfg = _compose("grpo/mimic3_top50", ["models@backbone=mistral-7b-instruct",
                                         f"hydra.searchpath=[pkg://verl.trainer.config,file://{tmp_path}]"])
    _verl_checks(cfg)
    assert cfg.actor_rollout_ref.rollout.tensor_model_parallel_size == 2
    assert cfg.actor_rollout_ref.actor.ppo_max_token_len_per_gpu == 8192

    data = _fake_prepared(tmp_path / "prepared", "mistral-7b-instruct", "mimic3_full")
    model = tmp_path / "merged"
    model.mkdir()
    (model / "config.json").write_text("{}")
    proc = _launch([RECIPES / "launch.sh", "grpo", "mimic3_full", "--dry-run", "trainer.total_epochs=2"],
                   {"LLM4ICD_BACKBONE_DIR": str(models), "BACKBONE": "mistral-7b-instruct",
                    "LLM4ICD_DATA_ROOT": str(tmp_path / "prepared"), "MODEL_PATH": str(model)})
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(proc.stdout.strip().splitlines()[-1])
    assert cmd[1:3] == ["-m", "verl.trainer.main_ppo"] and "models@backbone=mistral-7b-instruct" in cmd
    assert f"hydra.searchpath=[pkg://verl.trainer.config,file://{tmp_path}]" in cmd
    assert cmd[-1] == "trainer.total_epochs=2"
    # Full: the response length measured from stats.json (300 answer tokens -> 1.25 x 300 + 32 -> 448)
    assert "data.max_response_length=448" in cmd and f"max_response_length 448 (measured in {data}" in proc.stderr


def test_launcher_forwards_the_runs_variables_to_every_node(tmp_path):
    _fake_prepared(tmp_path / "prepared", DEFAULT_BACKBONE, "mimic4_top50")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    proc = _launch([RECIPES / "launch.sh", "grpo", "mimic4_top50", "--dry-run", "--profile", "release"],
                   {"LLM4ICD_DATA_ROOT": str(tmp_path / "prepared"), "MODEL_PATH": str(tmp_path / "m"),
                    "HF_HOME": "/shared/hf cache", "NNODES": "2"})
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(proc.stdout.strip().splitlines()[-1])
    assert '+ray_kwargs.ray_init.runtime_env.env_vars.HF_HOME="/shared/hf cache"' in cmd
    assert "trainer.nnodes=2" in cmd and "profiles@profile=release" in cmd
    assert "data.max_response_length=196" in cmd
    overrides = [c for c in cmd[cmd.index("grpo/mimic4_top50") + 1:] if not c.startswith("hydra.")]
    env = {**REQUIRED_ENV, "HF_HOME": "/shared/hf cache"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        cfg = _compose("grpo/mimic4_top50", overrides)
    assert cfg.ray_kwargs.ray_init.runtime_env.env_vars.HF_HOME == "/shared/hf cache"
    # verl hands runtime_env to ray.init with OmegaConf.to_container(...) unresolved: an interpolation there
    # would reach the workers as a literal "${...}" string (it once created a folder of that name)
    raw = OmegaConf.load(RECIPES / "grpo" / "common.yaml").ray_kwargs.ray_init.runtime_env.env_vars
    raw = OmegaConf.to_container(raw, resolve=False)
    assert raw and not any("${" in str(v) for v in raw.values()), raw
    tensorboard = "+ray_kwargs.ray_init.runtime_env.env_vars.TENSORBOARD_DIR="
    assert any(c.startswith(tensorboard) and "${" not in c for c in cmd), "the run's TensorBoard folder is forwarded"
    _verl_checks(cfg)


def test_phi_steps_are_plain_launcher_commands(tmp_path):
    _fake_prepared(tmp_path / "prepared", DEFAULT_BACKBONE, "mimic3_full")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    proc = _launch([RECIPES / "phi_mimic3_full.sh", "--dry-run", "+data.phi_max_hints=3"],
                   {"LLM4ICD_DATA_ROOT": str(tmp_path / "prepared"), "MODEL_PATH": str(tmp_path / "m")})
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(proc.stdout.strip().splitlines()[-1])
    steps = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].endswith("-cmd")}
    # GRPO and the refresh share one response length, computed once (300 answer tokens -> 448)
    assert "MAX_RESPONSE_LENGTH=448" in steps["--train-cmd"] and "MAX_RESPONSE_LENGTH=448" in steps["--infer-cmd"]
    assert " grpo mimic3_full " in steps["--train-cmd"] and "+data.phi_max_hints=3" in steps["--train-cmd"]
    assert " infer mimic3_full " in steps["--infer-cmd"] and "verl.model_merger merge" in steps["--export-cmd"]
    assert "__train" not in " ".join(cmd)


@pytest.mark.parametrize("mode", ["adapter", "checkpoint"])
def test_phi_rounds_resume_the_adapter_or_the_whole_checkpoint(tmp_path, mode):
    """PHI_RESUME=checkpoint: round t >= 2 is verl's resume from the previous round's global_step folder (optimizer
    and step counter included) and trains the t-th epoch; the default continues from the exported adapter."""
    _fake_prepared(tmp_path / "prepared", DEFAULT_BACKBONE, "mimic3_full")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    env = {"LLM4ICD_DATA_ROOT": str(tmp_path / "prepared"), "MODEL_PATH": str(tmp_path / "m"), "PHI_RESUME": mode}
    proc = _launch([RECIPES / "phi_mimic3_full.sh", "--dry-run"], env)
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(proc.stdout.strip().splitlines()[-1])
    train = cmd[cmd.index("--train-cmd") + 1]
    if mode == "checkpoint":
        assert "RESUME_FROM={prev_checkpoint}" in train and "trainer.total_epochs={round}" in train
        assert "LORA_ADAPTER_PATH" not in train and "whole checkpoint" in proc.stderr
    else:
        assert "LORA_ADAPTER_PATH={prev_adapter}" in train and "trainer.total_epochs=1" in train
        assert "RESUME_FROM" not in train
    # round 2 of the checkpoint mode, as phi.rounds fills it: the grpo command verl would run
    step = tmp_path / "run" / "round_1" / "checkpoints" / "global_step_7"
    (step / "actor").mkdir(parents=True)
    proc = _launch([RECIPES / "launch.sh", "grpo", "mimic3_full", "--dry-run", "trainer.total_epochs=2"],
                   {**env, "RESUME_FROM": str(step)})
    assert proc.returncode == 0, proc.stderr
    grpo = shlex.split(proc.stdout.strip().splitlines()[-1])
    assert "trainer.resume_mode=resume_path" in grpo and f"trainer.resume_from_path={step}" in grpo
    overrides = [c for c in grpo[grpo.index("grpo/mimic3_full") + 1:] if not c.startswith("hydra.")]
    cfg = _compose("grpo/mimic3_full", overrides)
    assert cfg.trainer.resume_mode == "resume_path" and cfg.trainer.resume_from_path == str(step)
    _verl_checks(cfg)
    proc = _launch([RECIPES / "launch.sh", "grpo", "mimic3_full", "--dry-run"],
                   {**env, "RESUME_FROM": str(tmp_path / "nowhere" / "global_step_3")})
    assert proc.returncode == 2 and "RESUME_FROM" in proc.stderr


@pytest.mark.parametrize("adapter", ["", "/runs/phi/round_2/export/lora_adapter"])
def test_infer_dry_run_prints_the_command_and_writes_nothing(tmp_path, adapter):
    _fake_prepared(tmp_path / "prepared", DEFAULT_BACKBONE, "mimic3_full")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    out = tmp_path / "preds" / "test.jsonl"
    proc = _launch([RECIPES / "launch.sh", "infer", "mimic3_full", "--dry-run", "--split", "test", "--predictions", out,
                    "--adapter", adapter],
                   {"LLM4ICD_DATA_ROOT": str(tmp_path / "prepared"), "MODEL_PATH": str(tmp_path / "m")})
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(proc.stdout.strip().splitlines()[-1])
    assert cmd[1:3] == ["-m", "data_tools.evaluation.infer"] and cmd[cmd.index("--split") + 1] == "test"
    if adapter:
        assert cmd[cmd.index("--lora") + 1] == f"adapter={adapter}" and cmd[cmd.index("--out") + 1] == f"{out}.d"
    else:
        assert "--lora" not in cmd and cmd[cmd.index("--out") + 1] == str(out)
    assert not out.parent.exists()


def test_unknown_phi_resume_mode_is_refused(tmp_path):
    _fake_prepared(tmp_path / "prepared", DEFAULT_BACKBONE, "mimic3_full")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    proc = _launch([RECIPES / "phi_mimic3_full.sh", "--dry-run"],
                   {"LLM4ICD_DATA_ROOT": str(tmp_path / "prepared"), "MODEL_PATH": str(tmp_path / "m"),
                    "PHI_RESUME": "optimizer"})
    assert proc.returncode == 2 and "PHI_RESUME" in proc.stderr and "Fix:" in proc.stderr


def test_refresh_inference_uses_every_gpu_at_grpos_response_length(tmp_path, monkeypatch):
    """`launch.py infer` (the PHI refresh and the evaluation): tensor parallel over the node's GPUs, greedy, at the
    response length GRPO trains with, with the backbone's chat-template switch."""
    sys.path.insert(0, str(RECIPES))
    try:
        import launch
    finally:
        sys.path.remove(str(RECIPES))
    data = _fake_prepared(tmp_path / "prepared", "qwen3-4b", "mimic3_full")
    ran = []

    def capture(cmd, env=None):
        ran.append(cmd)
        raise SystemExit(0)

    monkeypatch.setattr(launch, "_exec", capture)
    for var in ("GPUS_PER_NODE", "MAX_RESPONSE_LENGTH", "BACKBONE", "PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LLM4ICD_DATA_ROOT", str(tmp_path / "prepared"))
    with pytest.raises(SystemExit):
        launch.main(["infer", "mimic3_full", "--backbone", "qwen3-4b", "--predictions", str(tmp_path / "p.jsonl")])
    cmd = ran[0]
    flags = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
    assert cmd[1:3] == ["-m", "data_tools.evaluation.infer"] and flags["--data"] == str(data)
    assert flags["--tensor-parallel-size"] == "4" and "--no-enable-thinking" in cmd
    grpo_length, _ = launch.response_length("mimic3_full", launch.load_profile("paper"), data)
    assert flags["--max-new-tokens"] == str(grpo_length) == "448"  # 300 answer tokens, as GRPO measures them


def test_launcher_refuses_data_prepared_without_the_backbone(tmp_path):
    """Before any GPU hour: data whose stats.json records no backbone tokenizer is refused with the prepare command
    (the model is absent, so a launcher that skipped the check stops at the model instead)."""
    _fake_prepared(tmp_path / "prepared", DEFAULT_BACKBONE, "mimic3_full")
    proc = _launch([RECIPES / "grpo_mimic3_full.sh"], {"LLM4ICD_DATA_ROOT": str(tmp_path / "prepared"),
                                                       "MODEL_PATH": str(tmp_path / "no-model")})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"does not match backbone '{DEFAULT_BACKBONE}'" in proc.stderr
    assert "not fitted with a recorded tokenizer" in proc.stderr
