"""The launcher's candidates knob (CANDIDATES, CANDIDATES_TOP_K): every stage reads and writes <dataset>_cand<K>, the
printed prepare command writes exactly that folder, and a variant whose stats.json records another K or other
candidate files (prepare's sha256), or a plain run on a candidate variant, is refused with exit 2 and the fix."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from data_tools.build.prepare import build_parser as prepare_parser
from data_tools.build.prompt_candidates import read_candidates
from launcher_env import CLEARED, fake_prepared, run_wrapper
from llm4icd_plugins.backbones import DEFAULT_BACKBONE

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
K = 3

def _launch(args, env_extra=None):
    return run_wrapper(args, env_extra)


def _candidates(folder: Path, first_code: str = "401.9") -> Path:
    """A candidates folder as data_tools.evaluation.candidates writes it: one row per note and split."""
    folder.mkdir(parents=True)
    for split in ("train", "val", "test"):
        rows = [{"id": f"{split}-{i}", "codes": [first_code, "428.0", "584.9"], "scores": [0.9, 0.5, 0.1]}
                for i in range(2)]
        (folder / f"candidates_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _fake_prepared(root: Path, name: str, candidates: Path | None = None, top_k: int = K) -> Path:
    """The prepared files the launcher reads; with ``candidates`` its stats.json records them as prepare does."""
    stats = {"candidates": read_candidates(candidates).record(top_k)} if candidates is not None else None
    return fake_prepared(root / DEFAULT_BACKBONE / name, stats)


@pytest.fixture
def setup(tmp_path):
    """A candidates folder, a prepared root and a merged model; the environment of a candidate run."""
    cand = _candidates(tmp_path / "cand")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    env = {"LLM4ICD_DATA_ROOT": str(tmp_path / "prepared"), "MODEL_PATH": str(tmp_path / "m"),
           "CANDIDATES": str(cand), "CANDIDATES_TOP_K": str(K)}
    return {"cand": cand, "root": tmp_path / "prepared", "env": env, "tmp": tmp_path}


def _last_command(proc) -> list[str]:
    return shlex.split(proc.stdout.strip().splitlines()[-1])


def test_a_matching_variant_runs_grpo_and_phi_from_the_cand_folder(setup):
    data = _fake_prepared(setup["root"], f"mimic3_full_cand{K}", setup["cand"])
    _fake_prepared(setup["root"], "mimic3_full")  # the plain variant beside it is not read
    proc = _launch([RECIPES / "grpo_mimic3_full.sh", "--dry-run"], setup["env"])
    assert proc.returncode == 0, proc.stderr
    banner = "\n".join(proc.stderr.splitlines()[:2])
    assert "candidates on" in banner and f"top {K} candidates of {setup['cand']}" in banner
    assert f"max_response_length 448 (measured in {data / 'stats.json'})" in proc.stderr
    tensorboard = REPO / "outputs" / DEFAULT_BACKBONE / "grpo" / f"mimic3_full_cand{K}" / "tensorboard"
    assert f"+ray_kwargs.ray_init.runtime_env.env_vars.TENSORBOARD_DIR={json.dumps(str(tensorboard))}" in \
        _last_command(proc)

    proc = _launch([RECIPES / "phi_mimic3_full.sh", "--dry-run"], setup["env"])
    assert proc.returncode == 0, proc.stderr
    cmd = _last_command(proc)
    assert cmd[cmd.index("--train") + 1] == str(data / "verl" / "train.parquet")
    assert cmd[cmd.index("--out") + 1] == str(REPO / "outputs" / DEFAULT_BACKBONE / "phi" / f"mimic3_full_cand{K}")


def test_grpo_gets_the_cand_folders_files_and_sft_model(setup, monkeypatch):
    """The environment verl would start with (the dry run prints the command only): TRAIN_FILE and VAL_FILE in the
    candidate variant; without MODEL_PATH, the merged model of the candidate SFT run."""
    sys.path.insert(0, str(RECIPES))
    try:
        import launch
    finally:
        sys.path.remove(str(RECIPES))
    data = _fake_prepared(setup["root"], f"mimic3_full_cand{K}", setup["cand"])
    for var in CLEARED + ("BACKBONE", "PROFILE"):
        monkeypatch.delenv(var, raising=False)
    for key, value in setup["env"].items():
        monkeypatch.setenv(key, value)
    built = []
    real = launch.grpo_command
    monkeypatch.setattr(launch, "grpo_command", lambda *a: built.append(real(*a)) or built[-1])
    assert launch.main(["grpo", "mimic3_full", "--dry-run"]) == 0
    env = built[0][1]
    assert env["TRAIN_FILE"] == str(data / "verl" / "train.parquet")
    assert env["VAL_FILE"] == str(data / "verl" / "val.parquet")
    assert env["CKPT_DIR"] == str(REPO / "outputs" / DEFAULT_BACKBONE / "grpo" / f"mimic3_full_cand{K}" / "checkpoints")
    monkeypatch.delenv("MODEL_PATH")
    assert launch._model_path(launch.load_backbone(DEFAULT_BACKBONE), "mimic3_full") == (
        REPO / "outputs" / DEFAULT_BACKBONE / "sft" / f"mimic3_full_cand{K}" / "merged")


def test_sft_and_merge_use_the_cand_folders(setup):
    data = _fake_prepared(setup["root"], f"mimic3_full_cand{K}", setup["cand"])
    env = {k: v for k, v in setup["env"].items() if k != "MODEL_PATH"}
    proc = _launch([RECIPES / "sft_mimic3_full.sh", "--dry-run"], env)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    sft = REPO / "outputs" / DEFAULT_BACKBONE / "sft" / f"mimic3_full_cand{K}"
    assert cfg["dataset_dir"] == str(data) and cfg["output_dir"] == str(sft)
    assert cfg["dataset"] == "mimic3_full_train"  # the names inside a variant that prepare wrote and mv moved
    proc = _launch([RECIPES / "launch.sh", "merge", "mimic3_full", "--dry-run"], env)
    assert proc.returncode == 2 and f"{sft / 'adapter_config.json'}: no LoRA adapter" in proc.stderr


@pytest.mark.parametrize("dataset", ["mimic3_full", "mimic4_top50"])
def test_missing_variant_prints_a_prepare_command_that_writes_the_folder_read(setup, dataset):
    proc = _launch([RECIPES / f"grpo_{dataset}.sh"], setup["env"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    target = setup["root"] / DEFAULT_BACKBONE / f"{dataset}_cand{K}"
    assert f"{target / 'verl' / 'train.parquet'}: no training file" in proc.stderr
    command = proc.stderr.split("prepare it with: ", 1)[1].split(" (or set LLM4ICD_DATA_ROOT)")[0]
    prepare, move, rmdir = command.split(" && ")
    corpus = dataset.split("_")[0]
    argv = shlex.split(prepare.replace(f"<{corpus.upper()} tables folder>", "/raw"))
    assert argv[:3] == ["python", "-m", "data_tools.build.prepare"]
    args = prepare_parser().parse_args(argv[3:])  # prepare's own parser: every flag is one it takes
    assert args.candidates == setup["cand"] and args.top_k == K and args.backbone == DEFAULT_BACKBONE
    written = [args.out / f"{args.name or args.dataset}_{v}" for v in args.variants.split(",")]
    assert shlex.split(move) == ["mv", str(written[0]), str(target)] and len(written) == 1
    assert shlex.split(rmdir) == ["rmdir", str(args.out)]


def test_plain_runs_keep_the_plain_folder_and_command(setup):
    env = {k: v for k, v in setup["env"].items() if not k.startswith("CANDIDATES")}
    proc = _launch([RECIPES / "grpo_mimic3_full.sh"], env)
    assert proc.returncode == 2 and "candidates on" not in proc.stderr
    assert f"{setup['root'] / DEFAULT_BACKBONE / 'mimic3_full' / 'verl' / 'train.parquet'}: no training" in proc.stderr
    assert "--candidates" not in proc.stderr and "--top-k" not in proc.stderr


def _refused(proc, *words):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Fix:" in proc.stderr
    for word in words:
        assert word in proc.stderr


def test_other_candidate_files_are_refused(setup):
    data = _fake_prepared(setup["root"], f"mimic3_full_cand{K}", setup["cand"])
    other = _candidates(setup["tmp"] / "other", first_code="250.00")
    proc = _launch([RECIPES / "grpo_mimic3_full.sh", "--dry-run"], {**setup["env"], "CANDIDATES": str(other)})
    _refused(proc, f"{data / 'stats.json'}: ", "sha256", str(other), "set CANDIDATES to the folder")
    # the same files, rewritten since prepare: refused too
    (setup["cand"] / "candidates_val.jsonl").write_text("")
    proc = _launch([RECIPES / "phi_mimic3_full.sh", "--dry-run"], setup["env"])
    _refused(proc, f"{data / 'stats.json'}: ", "sha256")


def test_another_top_k_is_refused(setup):
    data = _fake_prepared(setup["root"], f"mimic3_full_cand{K}", setup["cand"], top_k=K + 2)
    proc = _launch([RECIPES / "grpo_mimic3_full.sh", "--dry-run"], setup["env"])
    _refused(proc, f"{data / 'stats.json'}: ", f"top {K + 2} candidates", f"CANDIDATES_TOP_K is {K}")


def test_a_variant_prepared_without_candidates_is_refused(setup):
    data = _fake_prepared(setup["root"], f"mimic3_full_cand{K}")
    proc = _launch([RECIPES / "sft_mimic3_full.sh", "--dry-run"], setup["env"])
    _refused(proc, f"{data / 'stats.json'}: ", "prepared without --candidates", "--candidates")


def test_a_plain_run_on_a_candidate_variant_is_refused(setup):
    data = _fake_prepared(setup["root"], "mimic3_full", setup["cand"])
    env = {k: v for k, v in setup["env"].items() if not k.startswith("CANDIDATES")}
    proc = _launch([RECIPES / "grpo_mimic3_full.sh", "--dry-run"], env)
    _refused(proc, f"{data / 'stats.json'}: ", "CANDIDATES is not set", f"{data}_cand{K}")


@pytest.mark.parametrize("change", [{"CANDIDATES_TOP_K": "ten"}, {"CANDIDATES_TOP_K": "0"},
                                    {"CANDIDATES": "/nowhere/cand"}, {"CANDIDATES": ""}])
def test_bad_knob_values_are_refused(setup, change):
    _fake_prepared(setup["root"], f"mimic3_full_cand{K}", setup["cand"])
    proc = _launch([RECIPES / "grpo_mimic3_full.sh", "--dry-run"], {**setup["env"], **change})
    _refused(proc, next(iter(change)))


def test_help_lists_the_knob():
    proc = _launch([RECIPES / "grpo_mimic3_full.sh", "--help"])
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0 and "CANDIDATES (" in text and "CANDIDATES_TOP_K [10]" in text
