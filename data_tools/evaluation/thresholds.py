"""Discriminative coders (e.g. PLM-ICD) in the same tables: tune one global threshold on validation, apply it to test.

Exactly as Edin et al. (2023): a grid of 100 evenly spaced thresholds in [0, 1] (``linspace(0, 1, 100)``),
a code is predicted when its probability is strictly greater than the threshold, micro-F1 is pooled over
all (document, code) cells of the probability matrix, and the first (lowest) best threshold wins. No
per-code thresholds. The test predictions are then scored by ``data_tools.evaluation.evaluate`` like any generative run.
``threshold.json`` also holds micro precision, recall and F1 at every grid point on both splits (over the matrix
columns), and ``pr_curve.png`` draws them: the precision–recall trade the one threshold makes.

    python -m data_tools.evaluation.thresholds --val plm_val.npz --test plm_test.npz --data data/prepared/mimic3_full \
        --out eval/plm_icd_full

Probability matrices: ``.npz`` with ``probs`` (documents × codes), ``ids`` and ``codes`` (and optionally
0/1 ``targets``), or a wide ``.parquet`` with an ``id`` column and one probability column per code.
Gold codes come from ``targets``, from ``--data`` (``examples/<split>.parquet``) or ``--val-gold/--test-gold``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_tools.cli import exit_with, run_tool
from llm4icd_plugins import atomic
from llm4icd_plugins.errors import UserError, user_error

GRID_POINTS = 100


class ThresholdError(UserError):
    """Bad input; the message names the file and the fix (never a value's contents)."""


@dataclass
class ProbMatrix:
    """Per-code probabilities of one split: ``probs[i, j]`` for document ``ids[i]`` and code ``codes[j]``."""

    ids: list[str]
    codes: list[str]
    probs: np.ndarray
    targets: np.ndarray | None = None


def _fail(path, problem: str, fix: str, row: int | None = None) -> ThresholdError:
    return user_error(path, problem, fix, row=row, cls=ThresholdError)


def load_matrix(path: Path) -> ProbMatrix:
    """Read a probability matrix from ``.npz`` (probs, ids, codes[, targets]) or a wide ``.parquet``."""
    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file", "pass the probability matrix written by the discriminative model")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in ("probs", "ids", "codes") if k not in data.files]
                if missing:
                    raise _fail(path, f"missing array(s) {', '.join(missing)} (has {', '.join(data.files)})",
                                "save probs (documents × codes), ids (documents) and codes (columns) with np.savez")
                matrix = ProbMatrix([str(i) for i in data["ids"]], [str(c) for c in data["codes"]],
                                    np.asarray(data["probs"]), np.asarray(data["targets"]) if "targets" in data.files
                                    else None)
        elif path.suffix == ".parquet":
            import pandas as pd

            frame = pd.read_parquet(path)
            if "id" not in frame.columns:
                raise _fail(path, "no 'id' column", "write one row per document: id, then one column per code")
            codes = [str(c) for c in frame.columns if c != "id"]
            matrix = ProbMatrix([str(i) for i in frame["id"]], codes,
                                frame.drop(columns="id").to_numpy(dtype=np.float64))
        else:
            raise _fail(path, f"unsupported file type {path.suffix!r}", "use .npz or .parquet")
    except ThresholdError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy/pyarrow raise many types for unreadable files
        # Only the type: the text may quote a cell ("could not convert string to float: '<note>'").
        raise _fail(path, f"cannot read the matrix ({type(exc).__name__})",
                    "check that the file is complete, of the documented layout, with float probabilities") from None
    _check(matrix, path)
    return matrix


def _check(m: ProbMatrix, path) -> None:
    if m.probs.ndim != 2 or m.probs.shape != (len(m.ids), len(m.codes)):
        raise _fail(path, f"probs has shape {m.probs.shape} but there are {len(m.ids)} ids and {len(m.codes)} codes",
                    "give one row per id and one column per code")
    if not np.issubdtype(m.probs.dtype, np.floating) or not np.isfinite(m.probs).all():
        raise _fail(path, "probs holds non-finite or non-float values", "store sigmoid probabilities as floats")
    if m.probs.size and (m.probs.min() < 0 or m.probs.max() > 1):
        raise _fail(path, f"probs range [{m.probs.min():.3g}, {m.probs.max():.3g}] is outside [0, 1]",
                    "apply the sigmoid to the logits before saving")
    if len(set(m.ids)) != len(m.ids) or len(set(m.codes)) != len(m.codes):
        raise _fail(path, "duplicate ids or codes", "list every document and every code once")
    if m.targets is not None and m.targets.shape != m.probs.shape:
        raise _fail(path, f"targets has shape {m.targets.shape}, probs {m.probs.shape}", "give targets the same shape")


def target_matrix(m: ProbMatrix, gold: dict[str, list[str]], path) -> tuple[np.ndarray, int]:
    """0/1 targets aligned with ``m`` from gold code lists, and the number of gold codes outside its columns."""
    column = {c: j for j, c in enumerate(m.codes)}
    targets = np.zeros(m.probs.shape, dtype=bool)
    outside = 0
    for i, doc in enumerate(m.ids):
        if doc not in gold:
            raise _fail(path, f"the document of matrix row {i + 1} has no gold codes", "pass the gold of the same "
                        "split (--data or --val-gold/--test-gold)")
        for code in gold[doc]:
            j = column.get(code)
            if j is None:
                outside += 1
            else:
                targets[i, j] = True
    return targets, outside


def threshold_curve(probs: np.ndarray, targets: np.ndarray, n_points: int = GRID_POINTS,
                    chunk_rows: int = 4096) -> dict[str, np.ndarray]:
    """Micro counts and scores at every grid threshold: ``threshold``, ``tp``, ``fp``, ``fn``, ``precision``,
    ``recall``, ``f1`` (arrays of ``n_points``).

    A cell is predicted when ``prob > threshold``; micro-F1 = tp / (tp + ½(fp + fn)); a ratio whose denominator
    is 0 is 0 (as in ``llm4icd_plugins.metrics``). Counting uses sorted values, so it is exact and linear in the
    matrix size.
    """
    grid = np.linspace(0.0, 1.0, n_points)
    n_pred = np.zeros(n_points, dtype=np.int64)
    tp = np.zeros(n_points, dtype=np.int64)
    n_pos = 0
    for lo in range(0, probs.shape[0], chunk_rows):
        p = np.asarray(probs[lo: lo + chunk_rows], dtype=np.float64).ravel()
        y = np.asarray(targets[lo: lo + chunk_rows], dtype=bool).ravel()
        everything, positives = np.sort(p), np.sort(p[y])
        n_pred += len(everything) - np.searchsorted(everything, grid, side="right")  # count of p > t
        tp += len(positives) - np.searchsorted(positives, grid, side="right")
        n_pos += len(positives)
    fp, fn = n_pred - tp, n_pos - tp

    def ratio(num, den):
        return np.divide(num, den, out=np.zeros(n_points), where=den > 0)

    return {"threshold": grid, "tp": tp, "fp": fp, "fn": fn, "precision": ratio(tp, tp + fp),
            "recall": ratio(tp, tp + fn), "f1": ratio(tp, tp + 0.5 * (fp + fn))}


def tune_threshold(probs: np.ndarray, targets: np.ndarray, n_points: int = GRID_POINTS,
                   chunk_rows: int = 4096) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Edin's single-threshold tuning: (best threshold, its micro-F1, grid, micro-F1 per grid point).

    The first maximum of ``threshold_curve``'s micro-F1 wins.
    """
    curve = threshold_curve(probs, targets, n_points, chunk_rows)
    grid, f1 = curve["threshold"], curve["f1"]
    best = int(np.argmax(f1))
    return float(grid[best]), float(f1[best]), grid, f1


def curve_json(curve: dict[str, np.ndarray]) -> dict[str, list]:
    """``threshold_curve``'s arrays as JSON lists (scores rounded to 6 digits, counts exact)."""
    return {k: [int(x) for x in v] if k in ("tp", "fp", "fn") else [round(float(x), 6) for x in v]
            for k, v in curve.items()}


def pr_curve_png(curves: dict[str, dict[str, np.ndarray]], threshold: float | dict[str, float], title: str) -> bytes:
    """Micro precision against recall over the threshold grid, one line per curve (``threshold_curve``'s arrays),
    the tuned threshold ringed (one for all, or one per curve); grid points that predict nothing are left out.
    The legend sits below the axes, off the data."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, curve in curves.items():
        chosen = threshold[name] if isinstance(threshold, dict) else threshold
        shown = (curve["tp"] + curve["fp"]) > 0
        label = name if not isinstance(threshold, dict) else f"{name} (threshold {chosen:.3f})"
        line, = ax.plot(curve["recall"][shown], curve["precision"][shown], marker=".", markersize=3, label=label)
        k = int(np.argmin(np.abs(curve["threshold"] - chosen)))
        if shown[k]:
            ax.plot(curve["recall"][k], curve["precision"][k], "o", markersize=8, markerfacecolor="none",
                    color=line.get_color())
    # axes fitted to the points (a weak coder's curve would be a dot at the origin of a unit square)
    top = {k: max([float(c[k][(c["tp"] + c["fp"]) > 0].max(initial=0.0)) for c in curves.values()] or [1.0])
           for k in ("recall", "precision")}
    ax.set_xlim(0, min(1.02, max(0.05, 1.1 * top["recall"])))
    ax.set_ylim(0, min(1.02, max(0.05, 1.1 * top["precision"])))
    ax.set_xlabel("micro recall")
    ax.set_ylabel("micro precision")
    ringed = "the tuned thresholds" if isinstance(threshold, dict) else f"the tuned threshold {threshold:.3f}"
    ax.set_title(f"{title}\nringed: {ringed}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=min(max(len(curves), 1), 2), fontsize=8,
              frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def predict(m: ProbMatrix, threshold: float) -> list[list[str]]:
    """Codes with probability strictly above ``threshold``, per document, most probable first."""
    out = []
    for row in m.probs:
        chosen = np.flatnonzero(row > threshold)
        chosen = chosen[np.argsort(-row[chosen], kind="stable")]
        out.append([m.codes[j] for j in chosen])
    return out


def _gold_from(path: Path, split: str) -> dict[str, list[str]]:
    """Gold codes by id from a prepared variant folder, a parquet or a JSONL with id and codes (or gold)."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():  # a prepared variant (llm4icd_plugins.variant reads and checks its examples)
        from llm4icd_plugins.variant import PreparedVariant

        examples = PreparedVariant(path, error=ThresholdError).examples(split)
        return dict(zip(examples.ids, examples.codes))
    if not path.is_file():
        raise _fail(path, "no such gold file", f"pass a prepared variant folder (examples/{split}.parquet) or a "
                    "table with id and codes")
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=True, dtype=False)
    except (ValueError, OSError, RecursionError) as exc:  # only the type: the text may quote a cell
        raise _fail(path, f"cannot read the gold table ({type(exc).__name__})",
                    "give a parquet or JSONL table with id and codes (a list of codes per row)") from None
    column = "codes" if "codes" in frame.columns else "gold"
    if "id" not in frame.columns or column not in frame.columns:
        raise _fail(path, "no id and codes columns", "give a table with id and codes (a list of codes per row)")
    gold = {}
    for row, (i, codes) in enumerate(zip(frame["id"], frame[column]), start=1):
        if isinstance(codes, (str, bytes)) or not hasattr(codes, "__iter__"):
            raise _fail(path, "the codes are not a list", "give a list of code strings per row", row=row)
        gold[str(i)] = [str(c) for c in codes]
    return gold


def _gold(m: ProbMatrix, source: Path | None, split: str, path: Path) -> tuple[dict[str, list[str]], np.ndarray, int]:
    if source is not None:
        gold = _gold_from(source, split)
        targets, outside = target_matrix(m, gold, path)
        return gold, targets, outside
    if m.targets is None:
        raise _fail(path, "no targets array and no gold source", "pass --data (a prepared variant folder) or "
                    f"--{split}-gold, or save a 0/1 targets array in the npz")
    targets = m.targets.astype(bool)
    gold = {doc: [m.codes[j] for j in np.flatnonzero(row)] for doc, row in zip(m.ids, targets)}
    return gold, targets, 0


def run(args: argparse.Namespace) -> dict:
    """Tune on validation, predict test, evaluate; returns the evaluation metrics with the threshold added."""
    from data_tools.evaluation.evaluate import check_output_dir, evaluate, variant_code_system
    from data_tools.evaluation.reports import load_frequencies

    check_output_dir(args.out, "--out")
    val, test = load_matrix(args.val), load_matrix(args.test)
    if val.codes != test.codes:
        raise _fail(args.test, "its code columns differ from the validation matrix's",
                    "save both splits with the same label columns in the same order")
    _, val_targets, val_outside = _gold(val, args.val_gold or args.data, "val", args.val)
    test_gold, test_targets, test_outside = _gold(test, args.test_gold or args.data, "test", args.test)
    # Everything that can fail is read before the first file is written: no partial output.
    label_space_path, code_system = args.label_space, variant_code_system(args.data, args.code_system, ThresholdError)
    if label_space_path is not None:
        from llm4icd_plugins.codes import load_label_space

        try:
            load_label_space(label_space_path)
        except (OSError, ValueError) as exc:  # codes.py's message names the file and the fix
            raise ThresholdError(f"--label-space: {exc}. Fix: pass the label_space.json of a prepared variant "
                                 "(or one written by LabelSpace.save)") from None
    freq_source = args.train_frequencies or args.data
    frequencies = load_frequencies(freq_source) if freq_source else None
    val_curve = threshold_curve(val.probs, val_targets)
    best = int(np.argmax(val_curve["f1"]))  # the first maximum, as tune_threshold
    threshold, val_f1 = float(val_curve["threshold"][best]), float(val_curve["f1"][best])
    test_curve = threshold_curve(test.probs, test_targets)
    preds = predict(test, threshold)
    out = Path(args.out)
    for name in ("predictions_test.jsonl", "threshold.json", "pr_curve.png"):
        atomic.remove_stale_temporaries(out / name)
    lines = [json.dumps({"id": doc, "gold": test_gold[doc], "pred": pred}) for doc, pred in zip(test.ids, preds)]
    pred_path = out / "predictions_test.jsonl"
    atomic.write_text(pred_path, "\n".join(lines) + "\n")
    tuning = {"threshold": threshold, "val_micro_f1": val_f1, "rule": "prob > threshold, Edin et al. grid "
              f"linspace(0, 1, {GRID_POINTS}), first maximum of micro-F1 over the matrix columns",
              "val_matrix": str(args.val), "test_matrix": str(args.test), "n_codes": len(val.codes),
              "val_gold_codes_outside_columns": val_outside, "test_gold_codes_outside_columns": test_outside,
              "grid": [[round(float(t), 6), round(float(f), 6)]
                       for t, f in zip(val_curve["threshold"], val_curve["f1"])],
              "val_curve": curve_json(val_curve), "test_curve": curve_json(test_curve)}
    atomic.write_text(out / "threshold.json", json.dumps(tuning, indent=2) + "\n")
    if not args.no_plots:
        atomic.write_bytes(out / "pr_curve.png", pr_curve_png({"validation": val_curve, "test": test_curve},
                                                              threshold, Path(args.test).name))
    metrics = evaluate(pred_path, out, label_space_path, code_system, train_frequencies=frequencies,
                       n_bootstrap=args.bootstrap, seed=args.seed, plots=not args.no_plots)
    metrics["threshold"], metrics["val_micro_f1"] = threshold, val_f1
    metrics["val_micro_precision"] = float(val_curve["precision"][best])
    metrics["val_micro_recall"] = float(val_curve["recall"][best])
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_tools.evaluation.thresholds", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--val", required=True, type=Path, help="validation probability matrix (.npz or .parquet)")
    p.add_argument("--test", required=True, type=Path, help="test probability matrix, same code columns")
    p.add_argument("--out", "--output-dir", dest="out", required=True, type=Path, metavar="DIR",
                   help="folder for threshold.json (the tuned threshold; micro precision, recall and F1 at every "
                        "grid point on both splits), pr_curve.png, predictions_test.jsonl and the evaluation files "
                        "(--output-dir is an alias)")
    p.add_argument("--data", type=Path, help="prepared variant folder: gold codes of val/test, code system and "
                   "training frequencies (as data_tools.evaluation.evaluate --data)")
    p.add_argument("--val-gold", type=Path, help="gold of the validation split (parquet/JSONL with id, codes); "
                   "overrides --data and the npz targets")
    p.add_argument("--test-gold", type=Path, help="gold of the test split (parquet/JSONL with id, codes)")
    p.add_argument("--label-space", type=Path, help="label-space JSON for the test metrics (default: Edin's, the "
                   "codes with a gold occurrence in the test split)")
    p.add_argument("--code-system", choices=("icd9", "icd10"), help="code system (default: from --data)")
    p.add_argument("--train-frequencies", type=Path, help="training frequencies for the buckets (default: --data)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals (0: off)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (pr_curve.png and evaluate's)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_tool(parser.prog, lambda: _report(run(args), args))


def _report(metrics: dict, args: argparse.Namespace) -> None:
    print(f"threshold {metrics['threshold']:.4f} (validation micro-F1 {100 * metrics['val_micro_f1']:.2f}, "
          f"P {100 * metrics['val_micro_precision']:.2f}, R {100 * metrics['val_micro_recall']:.2f}; every grid "
          f"point in threshold.json)")
    print(metrics["summary"], end="")
    print(f"wrote {args.out / 'threshold.json'}, predictions_test.jsonl and the evaluation files")


if __name__ == "__main__":
    exit_with(main)
