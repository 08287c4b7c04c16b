"""Run the PHI rounds (paper Sec. 4.3, App. E), resumably: seed the pools from the SFT model, then per
round one GRPO epoch, adapter export, hint-free inference on the training split and a pool refresh.

    python -m data_tools.phi.rounds --out runs/phi --train data/prepared/mimic3_full/verl/train.parquet \\
        --rounds 3 --train-cmd '...' --export-cmd '...' --infer-cmd '...'

The three commands are shell templates (recipes/launch.py phi fills them for verl + vLLM on GPUs) with
``{placeholders}``, each value shell-quoted:
  train:  {round} {train_file} {ckpt_dir} {prev_adapter} (empty in round 1: start from the SFT model)
          {prev_checkpoint} (the previous round's last global_step_N folder, empty in round 1: resume the whole
          checkpoint, optimizer and step counter included, instead of the adapter alone)
  export: {round} {actor_dir} (global_step_N/actor of the round's last checkpoint) {export_dir}
  infer:  {round} {adapter} (empty in round 0: the SFT model) {predictions} (JSONL to write)
Layout: run-dir/round_0/predictions.jsonl, run-dir/round_<t>/{train.parquet, checkpoints/, TRAINED,
export/, predictions.jsonl}. A step is done when its final output exists; outputs are written under a
``.partial`` name and renamed on success, and leftovers of an interrupted step are deleted, never
reused. An interrupted training step is re-run with the same checkpoint folder (verl resumes there).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from data_tools.phi import refresh as phi_refresh
from llm4icd_plugins import atomic
from llm4icd_plugins.errors import UserError

PLACEHOLDERS = {
    "train": {"round", "train_file", "ckpt_dir", "prev_adapter", "prev_checkpoint"},
    "export": {"round", "actor_dir", "export_dir"},
    "infer": {"round", "adapter", "predictions"},
}
ADAPTER_SUBDIR = "lora_adapter"


class RoundsError(UserError):
    """A step failed or the inputs are inconsistent; the message says what to do."""


def check_template(kind: str, template: str) -> None:
    """Every ``{name}`` must be known for this command (a typo would otherwise fail mid-run)."""
    names = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    unknown = names - PLACEHOLDERS[kind]
    if unknown:
        raise RoundsError(f"--{kind}-cmd uses unknown placeholder(s) {', '.join(sorted(unknown))}; "
                          f"valid: {', '.join(sorted(PLACEHOLDERS[kind]))}")
    if not template.strip():
        raise RoundsError(f"--{kind}-cmd is empty")


def _fill(template: str, values: dict) -> str:
    return template.format_map({k: shlex.quote(str(v)) if v != "" else "''" for k, v in values.items()})


class Rounds:
    """The round loop over one run folder."""

    def __init__(self, run_dir: Path, train: Path, rounds: int, commands: dict[str, str], *, log=print):
        if not 1 <= rounds <= 20:
            raise RoundsError(f"--rounds {rounds}: expected 1 to 20 (the paper runs 3 to 5)")
        for kind, template in commands.items():
            check_template(kind, template)
        self.run_dir, self.train, self.rounds = Path(run_dir), Path(train), rounds
        self.commands, self.log = commands, log
        if not self.train.is_file():
            raise RoundsError(f"{self.train}: no such training file. Fix: pass <variant>/verl/train.parquet")

    def round_dir(self, t: int) -> Path:
        return self.run_dir / f"round_{t}"

    # --- bookkeeping --------------------------------------------------------------------------------

    def _check_run_dir(self) -> None:
        """A run folder belongs to one training file: refuse to mix runs."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        meta = self.run_dir / "run.json"
        digest = hashlib.sha256(self.train.read_bytes()).hexdigest()
        if meta.exists():
            saved = json.loads(meta.read_text(encoding="utf-8"))
            if saved.get("train_sha256") != digest:
                raise RoundsError(f"{self.run_dir} was started with another training file ({saved.get('train')}). "
                                  "Fix: use a new --out folder, or the same --train")
            return
        _write_json(meta, {"train": str(self.train), "train_sha256": digest})

    def _run(self, kind: str, values: dict) -> None:
        command = _fill(self.commands[kind], values)
        self.log(f"[phi_rounds] round {values['round']}: {kind}: {command}")
        start = time.monotonic()
        proc = subprocess.run(command, shell=True)
        if proc.returncode != 0:
            raise RoundsError(f"round {values['round']}: the {kind} command exited with status {proc.returncode}. "
                              "Fix the cause and re-run the same command line: finished steps are kept")
        self.log(f"[phi_rounds] round {values['round']}: {kind} done in {time.monotonic() - start:.0f} s")

    # --- steps ----------------------------------------------------------------------------------------

    def _coverage_problem(self, predictions: Path) -> str | None:
        """Why a predictions file cannot seed the pools (unreadable, or not exactly the training samples)."""
        if not hasattr(self, "_train_ids"):
            self._train_ids = set(phi_refresh.read_train(self.train)[1])
        try:
            found = set(phi_refresh.read_predictions(predictions))
        except phi_refresh.RefreshError as exc:
            return f"its predictions file is unusable ({exc})"
        missing, foreign = len(self._train_ids - found), len(found - self._train_ids)
        if missing or foreign:
            return (f"{predictions} holds predictions for {len(found) - foreign} of {len(self._train_ids)} training "
                    f"samples ({missing} missing, {foreign} not in {self.train})")
        return None

    def infer(self, t: int, adapter: str) -> Path:
        final = self.round_dir(t) / "predictions.jsonl"
        if final.exists():
            problem = self._coverage_problem(final)
            if problem:  # committed by an earlier version of this tool, or edited since
                raise RoundsError(f"round {t}: {problem}. Fix: delete {final} and re-run the same command line "
                                  f"(round {t}'s inference runs again)")
            return final
        partial = final.with_name(final.name + ".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.unlink(missing_ok=True)
        partial_meta = partial.with_name(partial.name + ".meta.json")  # data_tools.evaluation.infer's run record
        partial_meta.unlink(missing_ok=True)
        self._run("infer", {"round": t, "adapter": adapter, "predictions": partial})
        if not partial.is_file():
            raise RoundsError(f"round {t}: the infer command exited 0 but wrote no {partial}. Fix: make it write "
                              "the JSONL to the {predictions} path")
        problem = self._coverage_problem(partial)
        if problem:
            partial.unlink(missing_ok=True)  # responses may echo notes: an unusable file is not kept
            raise RoundsError(f"round {t}: the infer command exited 0 but {problem}; the file was deleted. Fix: "
                              "find why inference stopped early (its output above) and re-run the same command "
                              f"line: round {t}'s inference starts again, finished steps are kept")
        os.replace(partial, final)
        if partial_meta.exists():
            os.replace(partial_meta, final.with_name(final.name + ".meta.json"))
        return final

    def refresh(self, t: int, predictions: Path) -> dict:
        out = self.round_dir(t + 1) / "train.parquet"
        summary = phi_refresh.summary_path(out)
        if out.exists() and summary.exists():
            return json.loads(summary.read_text(encoding="utf-8"))
        out.parent.mkdir(parents=True, exist_ok=True)
        result = phi_refresh.refresh(self.train, predictions, out, t + 1, overwrite=True)
        self.log(f"[phi_rounds] pools for round {t + 1}: {result['rows_with_hints']} rows with hints, "
                 f"{result['mastered_rows']} mastered, training micro-recall {result['train_micro_recall']:.4f}")
        return result

    def train_round(self, t: int) -> None:
        done = self.round_dir(t) / "TRAINED"
        if done.exists():
            return
        prev = "" if t == 1 else str(self.round_dir(t - 1) / "export" / ADAPTER_SUBDIR)
        prev_checkpoint = "" if t == 1 else str(self.actor_dir(t - 1).parent)
        self._run("train", {"round": t, "train_file": self.round_dir(t) / "train.parquet",
                            "ckpt_dir": self.round_dir(t) / "checkpoints", "prev_adapter": prev,
                            "prev_checkpoint": prev_checkpoint})
        self.actor_dir(t)  # the command must have left a checkpoint
        atomic.write_text(done, "ok\n")

    def actor_dir(self, t: int) -> Path:
        ckpt = self.round_dir(t) / "checkpoints"
        marker = ckpt / "latest_checkpointed_iteration.txt"
        try:
            step = int(marker.read_text(encoding="utf-8").strip())
        except (OSError, ValueError) as exc:
            raise RoundsError(f"round {t}: no readable {marker} after training. Fix: keep trainer.save_freq > 0 so "
                              "verl saves the last step") from exc
        actor = ckpt / f"global_step_{step}" / "actor"
        if not actor.is_dir():
            raise RoundsError(f"round {t}: {actor} is missing although {marker} names step {step}")
        return actor

    def export(self, t: int) -> Path:
        final = self.round_dir(t) / "export"
        if final.exists():
            return final
        partial = final.with_name("export.partial")
        shutil.rmtree(partial, ignore_errors=True)
        self._run("export", {"round": t, "actor_dir": self.actor_dir(t), "export_dir": partial})
        if not (partial / ADAPTER_SUBDIR).is_dir():
            raise RoundsError(f"round {t}: the export command wrote no {partial / ADAPTER_SUBDIR}. Fix: export with "
                              "`python -m verl.model_merger merge --backend fsdp ... --target_dir {export_dir}`")
        os.replace(partial, final)
        return final

    # --- the loop ---------------------------------------------------------------------------------------

    def run(self) -> list[dict]:
        self._check_run_dir()
        summaries = [self.refresh(0, self.infer(0, ""))]
        for t in range(1, self.rounds + 1):
            if summaries[-1]["rows_with_hints"] == 0:
                self.log(f"[phi_rounds] every training row is mastered: stopping before round {t}")
                break
            self.train_round(t)
            export = self.export(t)
            if t < self.rounds:
                summaries.append(self.refresh(t, self.infer(t, str(export / ADAPTER_SUBDIR))))
        _write_json(self.run_dir / "rounds_summary.json", summaries)
        return summaries


def _write_json(path: Path, obj) -> None:
    atomic.write_text(path, json.dumps(obj, indent=2) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_tools.phi.rounds", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--out", "--run-dir", dest="run_dir", required=True, type=Path, metavar="DIR",
                        help="folder of this PHI run (re-run to resume; --run-dir is the older name)")
    parser.add_argument("--train", required=True, type=Path,
                        help="<variant>/verl/train.parquet from data_tools.build.prepare")
    parser.add_argument("--rounds", type=int, default=3,
                        help="PHI rounds, one GRPO epoch each (paper: 3 to 5; default 3)")
    parser.add_argument("--train-cmd", required=True, help="shell template of one GRPO epoch (see placeholders above)")
    parser.add_argument("--export-cmd", required=True, help="shell template exporting a checkpoint's LoRA adapter")
    parser.add_argument("--infer-cmd", required=True,
                        help="shell template of hint-free greedy inference on the training split, writing JSONL")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rounds = Rounds(args.run_dir, args.train, args.rounds,
                        {"train": args.train_cmd, "export": args.export_cmd, "infer": args.infer_cmd})
        summaries = rounds.run()
    except (RoundsError, phi_refresh.RefreshError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for s in summaries:
        print(f"round {s['round']} pools: {s['rows_with_hints']} rows with hints, {s['mastered_rows']} mastered, "
              f"training micro-recall of the previous model {s['train_micro_recall']:.4f}")
    print(f"PHI run in {args.run_dir}: {len(summaries)} refresh(es); adapters in round_<t>/export/{ADAPTER_SUBDIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
