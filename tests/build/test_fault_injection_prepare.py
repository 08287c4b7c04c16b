"""prepare killed at random points (SIGKILL, seeded) and interrupted between its final renames: the previous
variants stay intact or the new ones are complete, never a new Full beside an old Top-50; the next run removes
what the killed one left and completes to the same bytes as an uninterrupted run."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_tools.build import prepare, staging
from data_tools.build.synth import generate_mimic3

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ("mimic3_full", "mimic3_top50")
OLD_ARGS = ("--min-code-count", "3")  # the previous output differs from the new one
KILLS = 6


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _command(root: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "data_tools.build.prepare", "mimic3", "--root", str(root), "--out", str(out),
            "--overwrite", *extra]


def _run(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("fault")
    root = generate_mimic3(base / "raw", n_admissions=150, seed=4)["root"]
    refs = {}
    for kind, extra in (("old", OLD_ARGS), ("new", ())):
        seconds = _run(_command(root, base / kind, *extra))
        refs[kind] = {v: _tree(base / kind / v) for v in VARIANTS}
    assert refs["old"] != refs["new"]
    return {"root": root, "base": base, "refs": refs, "seconds": seconds}


def _reset(setup, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(setup["base"] / "old", out)


def _state(setup, out: Path) -> dict[str, str]:
    """Which reference each visible variant equals: old, new, missing; anything else fails."""
    state = {}
    for variant in VARIANTS:
        if not (out / variant).exists():
            state[variant] = "missing"
            continue
        tree = _tree(out / variant)
        matches = [kind for kind in ("old", "new") if tree == setup["refs"][kind][variant]]
        assert matches, f"{variant} is neither the previous nor the new output"
        state[variant] = matches[0]
    return state


def _check_after_interruption(setup, out: Path) -> None:
    state = _state(setup, out)
    visible = {s for s in state.values() if s != "missing"}
    assert len(visible) <= 1, f"a mixed pair: {state}"
    if "missing" in state.values():  # only while a complete new pair waits in a marked staging folder
        staged = [p for p in out.parent.glob(f".{out.name}.tmp-*") if (p / staging.COMMIT_MARK).is_file()]
        assert staged, f"a variant vanished: {state}"


def _check_next_run(setup, out: Path) -> None:
    _run(_command(setup["root"], out))
    assert _state(setup, out) == {v: "new" for v in VARIANTS}
    assert not list(out.parent.glob(f".{out.name}.tmp-*")), "a temporary folder outlived the next run"


def test_sigkill_at_random_points(setup):
    out = setup["base"] / "work" / "out"
    rng = random.Random(20261130)
    outcomes, left_behind = [], 0
    for kill in range(KILLS):
        _reset(setup, out)
        proc = subprocess.Popen(_command(setup["root"], out), cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        if kill % 2:  # at a random moment of the whole run
            time.sleep(rng.uniform(0.3, 1.1) * setup["seconds"])
        else:  # while the variants are being written
            deadline = time.monotonic() + 3 * setup["seconds"]
            while not list(out.parent.glob(f".{out.name}.tmp-*")) and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.1))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        left_behind += bool(list(out.parent.glob(f".{out.name}.tmp-*")))
        _check_after_interruption(setup, out)
        outcomes.append(tuple(sorted(set(_state(setup, out).values()))))
        _check_next_run(setup, out)
    assert ("old",) in outcomes  # some kills landed before the output was replaced
    assert left_behind  # and some left a temporary folder for the next run to remove


class _Killed(BaseException):
    """Stands for a kill: nothing of prepare's own handles it."""


@pytest.mark.parametrize("at", range(1, 6))
def test_interrupted_between_renames(setup, monkeypatch, at):
    """Every rename of the publishing step interrupted in turn (the marker, then each variant)."""
    out = setup["base"] / f"work_{at}" / "out"
    _reset(setup, out)
    real, calls = os.replace, []

    def replace(src, dst):
        if Path(dst).name != "label_space.json":  # written inside the staged variants
            calls.append(dst)
        if len(calls) == at:
            raise _Killed
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_Killed):
        prepare.main(["mimic3", "--root", str(setup["root"]), "--out", str(out), "--overwrite"])
    monkeypatch.setattr(os, "replace", real)
    _check_after_interruption(setup, out)
    assert prepare.main(["mimic3", "--root", str(setup["root"]), "--out", str(out)]) == 2  # exists: refused
    state = _state(setup, out)
    assert set(state.values()) in ({"old"}, {"new"}), state  # the next start completed or undid it
    _check_next_run(setup, out)
