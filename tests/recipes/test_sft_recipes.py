"""The SFT and merge YAMLs recipes/launch.py writes for every backbone × dataset × profile parse with
LlamaFactory 0.9.5's own parser and name one of its templates; the SFT launcher checks its inputs and says what
it picked. LlamaFactory lives in the SFT environment: these tests call into it through subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from llm4icd_plugins.backbones import DEFAULT_BACKBONE, list_backbones, load_backbone

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
DATASETS = ("mimic3_full", "mimic3_top50", "mimic4_full", "mimic4_top50")
PROFILES = ("paper", "release")
BACKBONES = [b for b in list_backbones(RECIPES / "models") if b != "tiny"]
SFT_ENV = Path(os.environ.get("LLM4ICD_SFT_ENV") or REPO / ".venvs" / "sft")
needs_sft_env = pytest.mark.skipif(not (SFT_ENV / "bin" / "llamafactory-cli").is_file(),
                                   reason="no LlamaFactory environment: set LLM4ICD_SFT_ENV")
# App. E of the paper, and the released LlamaFactory YAMLs (FACTS.md), written independently of the profiles
PAPER_LR, RELEASE_LR = 1e-5, 1e-4


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MODEL_PATH", "OUTPUT_DIR", "BACKBONE", "PROFILE", "NNODES")
           and not k.startswith("LLM4ICD_DATA")}
    env.update(HF_HUB_OFFLINE="1", DISABLE_VERSION_CHECK="1", **extra)
    return env


def _launch(*args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RECIPES / "launch.sh"), *args], env=_env(**env), capture_output=True,
                          text=True, timeout=120, cwd=REPO)


def _prepared(root: Path, backbone: str, dataset: str) -> Path:
    data = root / backbone / dataset
    data.mkdir(parents=True)
    (data / "dataset_info.json").write_text("{}")
    return data


@needs_sft_env
def test_every_generated_yaml_parses_with_llamafactory(tmp_path):
    """One SFT env process builds every YAML with the launcher's own functions and parses it."""
    script = textwrap.dedent("""
        import json, sys, torch
        sys.path.insert(0, "recipes")
        import launch
        from llamafactory.data.template import TEMPLATES
        from llamafactory.hparams.parser import _parse_infer_args, _parse_train_args
        from llm4icd_plugins.backbones import load_backbone
        out = []
        for name in sys.argv[2].split(","):
            b = load_backbone(name)
            assert b.template in TEMPLATES, b.template
            merge = launch.merge_config(b, "/tmp/adapter", "/tmp/merged", [])
            _parse_infer_args(dict(merge))
            for profile in ("paper", "release"):
                p = launch.load_profile(profile)
                for dataset in sys.argv[3].split(","):
                    cfg = launch.sft_config(dataset, b, p, "/tmp/data", "/tmp/out", ["save_steps=7"])
                    parsed = dict(cfg, use_cpu=not torch.cuda.is_available())  # bf16 recipes target GPUs
                    model, data, training, *_ = _parse_train_args(parsed)
                    out.append(dict(backbone=name, profile=profile, dataset=dataset, cfg=cfg,
                                    lr=training.learning_rate, template=data.template, cutoff=data.cutoff_len,
                                    thinking=getattr(data, "enable_thinking", None), model=model.model_name_or_path,
                                    warmup=training.warmup_ratio if hasattr(training, "warmup_ratio") else None))
        json.dump(out, open(sys.argv[1], "w"))
    """)
    result = tmp_path / "parsed.json"
    proc = subprocess.run([str(SFT_ENV / "bin" / "python"), "-c", script, str(result), ",".join(BACKBONES),
                           ",".join(DATASETS)], env=_env(), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = json.loads(result.read_text())
    assert len(rows) == len(BACKBONES) * len(PROFILES) * len(DATASETS)
    for row in rows:
        b, cfg = load_backbone(row["backbone"]), row["cfg"]
        assert (row["template"], row["model"]) == (b.template, b.model)
        assert row["lr"] == (PAPER_LR if row["profile"] == "paper" else RELEASE_LR)
        assert (cfg["dataset"], cfg["eval_dataset"]) == (f"{row['dataset']}_train", f"{row['dataset']}_val")
        assert cfg["finetuning_type"] == "lora" and cfg["lora_rank"] == 8 and cfg["num_train_epochs"] == 3
        assert cfg["train_on_prompt"] is False and cfg["report_to"] == "none" and cfg["save_steps"] == 7
        if b.enable_thinking is not None:
            assert row["thinking"] is b.enable_thinking and cfg["enable_thinking"] is b.enable_thinking
        else:
            assert "enable_thinking" not in cfg


@needs_sft_env
def test_sft_launcher_without_arguments_names_the_default_and_the_prepare_command(tmp_path):
    proc = _launch("sft", "mimic4_top50", LLM4ICD_DATA_ROOT=str(tmp_path))
    assert proc.returncode == 2
    assert f"backbone {DEFAULT_BACKBONE} (the default" in proc.stderr
    assert f"{tmp_path / DEFAULT_BACKBONE / 'mimic4_top50' / 'dataset_info.json'}: no dataset_info.json" in proc.stderr
    assert "python -m data_tools.build.prepare mimic4 " in proc.stderr and "--cutoff-len 8192" in proc.stderr


@needs_sft_env
def test_sft_launcher_writes_what_llamafactory_reads(tmp_path):
    data = _prepared(tmp_path, "qwen3-4b", "mimic3_top50")
    proc = _launch("sft", "mimic3_top50", "--backbone", "qwen3-4b", "--profile", "release", "--dry-run",
                   "save_steps=7", LLM4ICD_DATA_ROOT=str(tmp_path), MODEL_PATH="/models/qwen3")
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["model_name_or_path"] == "/models/qwen3" and cfg["template"] == "qwen3"
    assert cfg["enable_thinking"] is False and cfg["dataset_dir"] == str(data)
    assert cfg["output_dir"] == str(REPO / "outputs" / "qwen3-4b" / "sft" / "mimic3_top50")
    assert cfg["learning_rate"] == RELEASE_LR and cfg["save_steps"] == 7


@needs_sft_env
@pytest.mark.parametrize("args,env,message", [
    (["sft", "mimic3_top50", "--backbone", "qwen9"], {}, "no backbone 'qwen9'"),
    (["sft", "mimic3_top50"], {"LLM4ICD_SFT_ENV": "/nonexistent"}, "LLM4ICD_SFT_ENV"),
    (["sft", "mimic3_top50", "bad-override"], {}, "is not key=value"),
    (["merge", "mimic3_top50"], {"ADAPTER_DIR": "/nonexistent"}, "adapter_config.json"),
])
def test_sft_launcher_fails_clearly(tmp_path, args, env, message):
    _prepared(tmp_path, DEFAULT_BACKBONE, "mimic3_top50")
    proc = _launch(*args, LLM4ICD_DATA_ROOT=str(tmp_path), **env)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


@needs_sft_env
def test_two_nodes_need_a_master(tmp_path):
    _prepared(tmp_path, DEFAULT_BACKBONE, "mimic3_top50")
    proc = _launch("sft", "mimic3_top50", LLM4ICD_DATA_ROOT=str(tmp_path), NNODES="2")
    assert proc.returncode == 2 and "MASTER_ADDR" in proc.stderr


# key -> why the tiny CPU recipe may differ from the users' SFT recipe; everything else must be equal
TINY_ALLOWED = {
    "dataset_dir": "path", "output_dir": "path", "cutoff_len": "scale: the tiny model's prompts",
    "overwrite_cache": "CI data changes between runs", "preprocessing_num_workers": "two CPU cores",
    "dataloader_num_workers": "two CPU cores", "logging_steps": "scale", "save_strategy": "scale: one adapter",
    "overwrite_output_dir": "re-runs", "per_device_train_batch_size": "scale", "gradient_accumulation_steps": "scale",
    "learning_rate": "scale: a 1M-parameter model", "warmup_ratio": "scale: 30 steps", "max_steps": "scale",
    "num_train_epochs": "scale", "use_cpu": "CPU", "bf16": "CPU: float32", "per_device_eval_batch_size": "scale",
    "eval_strategy": "scale",
}


def _tiny(kind: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{kind}.yaml"
    subprocess.run([sys.executable, str(RECIPES / "tiny" / "sft" / "compose.py"), kind, "--out", str(out)],
                   check=True, cwd=REPO)
    return yaml.safe_load(out.read_text())


def test_tiny_sft_recipe_differs_from_the_users_recipe_only_in_scale(tmp_path):
    sys.path.insert(0, str(RECIPES))
    try:
        import launch
    finally:
        sys.path.remove(str(RECIPES))
    tiny = _tiny("train", tmp_path)
    users = launch.sft_config("mimic3_full", load_backbone("tiny"), launch.load_profile("paper"),
                              Path("data/prepared/tiny/mimic3_full"), Path("outputs/tiny"), [])
    differ = {k for k in set(tiny) | set(users) if tiny.get(k, "absent") != users.get(k, "absent")}
    assert "learning_rate" in differ, "the comparison found nothing: it would pass on anything"
    assert differ <= set(TINY_ALLOWED), differ - set(TINY_ALLOWED)
    # CI exercises what users run: the loss mask, the template from the backbone, gradient checkpointing
    assert tiny["train_on_prompt"] is False and tiny["template"] == "qwen"
    assert tiny["disable_gradient_checkpointing"] is False and tiny["report_to"] == "none"
    merge = _tiny("merge", tmp_path)
    assert merge["template"] == "qwen" and merge["export_device"] == "cpu" and merge["finetuning_type"] == "lora"


@needs_sft_env
def test_tiny_recipes_parse_with_llamafactory(tmp_path):
    script = textwrap.dedent("""
        import sys, yaml
        from llamafactory.hparams.parser import _parse_infer_args, _parse_train_args
        _parse_train_args(yaml.safe_load(open(sys.argv[1])))
        _parse_infer_args(yaml.safe_load(open(sys.argv[2])))
        print("parsed")
    """)
    _tiny("train", tmp_path), _tiny("merge", tmp_path)
    proc = subprocess.run([str(SFT_ENV / "bin" / "python"), "-c", script, str(tmp_path / "train.yaml"),
                           str(tmp_path / "merge.yaml")], env=_env(), capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0 and "parsed" in proc.stdout, proc.stderr[-3000:]
