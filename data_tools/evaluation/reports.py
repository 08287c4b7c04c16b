"""Report pieces for ``data_tools.evaluation.evaluate``: training frequencies, PNG plots, the paper-style comparison
table.

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
from llm4icd_plugins.variant import PreparedVariant

TABLE_COLUMNS = (("micro", "recall", "R"), ("micro", "precision", "P"), ("micro", "f1", "F1"),
                 ("macro", "recall", "R"), ("macro", "precision", "P"), ("macro", "f1", "F1"))
"""Column order of the paper's Tables 1-2 within one label setting: Micro R/P/F1, Macro R/P/F1."""
HIERARCHY_COLUMNS = (("category", "micro_f1", "Cat. Micro F1", True), ("near_miss", "rate", "Near-miss % of FP", False))
"""Columns after them (``evaluate``'s hierarchy view): (level, metric, header, ranked best-first)."""


class ReportError(UserError):
    """Bad report input; the message names the file and the fix (never a value's contents)."""


# --- training frequencies -------------------------------------------------------------------------------

def load_frequencies(path: Path) -> dict[str, int]:
    """Training occurrences per code, from a prepared variant folder (``examples/train.parquet``), a
    parquet/JSONL table with a ``codes`` list column, or a JSON object ``{code: count}``."""
    path = Path(path)
    if path.is_dir():
        path = PreparedVariant(path).examples_path("train")
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
    """PNG of ``f1_vs_frequency_figure``."""
    return _figure_bytes(f1_vs_frequency_figure(per_code, edges, title))


def f1_vs_frequency_figure(per_code: pd.DataFrame, edges: Sequence[int], title: str):
    """Per-code F1 against training frequency (symlog x), bucket edges dashed, bucket means marked; codes
    missed next to a same-category false positive (near misses) ringed. The legend sits below the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    freq = per_code["train_frequency"].to_numpy(dtype=float)
    ax.scatter(freq, per_code["f1"], s=10, alpha=0.45, color="tab:blue", edgecolors="none", label="code")
    if "near_miss_fn" in per_code:
        near = per_code["near_miss_fn"].to_numpy() > 0
        ax.scatter(freq[near], per_code["f1"].to_numpy()[near], s=28, facecolors="none", edgecolors="tab:orange",
                   linewidths=0.7, alpha=0.7, label="code missed with its category predicted (near miss)")
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
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
    return fig


def plot_buckets(buckets: pd.DataFrame, title: str) -> bytes:
    """PNG of ``buckets_figure``."""
    return _figure_bytes(buckets_figure(buckets, title))


def buckets_figure(buckets: pd.DataFrame, title: str):
    """Micro- and macro-F1 per frequency bucket, and (when given) the share of missed gold codes that were
    near misses; grouped bars annotated with the number of codes, the legend below the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    x = np.arange(len(buckets))
    bars = [("micro_f1", "micro-F1", "tab:blue"), ("macro_f1", "macro-F1", "tab:orange"),
            ("fn_near_miss_rate", "missed codes with the category predicted (near misses, % of misses)", "tab:grey")]
    bars = [b for b in bars if b[0] in buckets]
    width = 0.8 / len(bars)
    heights = [buckets[key].fillna(0).to_numpy() * 100 for key, _, _ in bars]
    for i, ((_, label, color), height) in enumerate(zip(bars, heights)):
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, height, width, label=label, color=color)
    top = np.max(heights, axis=0)
    for i, n in enumerate(buckets["n_codes"]):
        ax.annotate(f"{n} codes", (x[i], top[i] + 1.5), ha="center", fontsize=8)
    ax.set_xticks(x, [f"{b}" for b in buckets["bucket"]])
    ax.set_xlabel("training frequency bucket")
    ax.set_ylabel("%")
    ax.set_ylim(0, 110)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
    return fig


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
    carry them, become ``..._ci_low``/``..._ci_high`` columns. Then, per setting, ``HIERARCHY_COLUMNS``
    (category micro-F1, near-miss share of false positives; NaN for a metrics.json written before them).
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
        for level, metric, _, _ in HIERARCHY_COLUMNS:
            value = metrics.get(f"{level}_{metric}")
            row[f"{setting}/{level}/{metric}"] = np.nan if value is None else 100 * float(value)
    frame = pd.DataFrame(list(rows.values()))
    columns = ["method", "backbone"]
    for setting in settings:
        for level, metric, _ in TABLE_COLUMNS:
            column = f"{setting}/{level}/{metric}"
            columns += [c for c in (column, f"{column}_ci_low", f"{column}_ci_high") if c in frame.columns]
        columns += [f"{setting}/{level}/{metric}" for level, metric, _, _ in HIERARCHY_COLUMNS]
    return frame.reindex(columns=columns)


def comparison_markdown(table: pd.DataFrame) -> str:
    """The table as Markdown in the paper's layout: best per column in bold, second best underlined."""
    settings = list(dict.fromkeys(c.split("/")[0] for c in table.columns if c.count("/") == 2 and "_ci_" not in c))
    value_cols, header, ranked = [], ["Method", "Backbone"], set()
    for s in settings:
        paper = [f"{s}/{lv}/{m}" for lv, m, _ in TABLE_COLUMNS]
        value_cols += paper
        header += [f"{s} {lv.capitalize()} {short}" for lv, _, short in TABLE_COLUMNS]
        ranked.update(paper)
        extras = [(f"{s}/{lv}/{m}", f"{s} {name}", rank) for lv, m, name, rank in HIERARCHY_COLUMNS
                  if f"{s}/{lv}/{m}" in table]
        value_cols += [col for col, _, _ in extras]
        header += [name for _, name, _ in extras]
        ranked.update(col for col, _, rank in extras if rank)
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
            best = ranks[col] if col in ranked else []
            if len(table) > 1 and best and round(value, 1) == best[0]:
                text = f"**{text}**"
            elif len(table) > 2 and len(best) > 1 and round(value, 1) == best[1]:
                text = f"<u>{text}</u>"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    note = ("All values are percentages; Micro/Macro Recall (R), Precision (P) and F1 (macro = mean of per-code "
            "values, Edin et al.); Cat. Micro F1: micro-F1 of the 3-character categories; Near-miss: false "
            "positives whose category is that of a missed gold code of the note (right category, wrong leaf). "
            "**Bold** and underline: best and second-best in each column (not for the near-miss share).")
    return "\n".join(lines) + "\n\n" + note + "\n"
