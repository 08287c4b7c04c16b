"""bench/exp_ladder.py: a variant is the base run's own settings plus its flags, redone from its stage in a copy;
finished variants are kept; the seed spread is mean ± sample sd."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

from data_tools.ladder import run as ladder

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("exp_ladder", REPO / "bench" / "exp_ladder.py")
exp = sys.modules["exp_ladder"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(exp)


def _base(tmp_path: Path, settings: dict) -> Path:
    base = tmp_path / "base"
    (base / ".done").mkdir(parents=True)
    (base / ".done" / "grpo.json").write_text(json.dumps({"seconds": 1, "settings": settings}))
    (base / ".done" / "report.json").write_text(json.dumps({"seconds": 1, "settings": {}}))
    (base / "models").mkdir()
    (base / "models" / "weights.bin").write_text("w")
    return base


def test_base_flags_give_the_ladder_the_base_runs_settings(tmp_path):
    settings = {"grpo_lr": 0.001, "seed": 3, "n_codes": None, "phi_override": ["+data.a=1", "+data.b=2"],
                "label_profile": "longtail"}
    flags = exp.base_flags(_base(tmp_path, settings))
    args = ladder.build_parser().parse_args(["--out", "x", *flags])
    assert (args.grpo_lr, args.seed, args.n_codes, args.label_profile) == (0.001, 3, None, "longtail")
    assert args.phi_override == ["+data.a=1", "+data.b=2"]
    with pytest.raises(exp.ExperimentError, match="no finished ladder stages"):
        exp.base_flags(tmp_path)


def test_variant_copies_the_base_and_is_kept_once_finished(tmp_path):
    base = _base(tmp_path, {"grpo_lr": 0.003})
    fake = tmp_path / "python"
    record = tmp_path / "calls.jsonl"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nfrom pathlib import Path\na = sys.argv[1:]\n"
                    f"open('{record}', 'a').write(json.dumps(a) + '\\n')\n"
                    "out = Path(a[a.index('--out') + 1])\n(out / '.done' / 'report.json').write_text('{}')\n")
    fake.chmod(0o755)
    experiment = exp.Experiment("grpo", {"base": exp.BASE, "small": ["--grpo-lr", "1e-4"]}, "table")
    out = tmp_path / "out"
    out.mkdir()
    assert exp.run_variant(base, out, "base", experiment, str(fake)) == base
    folder = exp.run_variant(base, out, "small", experiment, str(fake))
    assert (folder / "models" / "weights.bin").read_text() == "w"
    (call,) = [json.loads(line) for line in record.read_text().splitlines()]
    args = ladder.build_parser().parse_args(call[2:])
    assert call[:2] == ["-m", "data_tools.ladder"] and args.from_stage == "grpo" and args.grpo_lr == 1e-4
    exp.run_variant(base, out, "small", experiment, str(fake))
    assert len(record.read_text().splitlines()) == 1, "a finished variant is not run again"
    experiment.variants["small"] = ["--grpo-lr", "1e-5"]
    exp.run_variant(base, out, "small", experiment, str(fake))
    assert len(record.read_text().splitlines()) == 2, "other flags redo it"


def test_an_interrupted_copy_of_the_base_is_never_used(tmp_path, monkeypatch):
    base = _base(tmp_path, {"grpo_lr": 0.003})
    out = tmp_path / "out"
    out.mkdir()
    experiment = exp.Experiment("grpo", {"small": ["--grpo-lr", "1e-4"]}, "table")
    real_copytree = exp.shutil.copytree

    def killed(src, dst, **kw):
        (Path(dst) / ".done").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(exp.shutil, "copytree", killed)
    with pytest.raises(KeyboardInterrupt):
        exp.run_variant(base, out, "small", experiment, "unused")
    assert not (out / "small").exists()
    monkeypatch.setattr(exp.shutil, "copytree", real_copytree)
    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}\nimport sys\nfrom pathlib import Path\na = sys.argv[1:]\n"
                    "(Path(a[a.index('--out') + 1]) / '.done' / 'report.json').write_text('{}')\n")
    fake.chmod(0o755)
    folder = exp.run_variant(base, out, "small", experiment, str(fake))
    assert (folder / "models" / "weights.bin").read_text() == "w" and (folder / ".done" / "grpo.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["small", "small.console", "small.flags.json"]


def test_seed_spread_is_mean_and_sample_sd():
    runs = {f"s{i}": {"sft": {"micro_f1": 0.4, "macro_f1": 0.1, "ci": {}, "recall": {"≥100": 0.5}},
                      "grpo": {"micro_f1": f, "macro_f1": 0.05, "ci": {}, "recall": {"≥100": r}}}
            for i, (f, r) in enumerate(((0.30, 0.2), (0.36, 0.4), (0.33, 0.3)))}
    text, stats = exp.spread_markdown(runs)
    mean, sd, n = stats["grpo"]["micro_f1"]
    assert (round(mean, 6), round(sd, 6), n) == (0.33, round(statistics.stdev([0.30, 0.36, 0.33]), 6), 3)
    assert "| GRPO | 3 | 33.0 ± 3.0 |" in text
    assert "GRPO − SFT micro f1: -10.0, -4.0, -7.0 (mean -7.0)" in text
