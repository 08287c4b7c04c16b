"""The ladder's report pieces: GRPO/PHI reward curves from verl's logs, recall per training-frequency bucket, the
PHI per-round and interval tables, the hint audit and the reward plot. No framework import; no note text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def reward_curve(text: str) -> dict:
    """GRPO's logged mean reward per step (critic/score/mean), its trend, and verl's greedy validation.

    The trend is the first-quarter vs last-quarter mean and the least-squares slope per step; the greedy
    validation that verl logs before the first and after the last step is the hint-free check."""
    import numpy as np

    from data_tools.ladder.verl_logs import parse_step_metrics

    steps = parse_step_metrics(text)
    curve = {step: m["critic/score/mean"] for step, m in sorted(steps.items()) if "critic/score/mean" in m}
    val = {step: {k.rsplit("/", 2)[-2]: v for k, v in m.items() if k.startswith("val-aux/") and k.endswith("/mean@1")}
           for step, m in sorted(steps.items()) if any(k.startswith("val-aux/") for k in m)}
    values = np.array(list(curve.values()), dtype=float)
    quarter = max(1, len(values) // 4)
    trend = {"first_quarter_mean": float(values[:quarter].mean()) if len(values) else None,
             "last_quarter_mean": float(values[-quarter:].mean()) if len(values) else None,
             "slope_per_step": float(np.polyfit(list(curve), values, 1)[0]) if len(values) > 1 else None}
    return {"train_reward_mean": curve, "trend": trend, "validation": val}


def curve_summary(curve: dict) -> str:
    """One line: steps, reward first → last quarter (slope), greedy validation F1 first → last."""
    trend, parts = curve["trend"], [f"{len(curve['train_reward_mean'])} steps"]
    if trend["first_quarter_mean"] is not None:
        parts.append(f"reward {trend['first_quarter_mean']:.3f} → {trend['last_quarter_mean']:.3f}"
                     + (f" ({trend['slope_per_step']:+.4f}/step)" if trend["slope_per_step"] is not None else ""))
    f1 = {int(step): v["f1"] for step, v in curve["validation"].items() if "f1" in v}
    if len(f1) > 1:
        parts.append(f"greedy val F1 {f1[min(f1)]:.3f} → {f1[max(f1)]:.3f}")
    elif f1:
        parts.append(f"greedy val F1 {next(iter(f1.values())):.3f}")
    return ", ".join(parts)


def save_reward_curve(log: Path, out: Path) -> dict:
    """``reward_curve`` of a stage log, saved as JSON; its one-line summary is printed by the caller."""
    curve = reward_curve(log.read_text(encoding="utf-8", errors="replace"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(curve, indent=1))
    return curve


def bucket_recall(metrics: dict) -> dict[str, float | None]:
    """Micro recall per training-frequency bucket from evaluate's metrics.json (None for an empty bucket)."""
    return {b["bucket"]: (None if b["micro_recall"] is None or b["n_codes"] == 0 else float(b["micro_recall"]))
            for b in metrics.get("buckets", [])}


def rounds_markdown(report: Sequence[dict]) -> str:
    """The per-round table (round 0 = the SFT model, validation only)."""
    buckets = list(report[0]["val_bucket_recall"])

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"

    head = ["round", "rows kept", "mastered", "mean pool", "hinted draws", "reward", "val micro-F1", "val macro-F1",
            *[f"val recall {b}" for b in buckets]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in report:
        pools = (["–"] * 5 if not r["round"] else
                 [f"{r['rows_kept']}/{r['rows']}", f"{100 * r['mastered_share']:.0f}%", f"{r['mean_pool']:.2f}",
                  f"{r['hinted_draws']}/{r['train_draws']}",
                  "–" if r["reward_first"] is None else f"{r['reward_first']:.3f} → {r['reward_last']:.3f}"])
        lines.append("| " + " | ".join([str(r["round"]), *pools, pct(r["val_micro_f1"]), pct(r["val_macro_f1"]),
                                          *[pct(r["val_bucket_recall"].get(b)) for b in buckets]]) + " |")
    return "\n".join(lines) + "\n"


def audit_hints(audit: Path, round_file: Path) -> dict:
    """Check the PHI dataset's draw log: hints only in training prompts, and only codes from the row's pool."""
    import pandas as pd

    frame = pd.read_parquet(round_file, columns=["extra_info", "phi"])
    pools = {str(e["sample_id"]): set(p["pool"]) for e, p in zip(frame["extra_info"], frame["phi"])}
    counts = dict.fromkeys(("train_draws", "train_draws_hinted", "other_draws", "other_draws_hinted",
                            "hints", "hints_outside_pool"), 0)
    for line in audit.read_text().splitlines() if audit.exists() else ():
        draw = json.loads(line)
        kind = "train" if draw["split"] == "train" else "other"
        counts[f"{kind}_draws"] += 1
        counts[f"{kind}_draws_hinted"] += bool(draw["hints"])
        counts["hints"] += len(draw["hints"])
        counts["hints_outside_pool"] += sum(c not in pools.get(draw["sample_id"], ()) for c in draw["hints"])
    return counts


def intervals_markdown(entries: Sequence[tuple[str, str, str, dict]]) -> str:
    """Micro/macro F1 with their bootstrap intervals, and micro recall per training-frequency bucket."""
    buckets = list(dict.fromkeys(b["bucket"] for *_, m in entries for b in m.get("buckets", [])))
    head = ["Method", "Micro F1 [95% CI]", "Macro F1 [95% CI]", *[f"Recall {b}" for b in buckets]]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, _, _, m in entries:
        cells = [label]
        for key in ("micro_f1", "macro_f1"):
            ci = (m.get("ci") or {}).get(key)
            cells.append(f"{100 * m[key]:.1f}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""))
        recall = bucket_recall(m)
        cells += ["–" if recall.get(b) is None else f"{100 * recall[b]:.1f}" for b in buckets]
        lines.append("| " + " | ".join(cells) + " |")
    n_codes = {b["bucket"]: b["n_codes"] for *_, m in entries[:1] for b in m.get("buckets", [])}
    note = ", ".join(f"{b}: {n} codes" for b, n in n_codes.items())
    return "\n".join(lines) + (f"\n\nTraining-frequency buckets ({note}).\n" if note else "\n")


def plot_reward_curves(png: Path, grpo: Path, phi_rounds: Sequence[Path]) -> None:
    """GRPO's and the PHI rounds' mean training reward per step (PHI rounds one after another), one PNG;
    ``grpo`` and ``phi_rounds`` are reward_curve.json files (a missing one is left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if grpo.exists():
        curve = json.loads(grpo.read_text())["train_reward_mean"]
        ax.plot([int(k) for k in curve], list(curve.values()), marker="o", label="GRPO")
    offset = 0
    for t, path in enumerate(phi_rounds, 1):
        if path.exists():
            curve = json.loads(path.read_text())["train_reward_mean"]
            ax.plot([offset + int(k) for k in curve], list(curve.values()), marker="s", label=f"PHI round {t}")
            offset += len(curve)
    ax.set_xlabel("training step")
    ax.set_ylabel("mean sample-level F1 reward")
    ax.set_title("GRPO / PHI reward on the synthetic corpus (tiny model, CPU)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
