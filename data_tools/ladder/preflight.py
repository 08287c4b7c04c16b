"""GPU preflight, run once on the cluster before any training: both environments, CUDA and the NVIDIA driver,
torch / vLLM / flash-attn / verl / LlamaFactory versions, the backbone's model and template check, its prepared
data, and free disk. Prints one go/no-go line per check, each no-go with its fix; exits 0 only if all go.

    bash recipes/preflight.sh [--backbone NAME] [--dataset mimic3_full] ...
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from data_tools.cli import exit_with, run_tool

PROG = "bash recipes/preflight.sh"
REPO_ROOT = Path(__file__).resolve().parents[2]
ENVS = {"rl": ("LLM4ICD_RL_ENV", ".[rl]"), "sft": ("LLM4ICD_SFT_ENV", ".[sft]")}
PACKAGES = {"rl": ("torch", "vllm", "verl", "transformers", "flash-attn", "ray"),
            "sft": ("torch", "llamafactory", "transformers", "peft")}
PINNED = {"verl": "0.9.1", "llamafactory": "0.9.5"}
MIN_DRIVER = {(13, 0): 580, (12, 8): 570, (12, 6): 560, (12, 4): 550, (12, 1): 530, (12, 0): 525}
"""Oldest Linux NVIDIA driver for a CUDA build of torch (NVIDIA's CUDA toolkit release notes)."""
CUDA12_FIX = ("upgrade the NVIDIA driver to >= 580, or install the CUDA 12 builds of torch (and vLLM) in both "
              "environments (README, GPU requirements)")


@dataclass
class Check:
    """One line of the table: a go, or a no-go with the fix."""

    name: str
    go: bool
    detail: str
    fix: str = ""


# --- probing an environment (runs inside it) -------------------------------------------------------------------

def probe(kind: str) -> dict:
    """Versions of the environment's packages and what its torch sees; imports only torch and flash_attn."""
    out = {"python": sys.version.split()[0], "packages": {}}
    for name in PACKAGES[kind]:
        try:
            out["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out["packages"][name] = None
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        out["torch"] = {"cuda_available": bool(count), "cuda_build": torch.version.cuda, "device_count": count,
                        "devices": [torch.cuda.get_device_name(i) for i in range(count)],
                        "memory_gib": [round(torch.cuda.get_device_properties(i).total_memory / 2**30)
                                       for i in range(count)]}
    except Exception as exc:  # a broken torch install is a finding, not a crash
        out["torch"] = {"error": type(exc).__name__}
    if kind == "rl" and out["packages"].get("flash-attn"):
        try:
            import flash_attn  # noqa: F401

            out["flash_attn_imports"] = True
        except Exception as exc:  # an ABI mismatch with torch shows here
            out["flash_attn_imports"] = type(exc).__name__
    return out


def env_python(kind: str) -> Path:
    var, _ = ENVS[kind]
    return Path(os.environ.get(var) or REPO_ROOT / ".venvs" / kind) / "bin" / "python"


def probe_env(kind: str) -> tuple[dict | None, str]:
    python = env_python(kind)
    if not python.is_file():
        return None, f"{python} not found"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(python), "-m", "data_tools.ladder.preflight", "--probe", kind], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, check=False, timeout=600)
    if proc.returncode != 0:
        return None, f"{python} cannot run the probe (exit {proc.returncode}; is this project installed there?)"
    return json.loads(proc.stdout.strip().splitlines()[-1]), str(python)


# --- the checks ---------------------------------------------------------------------------------------------------

def env_checks(kind: str, found: dict | None, where: str) -> list[Check]:
    var, extra = ENVS[kind]
    install = f"pip install -e '{extra}' in a virtualenv and export {var}=<that venv>"
    if found is None:
        return [Check(f"{kind} environment", False, where, install)]
    checks = [Check(f"{kind} environment", True, f"{where} (python {found['python']})")]
    for name, version in found["packages"].items():
        if name == "flash-attn":
            continue
        if version is None:
            checks.append(Check(f"{name} ({kind})", False, "not installed", install))
        elif name in PINNED and version != PINNED[name]:
            checks.append(Check(f"{name} ({kind})", False, f"{version}, the recipes are written for {PINNED[name]}",
                                f"pip install {name}=={PINNED[name]} in {where}"))
        else:
            checks.append(Check(f"{name} ({kind})", True, version))
    torch = found.get("torch", {})
    if "error" in torch:
        checks.append(Check(f"CUDA ({kind})", False, f"import torch fails ({torch['error']})", install))
    elif not torch["cuda_available"]:
        build = f"a CUDA {torch['cuda_build']} build" if torch["cuda_build"] else "a CPU-only build"
        checks.append(Check(f"CUDA ({kind})", False, f"torch {found['packages'].get('torch')} ({build}) sees no GPU",
                            "run on a GPU node (check nvidia-smi and CUDA_VISIBLE_DEVICES)" +
                            ("" if torch["cuda_build"] else f"; install the CUDA build of torch: {install}")))
    else:
        gpus = ", ".join(f"{n} ({m} GiB)" for n, m in zip(torch["devices"], torch["memory_gib"]))
        checks.append(Check(f"CUDA ({kind})", True, f"{torch['device_count']} GPU(s): {gpus}; torch CUDA "
                            f"{torch['cuda_build']}"))
    if kind == "rl":
        checks.append(_flash_attn(found))
    return checks


def _flash_attn(found: dict) -> Check:
    version, imports = found["packages"].get("flash-attn"), found.get("flash_attn_imports")
    if version and imports is True:
        return Check("flash-attn (rl)", True, f"{version}: GRPO uses flash_attention_2 with remove-padding")
    why = "not installed" if not version else f"{version} does not import ({imports})"
    return Check("flash-attn (rl)", True, f"{why}: GRPO falls back to sdpa with remove-padding off (slower; "
                 "pip install flash-attn --no-build-isolation for speed)")


def driver_check(found: Sequence[dict | None]) -> Check:
    """The NVIDIA driver against what the environments' torch builds need (the newest CUDA build decides)."""
    builds = [((f or {}).get("torch") or {}).get("cuda_build") for f in found]
    cuda = max((b for b in builds if b), key=_version, default=None)
    major = _version(cuda)[0] if cuda else None
    need = max((v for k, v in MIN_DRIVER.items() if k <= _version(cuda)), default=None) if cuda else None
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return Check("NVIDIA driver", False, "nvidia-smi not found: no NVIDIA driver on this machine",
                     "run on a GPU node with the NVIDIA driver installed" +
                     (f" (>= {need} for torch's CUDA {cuda} build)" if need else ""))
    proc = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                          text=True, check=False, timeout=60)
    versions = sorted({v.strip() for v in proc.stdout.splitlines() if v.strip()})
    if proc.returncode != 0 or not versions:
        return Check("NVIDIA driver", False, f"nvidia-smi failed (exit {proc.returncode})",
                     "check the driver installation (nvidia-smi must list the GPUs)")
    have = int(versions[0].split(".")[0])
    if need and have < need:
        return Check("NVIDIA driver", False, f"{versions[0]}, torch's CUDA {cuda} build needs >= {need}",
                     CUDA12_FIX if major and major >= 13 else "upgrade the NVIDIA driver")
    return Check("NVIDIA driver", True, f"{', '.join(versions)}" + (f" (>= {need} for CUDA {cuda})" if need else ""))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(".")[:2] if x.isdigit())


def model_check(model: str) -> Check:
    """The backbone's weights: a local folder, or a hub id already in the Hugging Face cache."""
    if Path(model).is_dir():
        ok = (Path(model) / "config.json").is_file()
        return Check("model", ok, f"{model}" + ("" if ok else " has no config.json"),
                     "" if ok else "point model: in the backbone YAML (or MODEL_PATH) at a complete model folder")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
    except Exception:  # not a valid repo id, or no huggingface_hub: treat as not cached
        cached = None
    if isinstance(cached, str):
        return Check("model", True, f"{model} (in the Hugging Face cache)")
    return Check("model", False, f"{model} is neither a local model folder nor in the Hugging Face cache",
                 f"for a hub id: huggingface-cli download {model} (on a node with internet); else point model: in "
                 "the backbone YAML (or --tokenizer) at a local model folder")


def backbone_checks(args, backbone) -> list[Check]:
    from data_tools.build import backbone_check
    from llm4icd_plugins.errors import UserError

    checks = []
    model = model_check(args.tokenizer or backbone.model)
    checks.append(model)
    if not model.go:
        checks.append(Check("template check", False, "needs the model's tokenizer", "fix 'model' first"))
    else:
        try:
            summary = backbone_check.check_template(backbone, args.tokenizer)
            checks.append(Check("template check", True, f"LlamaFactory '{backbone.template}' = chat template on "
                                f"{summary['conversations']} conversations"))
        except UserError as exc:
            problem, _, fix = str(exc).partition(" Fix: ")
            checks.append(Check("template check", False, problem, fix))
    budgets = {"max_prompt_length": args.max_prompt_length, "hint_reserve": args.hint_reserve,
               "cutoff_len": args.cutoff_len}
    datasets = args.dataset or sorted(p.parent.name for p in (args.data_root / backbone.name).glob("*/stats.json"))
    if not datasets:
        checks.append(Check("prepared data", False, f"nothing prepared under {args.data_root / backbone.name}",
                            f"python -m data_tools.build.prepare {{mimic3,mimic4}} --root RAW_DIR --backbone "
                            f"{backbone.name} --out {args.data_root / backbone.name} (or name variants with "
                            "--dataset)"))
    for dataset in datasets:
        data_dir = backbone_check.prepared_dir(backbone.name, dataset, args.data_root)
        name = f"data {dataset}"
        if not model.go and (data_dir / "stats.json").is_file():
            checks.append(Check(name, False, f"{data_dir}: needs the model's tokenizer", "fix 'model' first"))
            continue
        try:
            backbone_check.check_data(backbone, data_dir, args.tokenizer, budgets)
            checks.append(Check(name, True, f"{data_dir} was prepared for {backbone.name}"))
        except UserError as exc:
            problem, _, fix = str(exc).partition(" Fix: ")
            checks.append(Check(name, False, problem, fix))
    return checks


def disk_check(path: Path, min_free_gb: float) -> Check:
    probe_at = path
    while not probe_at.exists() and probe_at != probe_at.parent:
        probe_at = probe_at.parent
    free = shutil.disk_usage(probe_at).free / 2**30
    ok = free >= min_free_gb
    return Check("disk", ok, f"{free:.0f} GiB free at {probe_at} (want >= {min_free_gb:g})",
                 "" if ok else "free space or point OUTPUT_DIR / --output-dir at a larger file system")


def render(checks: Sequence[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"  {'GO' if c.go else 'NO-GO':<6} {c.name:<{width}}  {c.detail}")
        if not c.go and c.fix:
            lines.append(f"  {'':<6} {'':<{width}}  fix: {c.fix}")
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from llm4icd_plugins.backbones import DEFAULT_BACKBONE, list_backbones

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=os.environ.get("BACKBONE") or DEFAULT_BACKBONE,
                        help=f"backbone name ({', '.join(list_backbones())}) or YAML file (default {DEFAULT_BACKBONE})")
    parser.add_argument("--dataset", action="append", metavar="DATASET",
                        help="prepared variant to check against the backbone, e.g. mimic3_full (repeatable; default: "
                        "every variant under DATA_ROOT/<backbone>/)")
    parser.add_argument("--data-root", type=Path, default=Path(os.environ.get("LLM4ICD_DATA_ROOT") or "data/prepared"),
                        help="prepared data root: ROOT/<backbone>/<dataset> (default data/prepared)")
    parser.add_argument("--tokenizer", help="local folder of the backbone's model, instead of its hub id")
    parser.add_argument("--output-dir", type=Path, default=Path(os.environ.get("OUTPUT_DIR") or "outputs"),
                        help="where checkpoints go; its file system needs --min-free-gb (default outputs)")
    parser.add_argument("--min-free-gb", type=float, default=100.0, help="free disk wanted, GiB (default 100)")
    for flag in ("--max-prompt-length", "--hint-reserve", "--cutoff-len"):
        parser.add_argument(flag, type=int, help="the run's value: prepared data must have been fitted for it")
    parser.add_argument("--probe", choices=tuple(ENVS), help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.probe)))
        return 0

    def body() -> int:
        from llm4icd_plugins.backbones import load_backbone

        backbone = load_backbone(args.backbone)
        found = {kind: probe_env(kind) for kind in ENVS}
        checks = []
        for kind, (info, where) in found.items():
            checks += env_checks(kind, info, where)
        checks.append(driver_check([info for info, _ in found.values()]))
        checks += backbone_checks(args, backbone)
        checks.append(disk_check(args.output_dir, args.min_free_gb))
        bad = [c for c in checks if not c.go]
        print(f"llm4icd preflight: backbone {backbone.name}, prepared data under {args.data_root / backbone.name}")
        print(render(checks))
        print(f"{len(bad)} no-go: fix them before training." if bad else "all go.")
        return 1 if bad else 0

    return run_tool(PROG, body)


if __name__ == "__main__":
    exit_with(main)
