"""Shared by the launcher tests: run a recipe wrapper with none of the caller's launcher variables, and lay out the
prepared files the launcher reads (empty parquet stand-ins; the launcher checks they exist, verl never reads them).
Tests import it as `from launcher_env import ...` (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLEARED = ("TRAIN_FILE", "VAL_FILE", "MODEL_PATH", "CKPT_DIR", "OUTPUT_DIR", "MAX_RESPONSE_LENGTH", "TENSORBOARD_DIR",
           "ADAPTER_DIR", "EXPORT_DIR", "PHI_RUN_DIR", "PHI_RESUME", "RESUME_FROM", "LORA_ADAPTER_PATH", "NNODES",
           "CANDIDATES", "CANDIDATES_TOP_K")
"""The launcher's variables a developer's shell may hold; every test starts without them."""


def run_wrapper(args, env_extra: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``bash <args>`` with the caller's launcher variables removed and ``env_extra`` added."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LLM4ICD_", "BACKBONE", "PROFILE")) and k not in CLEARED}
    env.update(env_extra or {})
    return subprocess.run(["bash", *map(str, args)], env=env, capture_output=True, text=True, timeout=120, cwd=cwd)


def fake_prepared(data: Path, stats: dict | None = None) -> Path:
    """A prepared variant's files as far as the launcher reads them: verl/{train,val}.parquet, dataset_info.json
    and stats.json (the longest answer, plus whatever ``stats`` adds)."""
    (data / "verl").mkdir(parents=True)
    for split in ("train", "val"):
        (data / "verl" / f"{split}.parquet").write_bytes(b"")
    (data / "dataset_info.json").write_text("{}")
    (data / "stats.json").write_text(json.dumps({"tokens": {"answer_tokens": {"max": 300}}, **(stats or {})}))
    return data
