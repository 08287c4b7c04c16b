"""The reward's pure core: one answer scored against one row's gold codes under one configuration.

``reward.compute_score`` adapts it to verl; ``metrics.sample_prf`` shares its F-beta. Imports no torch,
numpy or verl (``partial_credit`` uses the category rule of ``normalize``). Predicted codes follow
``parsing.predicted_codes`` (the paper's Ŷ), gold codes are normalised the way ``data_tools.build.prepare``
writes them, and a bad gold value fails with the row named.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from llm4icd_plugins.errors import describe
from llm4icd_plugins.normalize import canonicalize, category, table_of_canonical
from llm4icd_plugins.parsing import predicted_codes

REWARD_KEYS = (
    "score", "f1", "precision", "recall", "tp", "fp", "fn", "n_pred", "n_gold",
    "n_unknown", "n_malformed", "n_off_label", "format_ok", "n_partial", "n_recovered",
)
"""Keys of every result. Means over a batch give the batch micro-F1 exactly: 2·tp / (2·tp + fp + fn).
``f1``, ``precision``, ``recall`` and the counts are exact matches whatever the options; ``n_partial`` counts
category matches (0 unless ``partial_credit``), ``n_recovered`` the row's unhinted PHI pool codes in Ŷ."""

SYSTEMS = ("icd9", "icd10")
MAX_GOLD_CHARS = 1 << 16
"""Longest gold string accepted (~7,000 codes); MIMIC's longest admission has well under 100 codes."""
MAX_GOLD_CODES = 4096
BETA_RANGE = (1e-2, 1e2)
MAX_WEIGHT = 1e6
MAX_UNKNOWN_PENALTY = 1.0


class GoldError(ValueError):
    """A row's gold codes cannot be read: the message names the row and the fix, never the value."""


def fbeta(tp: float, fp: float, fn: float, beta: float = 1.0) -> tuple[float, float, float]:
    """Precision, recall and F-beta from (possibly weighted) counts; 0/0 = 0 everywhere."""
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    b2 = beta * beta
    denom = (1 + b2) * tp + b2 * fn + fp
    return precision, recall, ((1 + b2) * tp / denom if denom > 0 else 0.0)


@dataclass(frozen=True)
class ScoringConfig:
    """Validated reward options; build with ``make_config`` (cached), which raises ``ValueError`` on bad ones."""

    beta: float = 1.0
    weights: Mapping[str, float] | None = None
    weight_default: float = 1.0
    format_weight: float = 0.0
    label_space: frozenset[str] | None = None
    code_system: Any = None
    unknown_penalty: float = 0.0
    partial_credit: float = 0.0
    recovery_bonus: float = 0.0

    def weight_of(self, code: str) -> float:
        """The code's weight in ``weights`` (``weight_default`` for codes not listed)."""
        return self.weights.get(code, self.weight_default) if self.weights is not None else 1.0


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ValueError(f"reward {name}={value!r}; it must be a finite number in [{low:g}, {high:g}]")
    return float(value)


@lru_cache(maxsize=64, typed=True)  # typed: True and 1 are different settings
def make_config(beta: Any = 1.0, code_weights: Any = None, format_weight: Any = 0.0, label_space: Any = None,
                code_system: Any = None, unknown_penalty: Any = 0.0, partial_credit: Any = 0.0,
                recovery_bonus: Any = 0.0) -> ScoringConfig:
    """Check the options once per distinct setting: paths are loaded, names resolved, ranges enforced."""
    beta = _number("beta", beta, *BETA_RANGE)
    format_weight = _number("format_weight", format_weight, 0.0, 1.0)
    unknown_penalty = _number("unknown_penalty", unknown_penalty, 0.0, MAX_UNKNOWN_PENALTY)
    partial_credit = _number("partial_credit", partial_credit, 0.0, 1.0)
    recovery_bonus = _number("recovery_bonus", recovery_bonus, 0.0, 1.0)
    system = None
    if code_system not in (None, "", "none", False):
        if code_system not in SYSTEMS:
            raise ValueError(f"reward code_system={code_system!r}; use one of {', '.join(SYSTEMS)} or none")
        from llm4icd_plugins.codes import load_code_system

        system = load_code_system(code_system)
    if unknown_penalty and system is None:
        raise ValueError("reward unknown_penalty needs a code system; set code_system (or extra_info.code_system)")
    if partial_credit and system is None:
        raise ValueError("reward partial_credit needs a code system, so that an invented code in a gold code's "
                         "category earns nothing; set code_system (or extra_info.code_system)")
    weights, default = _load_weights(os.fspath(code_weights)) if code_weights else (None, 1.0)
    allowed = None
    if label_space:
        from llm4icd_plugins.codes import load_label_space

        space = load_label_space(os.fspath(label_space))
        if system is not None:
            space.validate(system)
        allowed = frozenset(space.codes)
    return ScoringConfig(beta, weights, default, format_weight, allowed, system, unknown_penalty, partial_credit,
                         recovery_bonus)


def _load_weights(path: str) -> tuple[dict[str, float], float]:
    """Per-code weights from a JSON object ``{code: weight}``; key ``"__default__"`` sets the rest (else 1)."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(f"reward code_weights file {path!r} cannot be read as JSON ({type(exc).__name__}); "
                         "pass a JSON object mapping codes to weights") from None
    if not isinstance(raw, dict):
        raise ValueError(f"reward code_weights file {path!r} must hold a JSON object {{code: weight}}")
    default = 1.0
    weights: dict[str, float] = {}
    for key, value in raw.items():
        try:
            weight = _number("code weight", value, 0.0, MAX_WEIGHT)
        except ValueError:
            raise ValueError(f"reward code_weights file {path!r}: weight of {key!r} is {value!r}; weights must be "
                             f"finite numbers in [0, {MAX_WEIGHT:g}]") from None
        if key == "__default__":
            default = weight
            continue
        code = canonicalize(key)
        if code is None:
            raise ValueError(f"reward code_weights file {path!r}: key {key!r} is not an ICD code")
        weights[code] = weight
    return weights, default


def _row(extra_info: Any) -> str:
    if isinstance(extra_info, Mapping):
        # ids only, and short ones: an id column filled with note text must not leak through an error
        named = [f"{k} {v!r}" for k in ("sample_id", "index")
                 if isinstance(v := extra_info.get(k), int) or (isinstance(v, str) and len(v) <= 64)]
        if named:
            return "row with " + ", ".join(named)
    return "a row without extra_info.sample_id"


def _row_error(extra_info: Any, problem: str, field: str = "reward_model.ground_truth") -> GoldError:
    return GoldError(f"reward: {_row(extra_info)}: {field} {problem}. Fix: give every row a list of ICD code "
                     "strings (data_tools.build.prepare and data_tools.phi.refresh write them)")


def _items(ground_truth: Any, extra_info: Any, field: str = "reward_model.ground_truth") -> list:
    """The gold value as a list of code strings (strings split on commas, semicolons and newlines)."""
    value = ground_truth
    if hasattr(value, "ndim") and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()  # a 0-d numpy array
    if isinstance(value, (bytes, bytearray)):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise _row_error(extra_info, f"is {describe(value)} that is not UTF-8", field) from None
    if isinstance(value, str):
        if len(value) > MAX_GOLD_CHARS:
            raise _row_error(extra_info, f"is {describe(value)}, over the limit of {MAX_GOLD_CHARS}", field)
        return value.replace(";", ",").replace("\n", ",").split(",")
    if value is None or isinstance(value, (int, float, Mapping)):
        raise _row_error(extra_info, f"is {describe(value)}, not a list of codes", field)
    items = value.tolist() if hasattr(value, "tolist") else value
    try:
        items = list(items)
    except TypeError:
        raise _row_error(extra_info, f"is {describe(value)}, not a list of codes", field) from None
    if len(items) > MAX_GOLD_CODES:
        raise _row_error(extra_info, f"holds {len(items)} entries, over the limit of {MAX_GOLD_CODES}", field)
    for i, item in enumerate(items):
        if isinstance(item, (bytes, bytearray)):
            try:
                items[i] = item.decode("utf-8")
            except UnicodeDecodeError:
                raise _row_error(extra_info, f"entry {i} is {describe(item)} that is not UTF-8", field) from None
        elif not isinstance(item, str):
            raise _row_error(extra_info, f"entry {i} is {describe(item)}, not a code string", field)
    return items


def gold_set(ground_truth: Any, code_system: Any = None, extra_info: Any = None) -> frozenset[str]:
    """Canonical gold codes, resolved against ``code_system`` when it knows them (``4280`` → ``428.0``).

    Blank entries are skipped; anything else that is not an ICD code raises ``GoldError`` naming the row.
    """
    items = _items(ground_truth, extra_info)
    try:
        return _gold_of(tuple(items), code_system)
    except _BadGold as exc:
        raise _row_error(extra_info, f"entry {exc.args[0]} is not an ICD code") from None


def recoverable_codes(pool: Any, hinted: Any, gold: frozenset[str], code_system: Any = None,
                      extra_info: Any = None) -> frozenset[str]:
    """The PHI pool codes (``extra_info.phi_pool``) that are gold and were not hinted (``phi_hints``) in this
    draw: the codes whose recovery ``recovery_bonus`` rewards. Empty for rows without a pool (validation)."""
    if pool is None:
        return frozenset()
    try:
        codes = _gold_of(tuple(_items(pool, extra_info, "extra_info.phi_pool")), code_system)
        shown = _gold_of(tuple(_items(hinted, extra_info, "extra_info.phi_hints")), code_system) \
            if hinted is not None else frozenset()
    except _BadGold as exc:
        raise _row_error(extra_info, f"entry {exc.args[0]} is not an ICD code", "extra_info.phi_pool or phi_hints") \
            from None
    return frozenset(codes.intersection(gold).difference(shown))


class _BadGold(Exception):
    pass


@lru_cache(maxsize=1 << 14)
def _gold_of(items: tuple[str, ...], code_system: Any) -> frozenset[str]:
    codes = set()
    for i, item in enumerate(items):
        if not item.strip():
            continue
        code = canonicalize(item)
        if code is None:
            raise _BadGold(i)
        if code_system is not None:
            code = code_system.resolve(code) or code  # unknown gold codes (retired ones) stay as written
        codes.add(code)
    return frozenset(codes)


@lru_cache(maxsize=1 << 16)
def _category_key(code: str, code_system: Any) -> tuple:
    """(table by canonical form, category): keeps ICD-10-PCS B00B0ZZ apart from ICD-10-CM B00.1."""
    return table_of_canonical(code, code_system.name) if code_system is not None else None, \
        category(code, code_system)


def partial_pairs(wrong: list[str], missed: list[str], code_system: Any, weight=None) -> list[tuple[str, str]]:
    """(predicted, gold) pairs of the same category among the wrong predictions and the missed gold codes, each
    code in at most one pair: in every category the heaviest missed codes (then alphabetical) take the heaviest
    wrong ones. Pairs per category = min(#wrong, #missed), the largest matching possible."""
    by_category: dict[tuple, list[str]] = {}
    for code in missed:
        by_category.setdefault(_category_key(code, code_system), []).append(code)
    candidates: dict[tuple, list[str]] = {}
    for code in wrong:
        key = _category_key(code, code_system)
        if key in by_category:
            candidates.setdefault(key, []).append(code)
    order = (lambda c: c) if weight is None else (lambda c: (-weight(c), c))
    pairs = []
    for key, preds in candidates.items():
        pairs.extend(zip(sorted(preds, key=order), sorted(by_category[key], key=order)))
    return sorted(pairs)


def score_answer(answer: Any, gold: frozenset[str], config: ScoringConfig,
                 recoverable: frozenset[str] = frozenset()) -> dict[str, float]:
    """Score one answer against canonical gold codes (``gold_set``); a dict with ``REWARD_KEYS``. Never raises.

    ``score = (1 - format_weight) · F + format_weight · format_ok - unknown_penalty · n_unknown
    + recovery_bonus · |Ŷ ∩ recoverable| / |recoverable|`` (the last term only when ``recoverable``, the
    row's unhinted PHI pool codes, is not empty), with Ŷ from ``parsing.predicted_codes`` and F the F-beta
    of (weighted, when ``config.weights``) counts where each category pair of ``partial_pairs`` moves
    ``partial_credit`` of a false positive and of a false negative into the true positives.
    """
    pred, parsed, n_rescued = predicted_codes(answer, gold, config.code_system, config.label_space)
    n_pred, n_gold = len(pred), len(gold)
    tp = len(gold.intersection(pred))
    beta = config.beta
    precision, recall, f1 = fbeta(tp, n_pred - tp, n_gold - tp)
    f_score = f1 if beta == 1.0 else fbeta(tp, n_pred - tp, n_gold - tp, beta)[2]
    credit = config.partial_credit
    pairs = partial_pairs([c for c in pred if c not in gold], [c for c in gold if c not in pred],
                          config.code_system, None if config.weights is None else config.weight_of) \
        if credit and tp < n_pred and tp < n_gold else ()
    if config.weights is not None:
        table, default = config.weights, config.weight_default
        w_tp = sum(table.get(c, default) for c in pred if c in gold)
        w_fp = sum(table.get(c, default) for c in pred if c not in gold)
        w_fn = sum(table.get(c, default) for c in gold if c not in pred)
        for wrong, missed in pairs:
            w_tp += credit * table.get(missed, default)
            w_fp -= credit * table.get(wrong, default)
            w_fn -= credit * table.get(missed, default)
        f_score = fbeta(w_tp, max(w_fp, 0.0), max(w_fn, 0.0), beta)[2]
    elif pairs:
        k = credit * len(pairs)
        f_score = fbeta(tp + k, max(n_pred - tp - k, 0.0), max(n_gold - tp - k, 0.0), beta)[2]
    n_unknown = parsed.n_unknown - n_rescued
    format_ok = 1.0 if parsed.format_ok else 0.0
    score = f_score
    if config.format_weight:
        score = (1.0 - config.format_weight) * f_score + config.format_weight * format_ok
    if config.unknown_penalty:
        score -= config.unknown_penalty * n_unknown
    n_recovered = len(recoverable.intersection(pred)) if recoverable else 0
    if config.recovery_bonus and recoverable:
        score += config.recovery_bonus * n_recovered / len(recoverable)
    return {
        "score": score, "f1": f1, "precision": precision, "recall": recall, "tp": tp + 0.0, "fp": n_pred - tp + 0.0,
        "fn": n_gold - tp + 0.0, "n_pred": n_pred + 0.0, "n_gold": n_gold + 0.0, "n_unknown": n_unknown + 0.0,
        "n_malformed": parsed.n_malformed + 0.0, "n_off_label": parsed.n_off_label + 0.0, "format_ok": format_ok,
        "n_partial": len(pairs) + 0.0, "n_recovered": n_recovered + 0.0,
    }
