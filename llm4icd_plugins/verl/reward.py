"""The verl reward: sample-level F1 between the predicted code set Ŷ and the gold codes (paper Sec. 4.2).

Use it from any verl 0.9.x project::

    reward.custom_reward_function.path=pkg://llm4icd_plugins.verl.reward
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.beta=1.0          # optional, see ``compute_score``

A thin adapter over ``scoring.score_answer`` (pure, no torch or verl). Bad options raise ``ValueError``
at the first call; a bad gold value raises ``scoring.GoldError`` naming the row; nothing a model
writes can make it raise.

Every key beside ``score`` reaches verl as ``reward_extra_info``. verl 0.9.1 logs these keys for validation
(``val-aux/<data_source>/<key>/mean@1``, at every ``trainer.test_freq``), not as training-step metrics.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any

from llm4icd_plugins.parsing import parse_response
from llm4icd_plugins.scoring import REWARD_KEYS, GoldError, gold_set, make_config, recoverable_codes, score_answer

__all__ = ["ANSWER_KEYS", "REWARD_KEYS", "GoldError", "OPTIONS", "answer_stats_of", "compute_score", "gold_codes"]

OPTIONS = ("beta", "code_weights", "format_weight", "label_space", "code_system", "unknown_penalty", "partial_credit",
           "recovery_bonus", "answer_stats")
"""The reward's options (``reward_kwargs``)."""
_VERL_KWARGS = frozenset({"reward_router_address", "reward_model_tokenizer"})
"""Passed by verl 0.9.1's reward loop when a reward model router is configured; unused here."""
ANSWER_KEYS = ("answer/n_codes", "answer/duplicates", "answer/closed")
"""Answer diagnostics added by ``answer_stats=true``: codes written in the read span (every non-blank token,
duplicates and invalid ones included), tokens repeating an earlier code of it, and 1.0 if a closed
``<code>…</code>`` span was found (else 0.0)."""

# One-entry caches for the calls of a batch, each a tuple swapped in whole: verl's reward loop calls from a
# thread pool, so a reader takes one consistent snapshot. The rollouts of a prompt share its extra_info and gold.
_last_row: tuple = (None,) * 5  # (extra_info object, its code system, label-space file, PHI pool, hinted codes)
_last_config: tuple = (None,) * 9  # the eight options of the last call and their validated config
_last_gold: tuple = (None, None, None)  # (ground_truth object, code system, gold set)
_last_pool: tuple = (None,) * 4  # (extra_info object, gold set, code system, recoverable codes)


def gold_codes(ground_truth: Any, code_system: str | None = None) -> tuple[str, ...]:
    """Canonical gold codes of a list, array, bytes or comma/semicolon/newline-separated string, sorted;
    with ``code_system`` ("icd9", "icd10") undotted codes are resolved as the reward does."""
    return tuple(sorted(gold_set(ground_truth, make_config(code_system=code_system).code_system)))


def _reject(unknown: Mapping[str, Any]) -> ValueError:
    names = []
    for name in sorted(unknown):
        close = difflib.get_close_matches(name, OPTIONS, n=1, cutoff=0.5)
        names.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ValueError(f"reward: unknown reward_kwargs {', '.join(names)}; the options are {', '.join(OPTIONS)}")


def answer_stats_of(solution_str: Any, code_system: Any = None, label_space: Any = None) -> dict[str, float]:
    """``ANSWER_KEYS`` of one response, parsed as the reward parses it; never raises."""
    parsed = parse_response(solution_str, code_system, label_space)
    return {"answer/n_codes": parsed.n_tokens + 0.0, "answer/duplicates": parsed.n_duplicates + 0.0,
            "answer/closed": 1.0 if parsed.has_span else 0.0}


def _label_space_file(extra_info: Mapping) -> str | None:
    """A label-space JSON named by the row: ``extra_info.label_space_file``, or ``label_space`` if it is a path."""
    path = extra_info.get("label_space_file")
    if path and isinstance(path, str):
        return path
    name = extra_info.get("label_space")
    if type(name) is str and name.endswith(".json") and os.path.isfile(name):
        return name
    return None


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
    partial_credit: float = 0.0,
    recovery_bonus: float = 0.0,
    answer_stats: bool = False,
    **verl_kwargs: Any,
) -> dict[str, float]:
    """Score one response against its gold codes; returns a dict with ``score`` and ``REWARD_KEYS``.

    Default (no options) is the paper's reward: F1 between Ŷ and the gold set, 0 without a closed
    ``<code>`` span. Ŷ follows ``parsing.predicted_codes``: malformed codes dropped, undotted codes
    resolved, codes unknown to the row's code system dropped unless gold for this row, off-label codes
    dropped. Code system and label space default from ``extra_info`` (``code_system``; ``label_space_file``);
    these options override them (``reward_kwargs``):

    - ``code_system``: ``icd9``, ``icd10``, or ``none`` (every well-formed code counts as written).
    - ``label_space``: label-space JSON; predictions outside it are dropped and counted.
    - ``beta``: F-beta instead of F1 (beta > 1 favours recall), in [0.01, 100].
    - ``code_weights``: JSON file ``{code: weight}`` (e.g. class-balanced, rare codes higher); tp/fp/fn
      then sum code weights inside the F-beta. The logged tp/fp/fn stay plain counts.
    - ``format_weight`` w in [0, 1]: ``score = (1 - w) * F + w * format_ok``.
    - ``unknown_penalty`` in [0, 1]: subtracted per unknown (invented) code; needs a code system.
    - ``partial_credit`` c in [0, 1]: a wrong code in the category of a missed gold code (each code in one pair at
      most, ``scoring.partial_pairs``) counts as c of a true positive, c less of a false positive and of a false
      negative; needs a code system.
    - ``recovery_bonus`` b in [0, 1]: PHI rows (``extra_info.phi_pool``, ``phi_hints`` from ``PHIDataset``) get
      ``+ b · recovered / |pool ∩ gold − hinted|`` for the pool codes in Ŷ that the prompt did not hint; not
      capped, so the score lies in [0, 1 + b] (less any ``unknown_penalty``). Rows without a pool: no bonus.
    - ``answer_stats`` (true/false, default false): also return ``ANSWER_KEYS`` (codes written, duplicated codes,
      closed span) for the logs; the score is unchanged.

    Any other keyword raises ``ValueError`` naming the closest option.
    """
    if verl_kwargs and not _VERL_KWARGS.issuperset(verl_kwargs):
        raise _reject({k: v for k, v in verl_kwargs.items() if k not in _VERL_KWARGS})
    if answer_stats is not False and answer_stats is not True:
        raise ValueError(f"reward answer_stats={answer_stats!r}: use true or false")
    global _last_row, _last_config, _last_gold, _last_pool
    row = None
    if type(extra_info) is dict or isinstance(extra_info, Mapping):
        row = _last_row
        if row[0] is not extra_info:
            row = _last_row = (extra_info, extra_info.get("code_system"), _label_space_file(extra_info),
                               extra_info.get("phi_pool"), extra_info.get("phi_hints"))
        if code_system is None or code_system == "auto":
            code_system = row[1]
        if label_space is None:
            label_space = row[2]
    elif code_system == "auto":
        code_system = None
    last = _last_config
    # Same option objects as the previous call (verl passes the same reward_kwargs every time): same config.
    if (last[0] is beta and last[1] is code_weights and last[2] is format_weight and last[3] == label_space
            and last[4] == code_system and last[5] is unknown_penalty and last[6] is partial_credit
            and last[7] is recovery_bonus):
        config = last[8]
    else:
        options = (beta, code_weights, format_weight, label_space, code_system, unknown_penalty, partial_credit,
                   recovery_bonus)
        try:
            config = make_config(*options)
        except TypeError:  # an unhashable option value
            config = make_config.__wrapped__(*options)
        _last_config = (*options, config)
    cached = _last_gold
    if cached[0] is ground_truth and cached[1] is config.code_system and ground_truth is not None:
        gold = cached[2]
    else:
        gold = gold_set(ground_truth, config.code_system, extra_info)
        if not isinstance(ground_truth, (list, bytearray)):  # a list could change between calls
            _last_gold = (ground_truth, config.code_system, gold)
    recoverable = frozenset()
    if row is not None and row[3] is not None:
        pool = _last_pool
        if pool[0] is extra_info and pool[1] is gold and pool[2] is config.code_system:
            recoverable = pool[3]
        else:
            recoverable = recoverable_codes(row[3], row[4], gold, config.code_system, extra_info)
            _last_pool = (extra_info, gold, config.code_system, recoverable)
    result = score_answer(solution_str, gold, config, recoverable)
    if answer_stats:
        result.update(answer_stats_of(solution_str, config.code_system, config.label_space))
    return result
