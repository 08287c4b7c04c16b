"""The verl reward: sample-level F1 between the parsed ``<code>`` set and the gold codes (paper Sec. 4.2).

Use it from any verl 0.9.x project::

    reward.custom_reward_function.path=pkg://llm4icd_plugins.reward
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.beta=1.0          # optional, see ``compute_score``

Imports only the pure core (no torch, no verl). Configuration errors raise ``ValueError`` at the first
call; nothing a model writes can make it raise.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from llm4icd_plugins.normalize import canonicalize
from llm4icd_plugins.parsing import parse_codes, parse_response

REWARD_KEYS = (
    "score", "f1", "precision", "recall", "tp", "fp", "fn", "n_pred", "n_gold",
    "n_unknown", "n_malformed", "n_off_label", "format_ok",
)
"""Keys of every result. Means over a batch give the batch micro-F1 exactly: 2·tp / (2·tp + fp + fn)."""

_SYSTEMS = ("icd9", "icd10")


def gold_codes(ground_truth: Any) -> tuple[str, ...]:
    """Gold codes from a list, tuple, numpy array or comma/semicolon/newline-separated string, deduplicated."""
    if ground_truth is None:
        return ()
    if isinstance(ground_truth, str):
        items: Any = ground_truth.replace(";", ",").replace("\n", ",").split(",")
    elif hasattr(ground_truth, "tolist"):
        items = ground_truth.tolist()
    else:
        items = ground_truth
    try:
        return _gold_codes(tuple(items))
    except TypeError:  # unhashable items: nothing a cache could key on
        return parse_codes(items).codes


@lru_cache(maxsize=1 << 14)
def _gold_codes(items: tuple) -> tuple[str, ...]:
    # The G rollouts of a prompt share its gold set: normalise it once.
    return parse_codes(items).codes


@lru_cache(maxsize=16)
def _load_weights(path: str) -> tuple[dict[str, float], float]:
    """Per-code weights from a JSON object ``{code: weight}``; key ``"__default__"`` sets the rest (else 1)."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"reward code_weights file {path!r} cannot be read as JSON ({exc}); "
                         "pass a JSON object mapping codes to positive weights") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"reward code_weights file {path!r} must hold a JSON object {{code: weight}}")
    default = 1.0
    weights: dict[str, float] = {}
    for key, value in raw.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"reward code_weights file {path!r}: weight of {key!r} is {value!r}; "
                             "weights must be finite numbers >= 0")
        if key == "__default__":
            default = float(value)
            continue
        code = canonicalize(key)
        if code is None:
            raise ValueError(f"reward code_weights file {path!r}: key {key!r} is not an ICD code")
        weights[code] = float(value)
    return weights, default


@lru_cache(maxsize=16)
def _load_label_space(path: str) -> frozenset[str]:
    from llm4icd_plugins.codes import load_label_space

    return frozenset(load_label_space(path).codes)


@lru_cache(maxsize=2)
def _load_code_system(name: str):
    from llm4icd_plugins.codes import load_code_system

    return load_code_system(name)


def _system_name(option: Any, extra_info: Any) -> str | None:
    if option in (None, "", "none", False):
        return None
    if option == "auto":
        option = extra_info.get("code_system") if isinstance(extra_info, Mapping) else None
        if option is None:
            return None
    if option not in _SYSTEMS:
        raise ValueError(f"reward code_system={option!r}; use one of {', '.join(_SYSTEMS)}, 'auto' or none")
    return option


def _fbeta(tp: float, fp: float, fn: float, beta: float) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    b2 = beta * beta
    denom = (1 + b2) * tp + b2 * fn + fp
    return precision, recall, ((1 + b2) * tp / denom if denom > 0 else 0.0)


def compute_score(
    data_source: Any = None,
    solution_str: Any = "",
    ground_truth: Any = None,
    extra_info: Any = None,
    *,
    beta: float = 1.0,
    code_weights: str | None = None,
    format_weight: float = 0.0,
    label_space: str | None = None,
    code_system: str | None = None,
    unknown_penalty: float = 0.0,
    **_ignored: Any,
) -> dict[str, float]:
    """Score one response against its gold codes; returns a dict with ``score`` and ``REWARD_KEYS``.

    Default (no options) is the paper's reward: F1 between the parsed ``<code>`` set and the gold set,
    0 without a closed span. Options (``reward_kwargs``):

    - ``beta``: F-beta instead of F1 (beta > 1 favours recall).
    - ``code_weights``: JSON file ``{code: weight}`` (e.g. class-balanced, rare codes higher); tp/fp/fn
      then sum code weights inside the F-beta. The logged tp/fp/fn stay plain counts.
    - ``format_weight`` w in [0, 1]: ``score = (1 - w) * F + w * format_ok``.
    - ``label_space``: label-space JSON; predictions outside it are dropped (as evaluation does) and counted.
    - ``code_system``: ``icd9``, ``icd10`` or ``auto`` (from ``extra_info["code_system"]``): codes unknown
      to the tables are dropped from the prediction, unless they are gold (MIMIC-III keeps retired codes).
      Without it every well-formed code counts, so an invented code is simply a false positive.
    - ``unknown_penalty``: subtracted from the score per unknown code (needs ``code_system``).
    """
    if not (isinstance(beta, (int, float)) and beta > 0):
        raise ValueError(f"reward beta={beta!r}; beta must be a number > 0")
    if not (isinstance(format_weight, (int, float)) and 0.0 <= format_weight <= 1.0):
        raise ValueError(f"reward format_weight={format_weight!r}; it must lie in [0, 1]")
    if not (isinstance(unknown_penalty, (int, float)) and unknown_penalty >= 0):
        raise ValueError(f"reward unknown_penalty={unknown_penalty!r}; it must be >= 0")
    weights = _load_weights(os.fspath(code_weights)) if code_weights else None
    allowed = _load_label_space(os.fspath(label_space)) if label_space else None
    system_name = _system_name(code_system, extra_info)
    system = _load_code_system(system_name) if system_name else None

    gold = gold_codes(ground_truth)
    gold_set = set(gold)
    parsed = parse_response(solution_str, code_system=system, label_space=allowed)
    pred = list(parsed.codes)
    rescued = [c for c in parsed.unknown if c in gold_set and (allowed is None or c in allowed)]
    pred.extend(c for c in rescued if c not in pred)
    n_unknown = parsed.n_unknown - len(rescued)

    tp_codes = [c for c in pred if c in gold_set]
    tp, fp, fn = len(tp_codes), len(pred) - len(tp_codes), len(gold_set) - len(tp_codes)
    precision, recall, f_plain = _fbeta(tp, fp, fn, float(beta))
    f_score = f_plain
    if weights is not None:
        table, default = weights
        weight = lambda c: table.get(c, default)  # noqa: E731
        w_tp = sum(weight(c) for c in tp_codes)
        w_fp = sum(weight(c) for c in pred if c not in gold_set)
        w_fn = sum(weight(c) for c in gold_set if c not in pred)
        f_score = _fbeta(w_tp, w_fp, w_fn, float(beta))[2]
    score = (1.0 - format_weight) * f_score + format_weight * float(parsed.format_ok)
    score -= unknown_penalty * n_unknown if system is not None else 0.0
    return {
        "score": float(score),
        "f1": float(f_plain if beta == 1.0 else _fbeta(tp, fp, fn, 1.0)[2]),
        "precision": float(precision),
        "recall": float(recall),
        "tp": float(tp),
        "fp": float(fp),
        "fn": float(fn),
        "n_pred": float(len(pred)),
        "n_gold": float(len(gold_set)),
        "n_unknown": float(n_unknown),
        "n_malformed": float(parsed.n_malformed),
        "n_off_label": float(parsed.n_off_label),
        "format_ok": float(parsed.format_ok),
    }
