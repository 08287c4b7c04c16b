"""recipes/preflight.sh on this CPU machine, with the real environments: CUDA and the driver are no-go with a
fix, installed versions and the backbone's model, template check and prepared data are go, exit status 1;
prepared data fitted for another budget is a no-go with the re-prepare command."""

from __future__ import annotations

import dataclasses
import importlib.metadata as metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from data_tools.build import prepare
from llm4icd_plugins.backbones import load_backbone

REPO_ROOT = Path(__file__).resolve().parents[2]
SFT_ENV = Path(os.environ.get("LLM4ICD_SFT_ENV") or REPO_ROOT / ".venvs" / "sft")
pytestmark = pytest.mark.skipif(not (SFT_ENV / "bin" / "llamafactory-cli").is_file(),
                                reason="no LlamaFactory environment: set LLM4ICD_SFT_ENV")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    from data_tools.build.synth import generate_mimic3

    base = tmp_path_factory.mktemp("preflight")
    spec = dataclasses.asdict(load_backbone("qwen2.5-1.5b-instruct"))
    spec.update(name="pf-tiny", model=str(tiny_model_dir), template="qwen")
    backbone = base / "pf-tiny.yaml"
    backbone.write_text(yaml.safe_dump(spec))
    raw = generate_mimic3(base / "raw", n_admissions=100, seed=4)
    root = base / "prepared"
    assert prepare.main(["mimic3", "--root", str(raw["root"]), "--out", str(root / "pf-tiny"), "--backbone",
                         str(backbone), "--variants", "full", "--min-code-count", "1", "--max-prompt-length", "1024",
                         "--hint-reserve", "128", "--cutoff-len", "1100"]) == 0
    # The same variant as if prepared for the default budget: the run's 1024 must refuse it.
    stale = root / "pf-tiny" / "stale_full"
    shutil.copytree(root / "pf-tiny" / "mimic3_full", stale)
    stats = json.loads((stale / "stats.json").read_text())
    stats["variant"], stats["tokens"]["max_prompt_length"] = "stale_full", 4096
    (stale / "stats.json").write_text(json.dumps(stats))
    return {"backbone": backbone, "root": root, "base": base}


@pytest.fixture(scope="module")
def result(setup):
    """One preflight run (it starts both environments and LlamaFactory: about a minute here)."""
    return _preflight(setup, "--max-prompt-length", "1024")


def _preflight(setup, *extra) -> tuple[int, dict[str, tuple[str, str, str]], str]:
    env = dict(os.environ, LLM4ICD_RL_ENV=sys.prefix, LLM4ICD_SFT_ENV=str(SFT_ENV))
    proc = subprocess.run(["bash", str(REPO_ROOT / "recipes" / "preflight.sh"), "--backbone", str(setup["backbone"]),
                           "--data-root", str(setup["root"]), "--output-dir", str(setup["base"]), "--min-free-gb",
                           "0.01", *extra], capture_output=True, text=True, env=env, timeout=900, check=False)
    rows: dict[str, tuple[str, str, str]] = {}
    last = None
    for line in proc.stdout.splitlines():
        fields = line.split(maxsplit=1)
        if fields and fields[0] in ("GO", "NO-GO"):
            name, detail = fields[1].split("  ", 1)
            rows[name.strip()] = last = (fields[0], detail.strip(), "")
            key = name.strip()
        elif last is not None and line.strip().startswith("fix: "):
            rows[key] = (last[0], last[1], line.strip()[5:])
    return proc.returncode, rows, proc.stdout + proc.stderr


def test_preflight_reports_no_go_for_cuda_and_go_for_what_is_present(result):
    import torch

    rc, rows, out = result
    assert rc == 1, out
    if not torch.cuda.is_available():
        status, detail, fix = rows["CUDA (rl)"]
        assert status == "NO-GO" and "sees no GPU" in detail and "GPU node" in fix
    if shutil.which("nvidia-smi") is None:
        assert rows["NVIDIA driver"][0] == "NO-GO" and rows["NVIDIA driver"][2]
    assert rows["verl (rl)"] == ("GO", metadata.version("verl"), "")
    assert rows["torch (rl)"] == ("GO", metadata.version("torch"), "")
    lf_dist = sorted((SFT_ENV / "lib").glob("python*/site-packages/llamafactory-*.dist-info"))
    assert lf_dist and rows["llamafactory (sft)"] == ("GO", lf_dist[0].name.split("-")[1].removesuffix(".dist"), "")
    assert rows["flash-attn (rl)"][0] == "GO" and ("sdpa" in rows["flash-attn (rl)"][1]
                                                  or "flash_attention_2" in rows["flash-attn (rl)"][1])
    for name in ("rl environment", "sft environment", "model", "template check", "data mimic3_full", "disk"):
        assert rows[name][0] == "GO", (name, rows[name])
    no_go = [name for name, (status, _, _) in rows.items() if status == "NO-GO"]
    assert all(rows[name][2] for name in no_go), "every no-go has a fix"
    assert f"{len(no_go)} no-go" in out


def test_data_fitted_for_another_budget_is_no_go(result):
    rc, rows, out = result
    status, detail, fix = rows["data stale_full"]
    assert rc == 1 and status == "NO-GO" and "max_prompt_length 4096, the run uses 1024" in detail
    assert fix.startswith("re-prepare for this backbone: python -m data_tools.build.prepare mimic3")
    assert "--max-prompt-length 1024" in fix and "--backbone pf-tiny" in fix and "--name stale" in fix


@pytest.mark.parametrize(("driver", "cuda", "go"), [("550.54.15", "13.0", False), ("580.65.06", "13.0", True),
                                                    ("550.54.15", "12.4", True), ("535.104.05", "12.8", False)])
def test_driver_against_the_torch_cuda_build(driver, cuda, go, tmp_path, monkeypatch):
    """A fake nvidia-smi (no GPU here) that reports `driver`: CUDA 13 builds need >= 580, CUDA 12.8 >= 570."""
    from data_tools.ladder.preflight import driver_check

    fake_gpu = tmp_path / "fake_gpu_bin"
    fake_gpu.mkdir()
    (fake_gpu / "nvidia-smi").write_text(f"#!/bin/sh\necho {driver}\necho {driver}\n")
    (fake_gpu / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_gpu}{os.pathsep}{os.environ['PATH']}")
    check = driver_check([{"torch": {"cuda_build": cuda}}, None])
    assert check.go is go and driver in check.detail
    if not go:
        assert check.fix and ("CUDA 12" in check.fix) == cuda.startswith("13")
