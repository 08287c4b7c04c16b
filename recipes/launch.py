"""One launcher for every stage × backbone × dataset: checks the inputs, says what it picked, starts the framework.

    python recipes/launch.py STAGE DATASET [--backbone NAME] [--profile NAME] [key=value ...]

The `recipes/<stage>_<dataset>.sh` entry points call it through `recipes/launch.sh`, which picks the Python
of the stage's environment. GRPO composes `recipes/grpo/<dataset>.yaml` (verl's ppo_trainer + backbone +
profile + attention); SFT and merge write the LlamaFactory YAML from `recipes/sft/` + backbone + profile.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from any folder: the project's packages next to recipes/
    sys.path.insert(0, str(REPO))

from data_tools.build.prompt_candidates import prepare_into, read_candidates  # noqa: E402
from llm4icd_plugins.atomic import write_text  # noqa: E402
from llm4icd_plugins.backbones import (  # noqa: E402
    DEFAULT_BACKBONE, Backbone, backbone_dir, backbone_path, list_backbones, load_backbone)
from llm4icd_plugins.errors import EXIT_USER_ERROR, UserError, user_error  # noqa: E402

RECIPES = REPO / "recipes"
STAGES = ("sft", "merge", "grpo", "phi", "infer")
DATASETS = ("mimic3_full", "mimic3_top50", "mimic4_full", "mimic4_top50")
PROFILE_DIR = RECIPES / "profiles"
DEFAULT_PROFILE = "paper"
DEFAULT_TOP_K = 10
PROG = "recipes/launch.py"


def list_profiles() -> list[str]:
    """Names of the settings profiles in recipes/profiles/."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name: str) -> dict:
    """A settings profile as a dict with `name`, `sft` and `grpo` sections."""
    path = PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise user_error(path, f"no profile '{name}'", f"pick one of {', '.join(list_profiles())}")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def attention() -> str:
    """flash-attn 2 where it imports in this environment (a build for another torch fails here, not on the
    first GPU step), else PyTorch's sdpa with remove-padding off."""
    if importlib.util.find_spec("flash_attn") is None:
        return "sdpa"
    try:
        importlib.import_module("flash_attn")
    except (ImportError, OSError, RuntimeError):
        return "sdpa"
    return "flash_attention_2"


def response_length(dataset: str, profile: dict, data_dir: Path) -> tuple[int, str]:
    """GRPO's max response length, computed once for GRPO and the PHI refresh: Top-50 from the profile; Full
    from the longest gold answer in stats.json (+25 % and 32 tokens, rounded up to 64, at least 196)."""
    kind = dataset.split("_", 1)[1]
    fixed = int(profile["grpo"][f"max_response_length_{kind}"])
    if os.environ.get("MAX_RESPONSE_LENGTH"):
        return int(os.environ["MAX_RESPONSE_LENGTH"]), "MAX_RESPONSE_LENGTH"
    stats = data_dir / "stats.json"
    if kind == "full" and stats.is_file():
        longest = ((json.loads(stats.read_text()).get("tokens") or {}).get("answer_tokens") or {}).get("max")
        if longest:
            return max(196, 64 * math.ceil((1.25 * longest + 32) / 64)), f"measured in {stats}"
    return fixed, f"profile {profile['name']}"


def candidates_knob() -> tuple[Path | None, int]:
    """CANDIDATES (a data_tools.evaluation.candidates folder) and CANDIDATES_TOP_K: the coder's top K candidates
    listed in every prompt, from the variant <dataset>_cand<K>; (None, K) for the paper's prompt."""
    folder, raw_k = os.environ.get("CANDIDATES"), os.environ.get("CANDIDATES_TOP_K")
    if not folder:
        if raw_k:
            raise user_error(None, "CANDIDATES_TOP_K is the number of candidates listed with CANDIDATES",
                             "set CANDIDATES to the coder's candidates folder too, or unset CANDIDATES_TOP_K")
        return None, DEFAULT_TOP_K
    try:
        top_k = int(raw_k) if raw_k else DEFAULT_TOP_K
    except ValueError:
        top_k = 0
    if top_k < 1:
        raise user_error(None, f"CANDIDATES_TOP_K={raw_k!r} is not a whole number of 1 or more",
                         f"set CANDIDATES_TOP_K to the candidates listed per prompt (default {DEFAULT_TOP_K})")
    return Path(folder).absolute(), top_k


def variant_name(dataset: str) -> str:
    """The prepared variant's folder name, also the name of the run's output folders: <dataset>_cand<K> with
    CANDIDATES, so plain and candidate variants (and their runs) sit side by side."""
    folder, top_k = candidates_knob()
    return f"{dataset}_cand{top_k}" if folder else dataset


def prepare_command(dataset: str, backbone: Backbone, profile: dict, root: Path) -> str:
    """The `data_tools.build.prepare` command that writes the variant this launch needs. prepare names its folders
    <corpus>_<full|top50> under --out, so a candidate variant is prepared aside and moved to <dataset>_cand<K>
    (its dataset names inside stay <dataset>_<split>, the names the SFT config asks for)."""
    corpus, scope = dataset.split("_", 1)
    parent = root / backbone.name
    cmd = (f"python -m data_tools.build.prepare {corpus} --root <{corpus.upper()} tables folder> "
           f"--backbone {backbone.name} --max-prompt-length {profile['grpo']['max_prompt_length']} "
           f"--cutoff-len {profile['sft']['cutoff_len']}")
    folder, top_k = candidates_knob()
    if folder is None:
        return f"{cmd} --out {shlex.quote(str(parent))}"
    return prepare_into(f"{cmd} --candidates {shlex.quote(str(folder))} --top-k {top_k} --variants {scope}", dataset,
                        parent / variant_name(dataset))


def _candidates_check(data_dir: Path, prepare: str) -> None:
    """The variant's prompts list what the run asks for: with CANDIDATES, stats.json records candidates from the same
    files (prepare's sha256) and the same top K; without it, a variant prepared with candidates is refused."""
    folder, top_k = candidates_knob()
    stats = data_dir / "stats.json"
    if not stats.is_file():
        if folder is not None:
            raise user_error(stats, "no stats.json of the prepared candidate variant", prepare)
        return
    try:
        recorded = json.loads(stats.read_text(encoding="utf-8")).get("candidates")
    except (json.JSONDecodeError, AttributeError):
        recorded = "unreadable"
    if not isinstance(recorded, (dict, type(None))):
        raise user_error(stats, "is not a stats.json written by data_tools.build.prepare",
                         f"remove {data_dir} and {prepare}")
    if folder is None:
        if recorded:
            k = recorded.get("top_k")
            raise user_error(stats, f"the variant's prompts list a coder's top {k} candidates (prepared with "
                             f"--candidates {recorded.get('source')}), and CANDIDATES is not set",
                             f"for a candidate run move this folder to {data_dir}_cand{k} and set CANDIDATES to "
                             f"that coder's folder and CANDIDATES_TOP_K={k}; for the paper's prompt remove "
                             f"{data_dir} and {prepare}")
        return
    redo = f"remove {data_dir} and {prepare}"
    if not isinstance(recorded, dict):
        raise user_error(stats, "the variant was prepared without --candidates, and CANDIDATES is set", redo)
    if recorded.get("top_k") != top_k:
        raise user_error(stats, f"the variant lists the top {recorded.get('top_k')} candidates, CANDIDATES_TOP_K is "
                         f"{top_k}", f"set CANDIDATES_TOP_K={recorded.get('top_k')} for that variant, or {redo}")
    sha256 = read_candidates(folder).sha256
    if recorded.get("sha256") != sha256:
        raise user_error(stats, f"the variant's candidates come from other files (sha256 "
                         f"{str(recorded.get('sha256'))[:12]}, prepared from {recorded.get('source')}) than those in "
                         f"CANDIDATES {folder} (sha256 {sha256[:12]})",
                         f"set CANDIDATES to the folder the variant was prepared from, or {redo}")


def _need(path: Path, what: str, fix: str) -> None:
    if not path.exists():
        raise user_error(path, f"no {what}", fix)


def _backbone_check(python: str, kind: str, backbone: Backbone, *extra: str, dry_run: bool = False) -> None:
    """The prepared-data / template check of data_tools.build.backbone_check (skipped by --dry-run)."""
    if dry_run:
        return
    cmd = [python, "-m", "data_tools.build.backbone_check", kind, "--backbone", str(backbone_path(backbone.name)),
           *extra]
    proc = subprocess.run(cmd, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(proc.returncode)


def _env_vars(env: dict) -> list[str]:
    """Hydra overrides that carry the run's TensorBoard folder and Hugging Face settings to the Ray workers of
    every node, as literal values: verl passes runtime_env to Ray without resolving interpolations."""
    keep = sorted(k for k in env if k.startswith("HF_") or k in ("TRANSFORMERS_OFFLINE", "TENSORBOARD_DIR"))
    return [f"+ray_kwargs.ray_init.runtime_env.env_vars.{k}={json.dumps(env[k])}" for k in keep]


def grpo_command(args, backbone: Backbone, profile: dict, data_dir: Path) -> tuple[list[str], dict]:
    """The verl command line and environment of one GRPO run (also one PHI round)."""
    env = dict(os.environ)
    env["TRAIN_FILE"] = os.environ.get("TRAIN_FILE") or str(data_dir / "verl" / "train.parquet")
    env["VAL_FILE"] = os.environ.get("VAL_FILE") or str(data_dir / "verl" / "val.parquet")
    out = Path(os.environ.get("OUTPUT_DIR") or REPO / "outputs" / backbone.name / "grpo"
               / variant_name(args.dataset))
    env["CKPT_DIR"] = os.environ.get("CKPT_DIR") or str(out / "checkpoints")
    env["TENSORBOARD_DIR"] = os.environ.get("TENSORBOARD_DIR") or str(out / "tensorboard")
    env["MODEL_PATH"] = str(_model_path(backbone, args.dataset))
    env.update(TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled")
    length, source = response_length(args.dataset, profile, data_dir)
    attn = attention()
    print(f"{PROG}: attention {attn}" + (" (flash-attn imports)" if attn != "sdpa" else
                                          " (flash-attn not installed: remove-padding off)"), file=sys.stderr)
    print(f"{PROG}: max_response_length {length} ({source})", file=sys.stderr)
    overrides = [f"models@backbone={backbone.name}", f"profiles@profile={profile['name']}", f"attention={attn}",
                 f"data.max_response_length={length}", f"trainer.nnodes={os.environ.get('NNODES', 1)}",
                 f"trainer.n_gpus_per_node={os.environ.get('GPUS_PER_NODE', 4)}", *_env_vars(env)]
    folder = backbone_path(backbone.name).parent
    if folder.resolve() != (RECIPES / "models").resolve():
        overrides.append(f"hydra.searchpath=[pkg://verl.trainer.config,file://{folder.parent}]")
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(RECIPES),
           "--config-name", f"grpo/{args.dataset}", *overrides, *args.overrides]
    return cmd, env


def _model_path(backbone: Backbone, dataset: str) -> Path:
    sft = REPO / "outputs" / backbone.name / "sft" / variant_name(dataset)
    return Path(os.environ.get("MODEL_PATH") or sft / "merged")


def _llamafactory_yaml(base: str, backbone: Backbone, settings: dict, overrides: list[str]) -> dict:
    """recipes/sft/<base>.yaml + backbone + settings + key=value overrides, as LlamaFactory reads it."""
    cfg = yaml.safe_load((RECIPES / "sft" / f"{base}.yaml").read_text(encoding="utf-8"))
    cfg.update(model_name_or_path=backbone.model, template=backbone.template)
    if backbone.enable_thinking is not None:
        cfg["enable_thinking"] = backbone.enable_thinking
    cfg.update(settings)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise user_error(None, f"override '{key}' is not key=value", "write overrides as key=value")
        cfg[key] = yaml.safe_load(value)
    return cfg


def sft_config(dataset: str, backbone: Backbone, profile: dict, data_dir: Path, out: Path,
               overrides: list[str]) -> dict:
    """The LlamaFactory training YAML of one SFT run."""
    settings = dict(profile["sft"], dataset_dir=str(data_dir), dataset=f"{dataset}_train",
                    eval_dataset=f"{dataset}_val", output_dir=str(out))
    if os.environ.get("MODEL_PATH"):
        settings["model_name_or_path"] = os.environ["MODEL_PATH"]
    return _llamafactory_yaml("train", backbone, settings, overrides)


def merge_config(backbone: Backbone, adapter: Path, export: Path, overrides: list[str]) -> dict:
    """The LlamaFactory export YAML that merges one SFT adapter."""
    settings = {"adapter_name_or_path": str(adapter), "export_dir": str(export)}
    if os.environ.get("MODEL_PATH"):
        settings["model_name_or_path"] = os.environ["MODEL_PATH"]
    return _llamafactory_yaml("merge", backbone, settings, overrides)


def _exec(cmd: list[str], env: dict | None = None) -> None:
    print(f"{PROG}: {shlex.join(cmd)}", file=sys.stderr)
    sys.stdout.flush(), sys.stderr.flush()
    os.chdir(REPO)
    os.execvpe(cmd[0], cmd, env if env is not None else dict(os.environ))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], epilog=(
        f"backbones ({backbone_dir()}): {', '.join(list_backbones())}; default {DEFAULT_BACKBONE}. "
        f"profiles: {', '.join(list_profiles())}; default {DEFAULT_PROFILE} (README: settings table). "
        "Environment: BACKBONE, PROFILE, LLM4ICD_DATA_ROOT [data/prepared], MODEL_PATH, OUTPUT_DIR, TRAIN_FILE, "
        "VAL_FILE, CKPT_DIR, LORA_ADAPTER_PATH, RESUME_FROM (a global_step_N folder), MAX_RESPONSE_LENGTH, "
        "PHI_ROUNDS [3], PHI_RUN_DIR, PHI_RESUME [adapter|checkpoint], NNODES [1], GPUS_PER_NODE [4], "
        "CANDIDATES (a data_tools.evaluation.candidates folder: prompts list its top candidates, data and outputs "
        f"<dataset>_cand<K>), CANDIDATES_TOP_K [{DEFAULT_TOP_K}] (recipes/README.md)."))
    p.add_argument("stage", choices=STAGES, help="sft, merge (SFT adapter into its base), grpo, phi, infer")
    p.add_argument("dataset", choices=DATASETS, help="prepared variant")
    p.add_argument("--backbone", default=os.environ.get("BACKBONE"),
                   help=f"backbone name in recipes/models/ or a YAML path [$BACKBONE or {DEFAULT_BACKBONE}]")
    p.add_argument("--profile", default=os.environ.get("PROFILE"),
                   help=f"settings profile: {', '.join(list_profiles())} [$PROFILE or {DEFAULT_PROFILE}]")
    p.add_argument("--dry-run", action="store_true",
                   help="check the paths, print the command or generated YAML, start nothing (no backbone checks)")
    p.add_argument("--adapter", default="", help="infer: LoRA adapter folder ('' = the merged SFT model)")
    p.add_argument("--predictions", type=Path, help="infer: JSONL of predictions to write")
    p.add_argument("--split", default="train", help="infer: split to predict (train for the PHI refresh)")
    p.add_argument("overrides", nargs="*", help="key=value overrides (Hydra syntax for grpo/phi)")
    return p


def main(argv=None) -> int:
    args = parser().parse_intermixed_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


def run(args) -> int:
    chosen = args.backbone or DEFAULT_BACKBONE
    backbone = load_backbone(chosen)
    profile = load_profile(args.profile or DEFAULT_PROFILE)
    how = "" if args.backbone else " (the default; --backbone NAME or BACKBONE=NAME for another)"
    print(f"{PROG}: {args.stage} on {args.dataset}, backbone {backbone.name}{how}, profile {profile['name']}",
          file=sys.stderr)
    folder, top_k = candidates_knob()
    root = Path(os.environ.get("LLM4ICD_DATA_ROOT") or REPO / "data" / "prepared")
    data_dir = root / backbone.name / variant_name(args.dataset)
    if folder is not None:
        print(f"{PROG}: candidates on: every prompt lists the top {top_k} candidates of {folder} (CANDIDATES, "
              f"CANDIDATES_TOP_K); data {data_dir}", file=sys.stderr)
        _need(folder, "candidates folder (CANDIDATES)", "set CANDIDATES to the folder written by python -m "
              "data_tools.evaluation.candidates train --data VARIANT --out DIR, or unset it for the paper's prompt")
        os.environ["CANDIDATES"] = str(folder)  # the PHI steps run from the repository root
    prepare = f"prepare it with: {prepare_command(args.dataset, backbone, profile, root)} (or set LLM4ICD_DATA_ROOT)"
    if args.stage in ("sft", "merge"):
        return _sft_stage(args, backbone, profile, data_dir, prepare)
    if args.stage == "infer":
        return _infer_stage(args, backbone, profile, data_dir, prepare)
    train = Path(os.environ.get("TRAIN_FILE") or data_dir / "verl" / "train.parquet")
    _need(train, "training file of the prepared variant", prepare)
    _need(Path(os.environ.get("VAL_FILE") or data_dir / "verl" / "val.parquet"), "validation file", prepare)
    _candidates_check(data_dir, prepare)
    _backbone_check(sys.executable, "data", backbone, "--data", str(data_dir), "--max-prompt-length",
                    str(profile["grpo"]["max_prompt_length"]), dry_run=args.dry_run)
    model = _model_path(backbone, args.dataset)
    _need(model / "config.json", "model (config.json) at MODEL_PATH",
          f"run bash recipes/sft_{args.dataset}.sh and bash recipes/launch.sh merge {args.dataset} "
          f"--backbone {backbone.name}, or set MODEL_PATH to a merged SFT model")
    if args.stage == "phi":
        return _phi_stage(args, backbone, profile, data_dir)
    cmd, env = grpo_command(args, backbone, profile, data_dir)
    if os.environ.get("LORA_ADAPTER_PATH"):
        adapter = Path(os.environ["LORA_ADAPTER_PATH"])
        _need(adapter / "adapter_config.json", "LoRA adapter (adapter_config.json) at LORA_ADAPTER_PATH",
              "point LORA_ADAPTER_PATH at an exported adapter, or unset it for a fresh LoRA")
        cmd.append(f"actor_rollout_ref.model.lora_adapter_path={adapter}")
    if os.environ.get("RESUME_FROM"):
        step = Path(os.environ["RESUME_FROM"])
        _need(step / "actor", "verl checkpoint (global_step_N/actor) at RESUME_FROM",
              "point RESUME_FROM at a global_step_N folder of an earlier run, or unset it")
        cmd += ["trainer.resume_mode=resume_path", f"trainer.resume_from_path={step}"]
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    Path(env["CKPT_DIR"]).mkdir(parents=True, exist_ok=True)
    _exec(cmd, env)
    return 0


def _sft_stage(args, backbone: Backbone, profile: dict, data_dir: Path, prepare: str) -> int:
    out = Path(os.environ.get("OUTPUT_DIR") or REPO / "outputs" / backbone.name / "sft"
               / variant_name(args.dataset))
    if args.stage == "sft":
        _need(data_dir / "dataset_info.json", "dataset_info.json of the prepared variant", prepare)
        _candidates_check(data_dir, prepare)
        nodes = os.environ.get("NNODES", "1")
        if int(nodes) > 1 and not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
            raise UserError(f"NNODES={nodes} needs MASTER_ADDR and MASTER_PORT (host and free port of node rank 0, "
                            "the same on every node). Fix: export both on every node")
        cfg, target = sft_config(args.dataset, backbone, profile, data_dir, out, args.overrides), out
        tokenizer = ["--tokenizer", os.environ["MODEL_PATH"]] if os.environ.get("MODEL_PATH") else []
        _backbone_check(sys.executable, "template", backbone, *tokenizer, dry_run=args.dry_run)
        _backbone_check(sys.executable, "data", backbone, "--data", str(data_dir), "--cutoff-len",
                        str(cfg["cutoff_len"]), "--max-prompt-length", str(profile["grpo"]["max_prompt_length"]),
                        dry_run=args.dry_run)
        written = out / "llamafactory_train.yaml"
        verb = "train"
    else:
        adapter = Path(os.environ.get("ADAPTER_DIR") or out)
        _need(adapter / "adapter_config.json", "LoRA adapter (adapter_config.json)",
              f"train it with bash recipes/sft_{args.dataset}.sh --backbone {backbone.name}, or set ADAPTER_DIR")
        target = Path(os.environ.get("EXPORT_DIR") or adapter / "merged")
        cfg = merge_config(backbone, adapter, target, args.overrides)
        written = adapter / "llamafactory_merge.yaml"
        verb = "export"
    for value in (str(data_dir), str(target), str(cfg.get("model_name_or_path", ""))):
        if " " in value:
            raise user_error(value, "has a space, which LlamaFactory's torchrun re-launch splits",
                             "use a path without spaces")
    text = yaml.safe_dump(cfg, sort_keys=False)
    if args.dry_run:
        print(text)
        return 0
    write_text(written, text)
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", WANDB_DISABLED="true")
    if verb == "train":
        env.update(FORCE_TORCHRUN="1", NPROC_PER_NODE=env.get("NPROC_PER_NODE", env.get("GPUS_PER_NODE", "4")),
                   NNODES=env.get("NNODES", "1"), NODE_RANK=env.get("NODE_RANK", "0"))
    print(f"{PROG}: LlamaFactory {verb} with {written}", file=sys.stderr)
    _exec([sys.executable, "-m", "llm4icd_plugins.llamafactory.cli", verb, str(written)], env)
    return 0


def _infer_stage(args, backbone: Backbone, profile: dict, data_dir: Path, prepare: str) -> int:
    """Greedy, hint-free inference on every GPU of the node (tensor parallel), at GRPO's response length."""
    _need(data_dir / "stats.json", "prepared variant", prepare)
    _candidates_check(data_dir, prepare)
    if args.predictions is None:
        raise UserError("infer needs --predictions PATH. Fix: name the JSONL to write")
    length, _ = response_length(args.dataset, profile, data_dir)
    common = [sys.executable, "-m", "data_tools.evaluation.infer", "--data", str(data_dir), "--split", args.split,
              "--model", str(_model_path(backbone, args.dataset)), "--max-new-tokens", str(length),
              "--tensor-parallel-size", os.environ.get("GPUS_PER_NODE", "4"), *args.overrides]
    if backbone.enable_thinking is not None:
        common.append("--enable-thinking" if backbone.enable_thinking else "--no-enable-thinking")
    folder = args.predictions.with_name(args.predictions.name + ".d")
    cmd = (common + ["--out", str(args.predictions)] if not args.adapter else
           common + ["--lora", f"adapter={args.adapter}", "--out", str(folder), "--overwrite"])
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    if not args.adapter:
        _exec(cmd)
    subprocess.run(cmd, check=True, cwd=REPO)
    os.replace(folder / "adapter.jsonl", args.predictions)
    return 0


def _phi_stage(args, backbone: Backbone, profile: dict, data_dir: Path) -> int:
    """PHI rounds (data_tools.phi.rounds) whose steps are the plain commands of this launcher and verl."""
    length, source = response_length(args.dataset, profile, data_dir)
    print(f"{PROG}: response length {length} for GRPO and the refresh ({source})", file=sys.stderr)
    me = f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__)))}"
    pick = f"--backbone {shlex.quote(str(args.backbone or backbone.name))} --profile {profile['name']}"
    extra = " ".join(shlex.quote(o) for o in args.overrides)
    run_dir = Path(os.environ.get("PHI_RUN_DIR") or REPO / "outputs" / backbone.name / "phi"
                   / variant_name(args.dataset))
    resume = os.environ.get("PHI_RESUME", "adapter")
    if resume not in ("adapter", "checkpoint"):
        raise user_error(None, f"PHI_RESUME={resume!r} is not a resume mode",
                         "set PHI_RESUME=adapter (round t >= 2 starts from the previous round's LoRA adapter with a "
                         "fresh optimizer) or checkpoint (from its whole verl checkpoint: adapter, optimizer state, "
                         "step counter)")
    # checkpoint: verl counts steps on from the previous round, so round t trains the t-th of t epochs
    start = ("RESUME_FROM={prev_checkpoint} " if resume == "checkpoint" else "LORA_ADAPTER_PATH={prev_adapter} ")
    epochs = "{round}" if resume == "checkpoint" else "1"
    print(f"{PROG}: PHI round t >= 2 starts from the previous round's "
          + ("whole checkpoint" if resume == "checkpoint" else "LoRA adapter") + " (PHI_RESUME)", file=sys.stderr)
    train = ("TRAIN_FILE={train_file} CKPT_DIR={ckpt_dir} " + start + f"OUTPUT_DIR={shlex.quote(str(run_dir))} "
             f"MAX_RESPONSE_LENGTH={length} {me} grpo {args.dataset} {pick} "
             "data.custom_cls.path=pkg://llm4icd_plugins.verl.dataset data.custom_cls.name=PHIDataset "
             f"trainer.total_epochs={epochs} trainer.experiment_name=phi_round{{round}} " + extra)
    export = (f"{shlex.quote(sys.executable)} -m verl.model_merger merge --backend fsdp "
              "--local_dir {actor_dir} --target_dir {export_dir}")
    infer = (f"MAX_RESPONSE_LENGTH={length} {me} infer {args.dataset} {pick} "
             "--adapter {adapter} --predictions {predictions}")
    cmd = [sys.executable, "-m", "data_tools.phi.rounds", "--out", str(run_dir),
           "--train", str(data_dir / "verl" / "train.parquet"), "--rounds", os.environ.get("PHI_ROUNDS", "3"),
           "--train-cmd", train, "--export-cmd", export, "--infer-cmd", infer]
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    _exec(cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
