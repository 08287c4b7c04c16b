"""Report pieces for ``data_tools.evaluate``: training frequencies, PNG plots and the paper-style comparison table.

Pure functions over metric dicts and per-code tables; plotting uses matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llm4icd_plugins.errors import UserError

TABLE_COLUMNS = (("micro", "recall", "R"), ("micro", "precision", "P"), ("micro", "f1", "F1"),
                 ("macro", "recall", "R"), ("macro", "precision", "P"), ("macro", "f1", "F1"))
"""Column order of the paper's Tables 1-2 within one label setting: Micro R/P/F1, Macro R/P/F1."""


class ReportError(UserError):
    """Bad report input; the message names the file and the fix (never a value's contents)."""


# --- training frequencies -------------------------------------------------------------------------------

def load_frequencies(path: Path) -> dict[str, int]:
    """Training occurrences per code, from a prepared variant folder (``examples/train.parquet``), a
    parquet/JSONL table with a ``codes`` list column, or a JSON object ``{code: count}``."""
    path = Path(path)
    if path.is_dir():
        path = path / "examples" / "train.parquet"
    if not path.is_file():
        raise ReportError(f"{path}: no such file. Fix: pass a prepared variant folder, its examples/train.parquet, "
                          "or a JSON object {code: training count}")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return {str(k): int(v) for k, v in data.items()}
        frame = pd.read_parquet(path, columns=["codes"]) if path.suffix == ".parquet" else \
            pd.read_json(path, lines=True, dtype=False)
        return dict(Counter(str(c) for codes in frame["codes"] for c in set(codes)))
    except (ValueError, KeyError, TypeError, OSError, RecursionError, ImportError) as exc:
        # The exception's own text may quote a cell (int('<text>')): only its type is reported.
        raise ReportError(f"{path}: cannot read training frequencies ({type(exc).__name__}). Fix: give a "
                          "table with a 'codes' list column or a JSON object {code: count}") from None


# --- plots ------------------------------------------------------------------------------------------------

def _figure_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def plot_f1_vs_frequency(per_code: pd.DataFrame, edges: Sequence[int], title: str) -> bytes:
    """PNG: per-code F1 against training frequency (symlog x), bucket edges dashed, bucket means marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    freq = per_code["train_frequency"].to_numpy(dtype=float)
    ax.scatter(freq, per_code["f1"], s=10, alpha=0.45, color="tab:blue", edgecolors="none", label="code")
    for edge in edges:
        ax.axvline(edge, color="grey", linestyle="--", linewidth=0.8)
    means = per_code.groupby("bucket", sort=False).agg(f=("f1", "mean"), x=("train_frequency", "median"))
    ax.scatter(means["x"], means["f"], marker="D", s=40, color="tab:red", label="bucket macro-F1 (at median frequency)")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("training frequency (documents)")
    ax.set_ylabel("per-code F1")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    return _figure_bytes(fig)


def plot_buckets(buckets: pd.DataFrame, title: str) -> bytes:
    """PNG: micro- and macro-F1 per frequency bucket, grouped bars annotated with the number of codes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    x = np.arange(len(buckets))
    width = 0.38
    micro = buckets["micro_f1"].fillna(0).to_numpy() * 100
    macro = buckets["macro_f1"].fillna(0).to_numpy() * 100
    ax.bar(x - width / 2, micro, width, label="micro-F1", color="tab:blue")
    ax.bar(x + width / 2, macro, width, label="macro-F1", color="tab:orange")
    for i, n in enumerate(buckets["n_codes"]):
        ax.annotate(f"{n} codes", (x[i], max(micro[i], macro[i]) + 1.5), ha="center", fontsize=8)
    ax.set_xticks(x, [f"{b}" for b in buckets["bucket"]])
    ax.set_xlabel("training frequency bucket")
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(0, 110)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _figure_bytes(fig)


# --- comparison table (paper Tables 1-2) ----------------------------------------------------------------

def parse_entry(spec: str) -> tuple[str, str, str, Path]:
    """``METHOD[:BACKBONE[:SETTING]]=PATH`` → (method, backbone, setting, path)."""
    label, sep, path = spec.partition("=")
    parts = [p.strip() for p in label.split(":")]
    if not sep or not path or not parts[0] or len(parts) > 3:
        raise ReportError(f"--compare {spec!r}: expected METHOD[:BACKBONE[:SETTING]]=PATH, e.g. "
                          "'SFT:Qwen3-4B:Top-50=eval/sft_top50'")
    parts += [""] * (3 - len(parts))
    return parts[0], parts[1], parts[2] or "results", Path(path)


def comparison_table(entries: Sequence[tuple[str, str, str, dict[str, Any]]]) -> pd.DataFrame:
    """Wide table: one row per (method, backbone), per setting Micro R/P/F1 and Macro R/P/F1 in percent.

    ``entries`` are (method, backbone, setting, metrics dict); bootstrap intervals, when the metrics
    carry them, become ``..._ci_low``/``..._ci_high`` columns.
    """
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    settings: list[str] = []
    for method, backbone, setting, metrics in entries:
        if setting not in settings:
            settings.append(setting)
        row = rows.setdefault((method, backbone), {"method": method, "backbone": backbone})
        for level, metric, _ in TABLE_COLUMNS:
            key = f"{level}_{metric}"
            column = f"{setting}/{level}/{metric}"
            if column in row:
                raise ReportError(f"two entries for {method} {backbone} {setting}: give each row/setting once")
            row[column] = 100 * float(metrics[key])
            ci = (metrics.get("ci") or {}).get(key)
            if ci is not None:
                row[f"{column}_ci_low"], row[f"{column}_ci_high"] = 100 * ci[0], 100 * ci[1]
    frame = pd.DataFrame(list(rows.values()))
    columns = ["method", "backbone"]
    for setting in settings:
        for level, metric, _ in TABLE_COLUMNS:
            column = f"{setting}/{level}/{metric}"
            columns += [c for c in (column, f"{column}_ci_low", f"{column}_ci_high") if c in frame.columns]
    return frame.reindex(columns=columns)


def comparison_markdown(table: pd.DataFrame) -> str:
    """The table as Markdown in the paper's layout: best per column in bold, second best underlined."""
    settings = list(dict.fromkeys(c.split("/")[0] for c in table.columns if c.count("/") == 2 and "_ci_" not in c))
    value_cols = [f"{s}/{lv}/{m}" for s in settings for lv, m, _ in TABLE_COLUMNS]
    header = ["Method", "Backbone"] + [f"{s} {lv.capitalize()} {short}" for s in settings for lv, _, short in
                                       TABLE_COLUMNS]
    ranks = {}
    for col in value_cols:
        distinct = sorted({round(v, 1) for v in table[col].dropna()}, reverse=True)
        ranks[col] = distinct[:2]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * len(value_cols)]
    for _, row in table.iterrows():
        cells = [str(row["method"]), str(row["backbone"])]
        for col in value_cols:
            value = row[col]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("–")
                continue
            text = f"{value:.1f}"
            best = ranks[col]
            if len(table) > 1 and round(value, 1) == best[0]:
                text = f"**{text}**"
            elif len(table) > 2 and len(best) > 1 and round(value, 1) == best[1]:
                text = f"<u>{text}</u>"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    note = ("All values are percentages; Micro/Macro Recall (R), Precision (P) and F1 (macro = mean of per-code "
            "values, Edin et al.). **Bold** and underline: best and second-best in each column.")
    return "\n".join(lines) + "\n\n" + note + "\n"
