"""The paper's whole ladder on the embedded default, on a CPU, through the real frameworks.

synthetic MIMIC-III-like corpus (``--label-profile longtail``: a long tail of codes) → tiny model → prepare →
prompting baseline → SFT (LlamaFactory) → GRPO (verl + vLLM CPU build, the project's reward) → PHI rounds through
``data_tools.phi.rounds`` (per round: hint-free inference on train, pool refresh, one hinted GRPO epoch) →
hint-free evaluation of every rung → the paper's Table 1 layout with bootstrap intervals and recall per
training-frequency bucket, and plots.

    bash recipes/quickstart.sh [--out outputs/quickstart] [--n-admissions 900] [--seed 0] ...

The console shows one line per stage with its key numbers; each stage's full output goes to
``OUT/logs/<stage>.log`` (a failing stage prints the end of its log). Every stage writes a marker when it is
complete, so a re-run skips finished stages and redoes an interrupted one (inference and PHI rounds resume
where they stopped). No note text is printed or logged.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from data_tools.ladder.report import (audit_hints, bucket_recall, curve_summary, intervals_markdown, plot_reward_curves,
                                     reward_curve, rounds_markdown, save_reward_curve)
from llm4icd_plugins.errors import EXIT_USER_ERROR

REPO = Path(__file__).resolve().parents[2]
VARIANT = "mimic3_full"
DEFAULT_N_CODES = {"default": 60, "longtail": 600}
"""Codes of the synthetic corpus per label profile: 60 a tiny model learns in minutes; a long tail of 600."""
PROMPT_BUDGET = 896
"""verl's data.max_prompt_length, the whole room of every prompt (PHIDataset re-fits a hinted prompt's note
around its hint block, so no room is kept for hints)."""
RESPONSE_LENGTH = 160
"""Generation budget of GRPO rollouts and inference: above the longest SFT answer of the long-tail corpus."""
BUCKET_EDGES = "100,30,10"
"""Training-frequency buckets of the report (≥100, 30–99, 10–29, <10 occurrences) for a corpus of ~600 notes."""
ROLLOUT_SEED = 42
"""verl's default vLLM sampling seed; the ladder's is this plus --rl-seed."""
PHI_VAL_CHECK = 16
"""Validation prompts verl draws at the end of each PHI round (the audit checks none was hinted)."""
TAIL_LINES = 40


@dataclass(frozen=True)
class Settings:
    out: Path
    n_admissions: int
    label_profile: str
    n_codes: int | None
    seed: int
    rl_seed: int
    pretrain_steps: int
    sft_steps: int
    sft_lr: float
    grpo_steps: int
    phi_rounds: int
    phi_steps: int
    rollouts: int
    grpo_batch: int
    grpo_lr: float
    rollout_temperature: float
    max_test: int | None
    max_train_infer: int | None
    phi_resume: str
    phi_overrides: tuple[str, ...]
    candidates: int
    candidate_coder: str
    venvs: Path

    def python(self, env: str) -> str:
        return str(self.venvs / env / "bin" / "python")

    @property
    def data(self) -> Path:
        return self.out / "data" / VARIANT

    @property
    def models(self) -> Path:
        return self.out / "models"

    @property
    def preds(self) -> Path:
        return self.out / "predictions"

    @property
    def rounds(self) -> Path:
        return self.out / "phi" / "rounds"


@dataclass(frozen=True)
class Stage:
    name: str
    what: str
    run: Callable[[Settings, Path], str | None]
    """Runs the stage; returns its key numbers for the console line (or None)."""
    clean: Sequence[str] = ()
    """Output paths (relative to OUT) removed before a stage runs, so a redo never reuses half-written output."""
    redo_clean: Sequence[str] = ()
    """Also removed when the stage is redone on purpose (--from-stage); an interrupted run keeps them to
    resume from (verl checkpoints, finished PHI rounds)."""
    knobs: Sequence[str] = ()
    """Command-line settings the stage itself uses: recorded in its marker, so a re-run with other values
    says that the finished stage is kept and how to redo it."""


class LadderError(Exception):
    """A stage failed; the message says which and where its log is."""

    def __init__(self, message: str, log: Path | None = None):
        super().__init__(message)
        self.log = log


class LadderSetupError(LadderError):
    """The ladder cannot start (a missing environment): a user error, exit status 2 as every tool's."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled",
               TOKENIZERS_PARALLELISM="false", VLLM_CPU_KVCACHE_SPACE=env.get("VLLM_CPU_KVCACHE_SPACE", "1"),
               PYTHONUNBUFFERED="1")
    return env


def sh(cmd: Sequence[str], log: Path, *, env: dict | None = None, cwd: Path = REPO) -> None:
    """Run one command with its whole output appended to the stage log (not the console); raise on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as sink:
        sink.write(f"$ {shlex.join(map(str, cmd))}\n".encode())
        sink.flush()
        code = subprocess.run(list(map(str, cmd)), cwd=cwd, env=env or _env(), stdout=sink,
                              stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        raise LadderError(f"command failed with exit code {code}: {shlex.join(map(str, cmd))}", log)


def log_tail(log: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a log (progress-bar redraws split on carriage returns)."""
    if not log.exists():
        return ""
    with open(log, "rb") as source:
        source.seek(max(0, log.stat().st_size - 200_000))
        text = source.read().decode("utf-8", errors="replace")
    rows = [r for r in re.split(r"[\r\n]+", text) if r.strip()]
    return "\n".join(rows[-lines:])


class Progress:
    """On a terminal, one line per stage rewritten in place: elapsed time, PHI round and verl's last step."""

    _STEP = re.compile(rb"\bstep:(\d+) - ")
    _ROUND = re.compile(rb"\[phi_rounds\] round (\d+): (\w+)")
    _PERCENT = re.compile(rb"(\d+)%\|")

    def __init__(self, head: str, log: Path, enabled: bool):
        self.head, self.log, self.enabled = head, log, enabled
        self.start, self.offset, self.where = time.perf_counter(), 0, ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True) if enabled else None

    def __enter__(self) -> Progress:
        print(self.head, end="" if self.enabled else " …", flush=True)
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _scan(self) -> None:
        try:
            with open(self.log, "rb") as source:
                source.seek(self.offset)
                chunk = source.read()
        except OSError:
            return
        self.offset += len(chunk)
        parts = []
        rounds = self._ROUND.findall(chunk)
        if rounds:
            self._round = f"round {rounds[-1][0].decode()} {rounds[-1][1].decode()}"
        if getattr(self, "_round", ""):
            parts.append(self._round)
        steps = self._STEP.findall(chunk)
        if steps:
            self._step = f"step {steps[-1].decode()}"
        percent = self._PERCENT.findall(chunk)
        if percent:
            self._percent = f"{percent[-1].decode()}%"
        parts += [p for p in (getattr(self, "_step", ""), getattr(self, "_percent", "")) if p]
        self.where = ", ".join(parts)

    def _loop(self) -> None:
        while not self._stop.wait(2):
            self._scan()
            elapsed = time.perf_counter() - self.start
            print(f"\r\033[K{self.head} … {elapsed:.0f} s" + (f" ({self.where})" if self.where else ""),
                  end="", flush=True)

    def finish(self, text: str) -> None:
        print((f"\r\033[K{self.head}" if self.enabled else "") + f" {text}", flush=True)


# --- stages -------------------------------------------------------------------------------------------

def stage_synth(s: Settings, log: Path) -> str:
    sh([s.python("rl"), "-m", "data_tools.build.synth", "--out", s.out / "raw", "--corpus", "mimic3",
        "--label-profile", s.label_profile, "--n-admissions", s.n_admissions,
        "--n-codes", s.n_codes or DEFAULT_N_CODES[s.label_profile], "--seed", s.seed, "--overwrite",
        "--no-progress"], log)
    summary = json.loads((s.out / "raw" / "mimic3" / "synth_manifest.json").read_text()).get("summary", {})
    codes = summary.get("codes", {}).get("icd9", {})
    grades = ", ".join(f"{g} {share:.0%}" for g, share in summary.get("evidence_share", {}).items())
    return (f"{s.n_admissions} admissions, {codes.get('distinct', '?')} codes ({codes.get('rare_lt10', '?')} seen < 10 "
            f"times)" + (f"; evidence {grades}" if grades else ""))


def stage_tiny_model(s: Settings, log: Path) -> str:
    """The tokenizer learns the corpus as prepare will present it (lower-cased discharge summaries)."""
    import pandas as pd

    notes = pd.read_csv(s.out / "raw" / "mimic3" / "NOTEEVENTS.csv.gz", dtype=str, keep_default_na=False,
                        usecols=["CATEGORY", "TEXT"])
    corpus = s.models / "tokenizer_corpus.jsonl"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    with open(corpus, "w", encoding="utf-8") as sink:
        for text in notes.loc[notes["CATEGORY"] == "Discharge summary", "TEXT"]:
            sink.write(json.dumps({"text": text.lower()}) + "\n")
    sh([s.python("rl"), "-m", "data_tools.build.tiny_model", "--out", s.models / "base", "--texts", corpus,
        "--seed", s.seed, "--pretrain-steps", s.pretrain_steps, "--overwrite"], log)
    losses = re.findall(r"loss=([0-9.]+)", log.read_text(errors="replace"))
    return f"{s.pretrain_steps} pretraining steps" + (f", loss {losses[-1]}" if losses else "")


def stage_prepare(s: Settings, log: Path) -> str:
    """prepare's Full variant; with --candidates, first a plain variant on which a discriminative coder trains
    (training notes cross-fitted), then the variant whose every prompt lists the coder's top-K candidates."""
    prepare = [s.python("rl"), "-m", "data_tools.build.prepare", "mimic3", "--root", s.out / "raw" / "mimic3",
               "--variants", "full", "--tokenizer", s.models / "base", "--max-prompt-length", PROMPT_BUDGET,
               "--hint-reserve", 0, "--cutoff-len", 1152, "--overwrite"]
    extra, summary = [], ""
    if s.candidates:
        plain, coder = s.out / "candidates" / "plain", s.out / "candidates" / s.candidate_coder
        sh([*prepare, "--out", plain], log)
        sh([s.python("rl"), "-m", "data_tools.evaluation.candidates", "train", "--data", plain / VARIANT,
            "--coder", s.candidate_coder, "--top-k", max(50, s.candidates), "--out", coder, "--overwrite",
            "--no-progress"], log)
        extra = ["--candidates", coder, "--top-k", s.candidates]
        report = json.loads((coder / "report.json").read_text())
        recall = (report["recall_at_k"]["test"].get(str(s.candidates)) or {}).get("micro")
        tuned = report.get("f1_at_tuned_threshold", {})
        summary = (f"; {s.candidate_coder} coder: test micro-F1 {tuned.get('test_micro_f1', float('nan')):.3f} at its "
                   f"tuned threshold" + (f", recall@{s.candidates} {recall:.3f}" if recall is not None else ""))
    sh([*prepare, "--out", s.out / "data", *extra], log)
    import pyarrow.parquet as pq

    rows = {split: pq.read_metadata(s.data / "verl" / f"{split}.parquet").num_rows
            for split in ("train", "val", "test")}
    codes = len(json.loads((s.data / "label_space.json").read_text()).get("codes", []))
    return (f"train/val/test {rows['train']}/{rows['val']}/{rows['test']} notes, {codes} codes in the label space"
            + summary)


def _infer_cmd(s: Settings, model: Path, *, split: str = "test", prompt: str = "train",
               max_samples: int | None = None) -> list:
    return [s.python("rl"), "-m", "data_tools.evaluation.infer", "--data", s.data, "--split", split, "--model", model,
            "--prompt", prompt, "--max-new-tokens", RESPONSE_LENGTH, "--max-model-len", 2048, "--dtype", "float32",
            "--enforce-eager", *(["--max-samples", max_samples] if max_samples else [])]


def _infer(s: Settings, log: Path, model: Path, output: Path, *, lora: Path | None = None, **kw) -> str:
    cmd = _infer_cmd(s, model, **kw)
    if lora is not None:
        cmd += ["--lora", f"{output.stem}={lora}", "--out", output.parent]
    else:
        cmd += ["--out", output]
    sh(cmd, log)
    return _span_summary(output)


def _span_summary(predictions: Path) -> str:
    """Notes answered, the share whose answer closed a <code> span, and a first micro-F1 of infer's ``pred`` lists
    (the report's evaluation re-parses the responses by the reward's rule and is the number that counts)."""
    records = [json.loads(line) for line in predictions.read_text().splitlines() if line.strip()]
    closed = sum("</code>" in (r.get("response") or "") for r in records)
    hits = [(len(set(r.get("pred") or []) & set(r.get("gold") or [])), len(set(r.get("pred") or [])),
             len(set(r.get("gold") or []))) for r in records]
    tp, n_pred, n_gold = (sum(h[i] for h in hits) for i in range(3))
    f1 = 2 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0
    return f"{len(records)} notes, {closed / max(1, len(records)):.0%} with a closed <code> span, micro-F1 ≈ {f1:.3f}"


def stage_baseline(s: Settings, log: Path) -> str:
    return _infer(s, log, s.models / "base", s.preds / "zero_shot.jsonl", prompt="zero_shot", max_samples=s.max_test)


def stage_sft(s: Settings, log: Path) -> str:
    """SFT with the real llamafactory-cli (loss on the answer only), full fine-tuning of the tiny model.

    The paper (and recipes/sft/) uses LoRA r=8 on a pretrained backbone. The tiny stand-in has only
    minutes of language-model pretraining, and LoRA on a 1M-parameter model barely moves it in CPU
    minutes, so the ladder trains all weights here; LoRA SFT + `llamafactory-cli export` merging is
    exercised by the test suite.
    """
    cli = [s.python("sft"), "-m", "llm4icd_plugins.llamafactory.cli"]  # llamafactory-cli minus its example printout
    recipe = s.out / "sft" / "llamafactory_train.yaml"  # the users' SFT recipe at tiny scale
    sh([s.python("rl"), REPO / "recipes/tiny/sft/compose.py", "train", "--out", recipe], log)
    sh([*cli, "train", recipe,
        f"model_name_or_path={s.models / 'base'}", f"dataset_dir={s.data}", f"output_dir={s.models / 'sft' / 'merged'}",
        "finetuning_type=full", f"max_steps={s.sft_steps}", f"learning_rate={s.sft_lr}", f"seed={s.seed}"], log)
    losses = re.findall(r"'loss': '?([0-9.]+)", log.read_text(errors="replace"))
    return f"{s.sft_steps} steps" + (f", training loss {losses[0]} → {losses[-1]}" if len(losses) > 1 else "")


def stage_sft_eval(s: Settings, log: Path) -> str:
    return _infer(s, log, s.models / "sft" / "merged", s.preds / "sft.jsonl", max_samples=s.max_test)


def _grpo_overrides(s: Settings, name: str, steps: int, *, total_steps: bool = True) -> list[str]:
    """What the ladder varies in recipes/tiny/grpo_synthetic.yaml (paths come from the environment); without
    total_steps the caller sets trainer.total_training_steps itself (PHI resuming a checkpoint counts steps on)."""
    mini = s.grpo_batch // 2 if s.grpo_batch % 2 == 0 else s.grpo_batch
    return [f"data.max_prompt_length={PROMPT_BUDGET}", f"data.max_response_length={RESPONSE_LENGTH}",
            f"data.seed={s.rl_seed}", f"actor_rollout_ref.rollout.seed={ROLLOUT_SEED + s.rl_seed}",
            f"data.train_batch_size={s.grpo_batch}",
            # two policy updates per step (mini-batches of half the prompts)
            f"actor_rollout_ref.actor.ppo_mini_batch_size={mini}",
            f"actor_rollout_ref.actor.optim.lr={s.grpo_lr}", f"actor_rollout_ref.rollout.n={s.rollouts}",
            f"actor_rollout_ref.rollout.temperature={s.rollout_temperature}",
            # vLLM runs in float32 here, so its token log-probs are the actor's (tests/integration/test_grpo_cpu.py
            # checks the gap): they serve as the old policy's, saving a forward pass per step
            "algorithm.rollout_correction.bypass_mode=true",
            f"trainer.experiment_name=quickstart-{name}",
            *([f"trainer.total_training_steps={steps}"] if total_steps else []),
            f"trainer.save_freq={steps}", "+ray_kwargs.ray_init.address=local"]


def _grpo_env(s: Settings, name: str, **paths: Path) -> dict[str, str]:
    """The recipe's path variables (MODEL_PATH, VAL_FILE, TENSORBOARD_DIR, plus TRAIN_FILE/CKPT_DIR if given)."""
    return {**_env(), "PYTHON": s.python("rl"), "MODEL_PATH": str(s.models / "sft" / "merged"),
            "VAL_FILE": str(s.data / "verl" / "val.parquet"), "TENSORBOARD_DIR": str(s.out / name / "tensorboard"),
            **{key.upper(): str(value) for key, value in paths.items()}}


def _export(s: Settings, log: Path, actor: Path, export: Path) -> Path:
    sh([s.python("rl"), "-m", "verl.model_merger", "merge", "--backend", "fsdp", "--local_dir", actor,
        "--target_dir", export], log)
    adapter = export / "lora_adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise LadderError(f"verl.model_merger wrote no LoRA adapter under {export}", log)
    return adapter


def stage_grpo(s: Settings, log: Path) -> str:
    """Real verl GRPO on the CPU (recipes/tiny/grpo/run_cpu.sh) from the merged SFT model, then the adapter export."""
    ckpt = s.out / "grpo" / "checkpoints"
    sh(["bash", REPO / "recipes/tiny/grpo/run_cpu.sh", *_grpo_overrides(s, "grpo", s.grpo_steps),
        f"trainer.test_freq={s.grpo_steps}"], log,
       env=_grpo_env(s, "grpo", train_file=s.data / "verl" / "train.parquet", ckpt_dir=ckpt))
    _export(s, log, ckpt / f"global_step_{s.grpo_steps}" / "actor", s.models / "grpo")
    return curve_summary(save_reward_curve(log, s.out / "grpo" / "reward_curve.json"))


def stage_grpo_eval(s: Settings, log: Path) -> str:
    return _infer(s, log, s.models / "sft" / "merged", s.preds / "grpo.jsonl", lora=s.models / "grpo" / "lora_adapter",
                  max_samples=s.max_test)


# --- PHI: data_tools.phi.rounds with the ladder's commands ----------------------------------------------

def _phi_train_file(s: Settings) -> Path:
    """The training rows PHI works on: the first --max-train-infer rows (all when 0), laid out as a prepared
    variant (verl/ + examples/) so that the refresh finds their whole notes."""
    full = s.data / "verl" / "train.parquet"
    if not s.max_train_infer:
        return full
    import pyarrow.parquet as pq

    root = s.out / "phi" / "data"
    train = root / "verl" / "train.parquet"
    if not train.exists():
        train.parent.mkdir(parents=True, exist_ok=True)
        (root / "examples").mkdir(parents=True, exist_ok=True)
        pq.write_table(pq.read_table(full).slice(0, s.max_train_infer), train)
        (root / "examples" / "train.parquet").symlink_to(s.data / "examples" / "train.parquet")
    return train


def phi_commands(s: Settings) -> dict[str, str]:
    """The three step templates of data_tools.phi.rounds: hinted GRPO on the CPU (from the previous round's
    adapter after round 1), verl's adapter export, and hint-free greedy inference on the PHI training rows."""
    q = shlex.quote
    rounds, logs = s.rounds, s.out / "logs"
    hydra = [*_grpo_overrides(s, "phi", s.phi_steps, total_steps=s.phi_resume != "checkpoint"),
             "data.custom_cls.path=pkg://llm4icd_plugins.verl.dataset", "data.custom_cls.name=PHIDataset",
             # a short greedy validation closes each round, so the audit sees validation draws (never hinted);
             # the scored hint-free validation of every round runs after the rounds, in one vLLM engine
             "trainer.val_before_train=false", f"trainer.test_freq={s.phi_steps}",
             f"data.val_max_samples={PHI_VAL_CHECK}",
             f"+data.phi_seed={s.rl_seed}", *s.phi_overrides]
    if s.phi_resume == "checkpoint":
        # the previous round's whole checkpoint (adapter, optimizer, step counter, data position), as the paper's
        # release resumes; verl counts steps on, so round t ends at step t × phi_steps
        start = "C={prev_checkpoint}; "
        resume = (' ${{C:+"trainer.resume_mode=resume_path" "trainer.resume_from_path=$C"}}'
                  f' "trainer.total_training_steps=$(({{round}} * {s.phi_steps}))"')
    else:  # the previous round's LoRA adapter only: a fresh optimizer and step counter each round
        start, resume = "A={prev_adapter}; ", ' ${{A:+"actor_rollout_ref.model.lora_adapter_path=$A"}}'
    train = ("export TRAIN_FILE={train_file} CKPT_DIR={ckpt_dir}; " + start
             + f"TENSORBOARD_DIR={q(str(s.out / 'phi' / 'tensorboard'))}/round_{{round}} "
             f"bash {q(str(REPO / 'recipes/tiny/grpo/run_cpu.sh'))} " + " ".join(q(h) for h in hydra)
             + f" +data.phi_audit_file={q(str(rounds))}/round_{{round}}/hint_audit.jsonl" + resume
             + f" >> {q(str(logs))}/phi_round_{{round}}.log 2>&1")
    export = (f"{q(s.python('rl'))} -m verl.model_merger merge --backend fsdp --local_dir {{actor_dir}} "
              "--target_dir {export_dir}")
    infer = " ".join(q(str(c)) for c in _infer_cmd(s, s.models / "sft" / "merged", split="train",
                                                   max_samples=s.max_train_infer or None))
    infer = ('P={predictions}; A={adapter}; if [ -z "$A" ]; then ' + infer + ' --out "$P"; else '
             + infer + ' --lora round="$A" --out "$P.d" --overwrite && mv "$P.d/round.jsonl" "$P" '
             '&& rm -rf "$P.d"; fi')
    return {"train": train, "export": export, "infer": infer}


def _evaluate(s: Settings, log: Path, predictions: Path, out: Path, *, split: str = "test",
              bootstrap: bool = True) -> dict:
    """data_tools.evaluation.evaluate with the ladder's buckets; returns its metrics.json."""
    partial = ["--allow-partial"] if split == "test" and s.max_test else []
    sh([s.python("rl"), "-m", "data_tools.evaluation.evaluate", "--predictions", predictions, "--out", out,
        "--data", s.data, "--split", split, "--code-system", "icd9", "--buckets", BUCKET_EDGES, *partial,
        *([] if bootstrap else ["--bootstrap", 0, "--no-plots"])], log)
    return json.loads((out / "metrics.json").read_text())


def stage_phi(s: Settings, log: Path) -> str:
    """PHI rounds (data_tools.phi.rounds), then the per-round statistics and hint-free validation scores."""
    if not s.phi_rounds:
        return "skipped (--phi-rounds 0)"
    for t in range(1, s.phi_rounds + 1):  # a round not trained yet starts a fresh log (its commands append)
        if not (s.rounds / f"round_{t}" / "TRAINED").exists():
            (s.out / "logs" / f"phi_round_{t}.log").unlink(missing_ok=True)
    train = _phi_train_file(s)
    sh([s.python("rl"), "-m", "data_tools.phi.rounds", "--out", s.rounds, "--train", train,
        "--rounds", s.phi_rounds, *[f"--{kind}-cmd={cmd}" for kind, cmd in phi_commands(s).items()]], log,
       env=_grpo_env(s, "phi"))
    trained = [t for t in range(1, s.phi_rounds + 1) if (s.rounds / f"round_{t}" / "export" / "lora_adapter").is_dir()]
    if not trained:
        raise LadderError(f"data_tools.phi.rounds trained no round (every row mastered?); see {s.rounds}", log)
    final = s.models / "phi" / "lora_adapter"
    shutil.rmtree(final.parent, ignore_errors=True)
    shutil.copytree(s.rounds / f"round_{trained[-1]}" / "export" / "lora_adapter", final)
    # hint-free greedy validation of the SFT model (round 0) and every round's adapter, one engine
    val = s.out / "phi" / "val"
    sh([*_infer_cmd(s, s.models / "sft" / "merged", split="val"), "--include-base", "--out", val, "--overwrite",
        *[a for t in trained for a in ("--lora", f"round_{t}={s.rounds / f'round_{t}' / 'export' / 'lora_adapter'}")]],
       log)
    report = phi_round_report(s, log, trained)
    (s.out / "phi" / "rounds_report.json").write_text(json.dumps(report, indent=1))
    (s.out / "phi" / "rounds_report.md").write_text(rounds_markdown(report))
    leaks = [r["audit"] for r in report
             if r.get("audit") and (r["audit"]["other_draws_hinted"] or r["audit"]["hints_outside_pool"])]
    if leaks:
        raise LadderError(f"PHI hints went where they must not (see {s.rounds}/round_*/hint_audit.jsonl): "
                          f"{leaks}", log)
    first, last = report[0], report[-1]
    return (f"{len(trained)} rounds × {s.phi_steps} steps; val micro-F1 {first['val_micro_f1']:.3f} → "
            f"{last['val_micro_f1']:.3f}, macro-F1 {first['val_macro_f1']:.3f} → {last['val_macro_f1']:.3f} "
            f"(per round: {s.out / 'phi' / 'rounds_report.md'})")


def phi_round_report(s: Settings, log: Path, trained: Sequence[int]) -> list[dict]:
    """Per round: the pools it trained on (rows kept, mastered share, mean pool size), its hinted draws, its
    reward trend and the hint-free validation scores after it; round 0 is the SFT model."""
    val = s.out / "phi" / "val"
    rows = []
    for t in [0, *trained]:
        metrics = _evaluate(s, log, val / ("base.jsonl" if t == 0 else f"round_{t}.jsonl"),
                            s.out / "phi" / "val_eval" / f"round_{t}", split="val", bootstrap=False)
        row = {"round": t, "val_micro_f1": metrics["micro_f1"], "val_macro_f1": metrics["macro_f1"],
               "val_micro_recall": metrics["micro_recall"], "val_bucket_recall": bucket_recall(metrics)}
        if t:
            round_dir = s.rounds / f"round_{t}"
            pools = json.loads((round_dir / "train.summary.json").read_text())
            audit = audit_hints(round_dir / "hint_audit.jsonl", round_dir / "train.parquet")
            curve = reward_curve((s.out / "logs" / f"phi_round_{t}.log").read_text(errors="replace"))
            (round_dir / "reward_curve.json").write_text(json.dumps(curve, indent=1))
            row.update(rows=pools["rows"], rows_kept=pools["rows_with_hints"],
                       mastered_share=pools["mastered_rows"] / max(1, pools["rows"]),
                       mean_pool=pools["pool_size"]["mean_nonempty"], train_micro_recall=pools["train_micro_recall"],
                       hinted_draws=audit["train_draws_hinted"], train_draws=audit["train_draws"], audit=audit,
                       reward_first=curve["trend"]["first_quarter_mean"],
                       reward_last=curve["trend"]["last_quarter_mean"])
        rows.append(row)
    return rows


def stage_phi_eval(s: Settings, log: Path) -> str:
    if not s.phi_rounds:
        return "skipped (--phi-rounds 0)"
    return _infer(s, log, s.models / "sft" / "merged", s.preds / "phi.jsonl", lora=s.models / "phi" / "lora_adapter",
                  max_samples=s.max_test)


STAGES: list[Stage] = [
    Stage("synth", "synthetic MIMIC-III-like raw tables", stage_synth, clean=("raw",),
          knobs=("label_profile", "n_admissions", "n_codes", "seed")),
    Stage("tiny_model", "tiny Qwen2 model + tokenizer trained on the corpus", stage_tiny_model, clean=("models",),
          knobs=("seed", "pretrain_steps")),
    Stage("prepare", "prepare → SFT (ShareGPT) + RL (verl parquet) data, truncated to budget", stage_prepare,
          clean=("data", "candidates"), knobs=("candidates", "candidate_coder")),
    Stage("baseline", "zero-shot prompting baseline with the base model (vLLM CPU)", stage_baseline,
          clean=("predictions/zero_shot.jsonl",), knobs=("max_test",)),
    Stage("sft", "SFT with llamafactory-cli train (loss on the answer only)", stage_sft, clean=("models/sft",),
          knobs=("sft_steps", "sft_lr", "seed")),
    Stage("sft_eval", "hint-free inference of the SFT model on the test split", stage_sft_eval,
          clean=("predictions/sft.jsonl",), knobs=("max_test",)),
    Stage("grpo", "GRPO with verl + vLLM (CPU) and the F1 reward, from the SFT model", stage_grpo,
          clean=("models/grpo",), redo_clean=("grpo",),
          knobs=("grpo_steps", "rollouts", "grpo_batch", "grpo_lr", "rollout_temperature", "seed", "rl_seed")),
    Stage("grpo_eval", "hint-free inference of SFT + the GRPO adapter on the test split", stage_grpo_eval,
          clean=("predictions/grpo.jsonl",), knobs=("max_test",)),
    Stage("phi", "PHI rounds (data_tools.phi.rounds): refresh, hinted GRPO epoch, per-round validation", stage_phi,
          clean=("models/phi", "phi/val", "phi/val_eval"), redo_clean=("phi",),
          knobs=("phi_rounds", "phi_steps", "max_train_infer", "rollouts", "grpo_batch", "grpo_lr",
                 "rollout_temperature", "seed", "rl_seed", "phi_resume", "phi_override")),
    Stage("phi_eval", "hint-free inference of SFT + the last PHI round's adapter on the test split", stage_phi_eval,
          clean=("predictions/phi.jsonl",), knobs=("max_test",)),
]


# --- report -------------------------------------------------------------------------------------------

RUNGS = [("Zero-shot", "zero_shot"), ("SFT", "sft"), ("GRPO", "grpo"), ("PHI", "phi")]
BACKBONE = "tiny-qwen2"
SETTING = "Full"


def stage_report(s: Settings, log: Path) -> str:
    """Evaluate every rung's predictions; the comparison table (data_tools.evaluation.reports) with bootstrap
    intervals and recall per training-frequency bucket (Markdown + CSV), and the reward plot."""
    from data_tools.evaluation.reports import comparison_markdown, comparison_table

    entries = []
    for label, stem in RUNGS:
        pred = s.preds / f"{stem}.jsonl"
        if pred.exists():
            entries.append((label, BACKBONE, SETTING, _evaluate(s, log, pred, s.out / "eval" / stem)))
    table = comparison_table(entries)
    table.to_csv(s.out / "table.csv", index=False)
    buckets = [{"method": label, **b} for label, _, _, metrics in entries for b in metrics.get("buckets", [])]
    import pandas as pd

    pd.DataFrame(buckets).to_csv(s.out / "table_buckets.csv", index=False)
    text = comparison_markdown(table) + "\n" + intervals_markdown(entries)
    (s.out / "table.md").write_text(text)
    plot_reward_curves(s.out / "reward_curves.png", s.out / "grpo" / "reward_curve.json",
                       [s.rounds / f"round_{t}" / "reward_curve.json" for t in range(1, s.phi_rounds + 1)])
    return "test micro-F1 " + ", ".join(f"{label} {100 * m['micro_f1']:.1f}" for label, _, _, m in entries) \
        + f" (table: {s.out / 'table.md'})"


STAGES.append(Stage("report", "evaluate every rung; Table 1 layout with intervals and buckets, plots", stage_report,
                    clean=("eval", "table.md", "table.csv", "table_buckets.csv", "reward_curves.png")))


# --- driver -------------------------------------------------------------------------------------------

def _non_negative(text: str) -> int:
    """argparse type: an integer of at least 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    """argparse type: a number above 0 (a learning rate, a sampling temperature)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bash recipes/quickstart.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "quickstart",
                   help="output folder for everything (default outputs/quickstart); re-runs skip finished stages")
    p.add_argument("--n-admissions", type=int, default=900,
                   help="synthetic corpus size in admissions (default %(default)s; about 70%% land in train)")
    p.add_argument("--label-profile", choices=("default", "longtail"), default="default",
                   help="synthetic label profile (default %(default)s: 60 codes a tiny model learns in minutes; "
                        "longtail: ~600 codes on a Zipf curve with graded evidence, which the tiny model does "
                        "not learn: see docs/experiments.md)")
    p.add_argument("--n-codes", type=_positive, default=None,
                   help="distinct ICD codes in the synthetic corpus (default: 60, or 600 with --label-profile "
                        "longtail; MIMIC-III full has about 8,900)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for the corpus, the model and training (default %(default)s)")
    p.add_argument("--rl-seed", type=int, default=None,
                   help="seed of the GRPO and PHI stages alone (data order, vLLM sampling, PHI's hint draws; default: "
                        "--seed), so that RL runs of several seeds start from one SFT model")
    p.add_argument("--pretrain-steps", type=int, default=200,
                   help="plain language-model steps on the notes before SFT (default %(default)s), standing in for "
                        "the pretrained backbone the paper starts from")
    p.add_argument("--sft-steps", type=_positive, default=800,
                   help="SFT optimizer steps, batch 4 (default %(default)s)")
    p.add_argument("--sft-lr", type=_positive_float, default=1e-3,
                   help="SFT learning rate (default %(default)s: a tiny model needs far more than the paper's 1e-5)")
    p.add_argument("--grpo-steps", type=_positive, default=6, help="GRPO steps (default %(default)s)")
    p.add_argument("--phi-rounds", type=_non_negative, default=3,
                   help="PHI rounds, each a pool refresh and one hinted GRPO epoch (default %(default)s; paper 3 to 5; "
                        "0: the ladder ends with GRPO)")
    p.add_argument("--phi-steps", type=_positive, default=2,
                   help="steps of each PHI round's hinted GRPO epoch (default %(default)s)")
    p.add_argument("--rollouts", type=_positive, default=8,
                   help="GRPO group size G (default %(default)s, as the paper)")
    p.add_argument("--grpo-batch", type=_positive, default=8,
                   help="prompts per GRPO/PHI step (default %(default)s); an even batch is updated in two "
                        "mini-batches of half the prompts")
    p.add_argument("--grpo-lr", type=_positive_float, default=1e-3,
                   help="LoRA learning rate of GRPO/PHI (default %(default)s: a tiny model needs a far larger step "
                        "than a real backbone)")
    p.add_argument("--rollout-temperature", type=_positive_float, default=1.0,
                   help="sampling temperature of GRPO/PHI rollouts (default %(default)s, as the paper; validation "
                        "and evaluation are greedy either way)")
    p.add_argument("--max-test", type=int, default=None,
                   help="evaluate on the first N test samples only (default all)")
    p.add_argument("--max-train-infer", type=int, default=64,
                   help="PHI works on the first N training samples (hint-free inference and pools every round; "
                        "default %(default)s, more than --phi-steps x --grpo-batch draws; 0 = all)")
    p.add_argument("--phi-resume", choices=("adapter", "checkpoint"), default="adapter",
                   help="what PHI round t >= 2 starts from: the previous round's LoRA adapter with a fresh optimizer "
                        "(default) or its whole verl checkpoint (adapter, optimizer state, step counter), as the "
                        "paper's release does")
    p.add_argument("--phi-override", action="append", default=[], metavar="KEY=VALUE",
                   help="a Hydra override added to every PHI round's GRPO command (repeatable), e.g. "
                        "+data.phi_hint_style=neutral or +data.phi_inject_prob=0 for PHI's controls")
    p.add_argument("--candidates", type=_non_negative, default=0, metavar="K",
                   help="list a discriminative coder's top K candidates in every prompt of every split (trained on "
                        "the corpus by data_tools.evaluation.candidates, training notes cross-fitted; default 0: "
                        "none, the paper's prompt)")
    p.add_argument("--candidate-coder", choices=("knn", "linear"), default="linear",
                   help="the coder behind --candidates (default %(default)s)")
    p.add_argument("--from-stage", choices=[st.name for st in STAGES], default=None,
                   help="redo this stage and every later one even if they were finished")
    p.add_argument("--venvs", type=Path, default=Path(os.environ.get("LLM4ICD_VENVS", REPO / ".venvs")),
                   help="folder holding the rl and sft environments (default .venvs, made by env/setup.sh)")
    return p


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(out=args.out.resolve(), n_admissions=args.n_admissions, label_profile=args.label_profile,
                    n_codes=args.n_codes, seed=args.seed,
                    rl_seed=args.seed if args.rl_seed is None else args.rl_seed,
                    pretrain_steps=args.pretrain_steps, sft_steps=args.sft_steps, sft_lr=args.sft_lr,
                    grpo_steps=args.grpo_steps, phi_rounds=args.phi_rounds, phi_steps=args.phi_steps,
                    rollouts=args.rollouts, grpo_batch=args.grpo_batch, grpo_lr=args.grpo_lr,
                    rollout_temperature=args.rollout_temperature,
                    max_test=args.max_test, max_train_infer=args.max_train_infer,
                    phi_resume=args.phi_resume, phi_overrides=tuple(args.phi_override), candidates=args.candidates,
                    candidate_coder=args.candidate_coder, venvs=args.venvs.resolve())


def _newest_log(s: Settings, stage: str, log: Path) -> Path:
    """The stage log, or a sub-log of the stage (PHI rounds) written after it."""
    logs = [p for p in (s.out / "logs").glob(f"{stage}*.log") if p.exists()]
    return max(logs, key=lambda p: p.stat().st_mtime) if logs else log


def run(args: argparse.Namespace) -> None:
    s = _settings(args)
    for env in ("rl", "sft"):
        if not Path(s.python(env)).exists():
            raise LadderSetupError(f"no {env} environment at {s.venvs / env}; run `bash env/setup.sh` first "
                              "(recipes/quickstart.sh does it for you)")
    done_dir = s.out / ".done"
    done_dir.mkdir(parents=True, exist_ok=True)
    names = [st.name for st in STAGES]
    redo_from = names.index(args.from_stage) if args.from_stage else len(names)
    start = time.perf_counter()
    knobs = vars(args)
    warned = False
    tty = sys.stdout.isatty()
    for number, stage in enumerate(STAGES, 1):
        marker = done_dir / f"{stage.name}.json"
        forced = number - 1 >= redo_from
        if forced:
            marker.unlink(missing_ok=True)
        head = f"[{number}/{len(STAGES)}] {stage.name}: {stage.what}"
        if marker.exists():
            done = json.loads(marker.read_text())
            print(f"{head} — done already ({done['seconds']:.0f} s), skipped")
            changed = {k: (v, knobs[k]) for k, v in done.get("settings", {}).items() if knobs.get(k, v) != v}
            if changed and not warned:
                warned = True  # --from-stage redoes every later stage too
                was = ", ".join(f"--{k.replace('_', '-')} {a}" for k, (a, _) in changed.items())
                print(f"    note: it ran with {was}"
                      + f"; it is kept — add --from-stage {stage.name} to redo it and every later stage", flush=True)
            continue
        for rel in (*stage.clean, *(stage.redo_clean if forced else ())):
            target = s.out / rel
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        log = s.out / "logs" / f"{stage.name}.log"
        log.unlink(missing_ok=True)
        t0 = time.perf_counter()
        with Progress(head, log, tty) as progress:
            try:
                summary = stage.run(s, log)
            except LadderError as exc:
                progress.finish(f"✗ failed after {time.perf_counter() - t0:.0f} s")
                failed = _newest_log(s, stage.name, exc.log or log)
                tail = log_tail(failed)
                raise LadderError(f"stage {stage.name}: {exc}\n  full output: {failed}"
                                  + (f"\n  last lines of {failed.name}:\n{tail}" if tail else "")) from None
            seconds = time.perf_counter() - t0
            progress.finish(f"✓ {seconds:.0f} s" + (f" — {summary}" if summary else ""))
        marker.write_text(json.dumps({"seconds": seconds, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                      "summary": summary, "settings": {k: knobs[k] for k in stage.knobs}}))
    total = time.perf_counter() - start
    print(f"\nladder finished in {total / 60:.1f} min (this run); outputs in {s.out}, full logs in {s.out / 'logs'}")
    if (s.out / "table.md").exists():
        print(f"table: {s.out / 'table.md'} (CSV: table.csv, table_buckets.csv); "
              f"per-rung reports under {s.out / 'eval'}")
    rounds_md = s.out / "phi" / "rounds_report.md"
    if rounds_md.exists():
        print(f"PHI per round: {rounds_md}\n\n" + rounds_md.read_text())
    if (s.out / "table.md").exists():
        print((s.out / "table.md").read_text())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except LadderError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR if isinstance(exc, LadderSetupError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
