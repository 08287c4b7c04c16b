"""Hint-free generation over a prepared split with vLLM, appending one JSON line per sample (resumable).

    python -m data_tools.evaluation.infer --data data/prepared/mimic3_full --split test \\
        --model models/sft --out preds/sft_test.jsonl
    python -m data_tools.evaluation.infer --data ... --model BASE --lora step100=ckpt/100/lora_adapter \\
        --lora step200=ckpt/200/lora_adapter --out preds/sweep      # several adapters, one engine

Prompts are the prepared ones (``verl/<split>.parquet``: the exact training prompt, already fitted to the
budget) or a prompting baseline of paper Appendix D (``--prompt zero_shot`` etc., built by
``data_tools.evaluation.baselines`` and fitted to ``--prompt-budget``). Always hint-free. The chat template and
thinking setting match training (the model's template; ``enable_thinking`` from the variant's ``stats.json``
unless given). Greedy by default. Runs on GPUs and, through vLLM's CPU build, on a CPU (``--enforce-eager``
starts faster there; tests and the embedded default use the same tool). Note and response text is never printed.

Constrained decoding (``--constrain label-space|code-system``, ``--max-codes``): vLLM structured outputs
(xgrammar) restrict the answer to ``<code>c1, c2</code>`` over the variant's label space or the code system's
tables (``data_tools.evaluation.constrain``); CoT prompts may think first. Vote calibration (``--samples K
--temperature T``): K samples per note in one request; each line holds the majority answer (codes in at least
half the samples) as ``pred``, every code's vote share as ``votes`` and the K raw ``responses``;
``X.votes.npz`` holds the shares as the per-note score matrix over the label space that
``data_tools.evaluation.thresholds`` tunes (one global threshold).

Each line is a prediction record (``llm4icd_plugins.records``: ``response`` is what readers score, ``pred`` its
codes for people). Each output ``X.jsonl`` has a run record ``X.jsonl.meta.json``: the model and adapter (paths
and content fingerprints), split, prompt kind, decoding settings and the data files' hashes. A re-run appends to
the output only when its record is the same; otherwise it refuses (``--overwrite`` starts the output again).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_tools.cli import exit_with, run_tool
from data_tools.evaluation import baselines, constrain
from data_tools.evaluation.thresholds import ProbMatrix
from llm4icd_plugins import atomic, records
from llm4icd_plugins.errors import UserError
from llm4icd_plugins.records import Request, aggregate_votes
from llm4icd_plugins.variant import PreparedVariant

PROMPT_KINDS = ("train", "zero_shot", "few_shot", "zero_shot_cot", "few_shot_cot")
RECORD_VERSION = 1
MAJORITY = 0.5
"""A voted answer keeps the codes found in at least this share of the samples."""
WHOLE_FILE_LIMIT = 64 << 20  # larger files (weight shards) are fingerprinted by size and three 1 MiB samples
SAMPLE = 1 << 20


class InferError(UserError):
    """A problem with the inputs of an inference run, with what to do about it."""


__all__ = ["InferError", "Request", "aggregate_votes", "load_requests", "main", "plan_resume", "run", "run_record"]


def load_requests(data_dir: Path, split: str, prompt_kind: str = "train", *, tokenizer=None,
                  chat_template_kwargs: dict | None = None, max_samples: int | None = None,
                  prompt_budget: int | None = None) -> list[Request]:
    """The split's samples with their prompt messages and gold codes, in file order."""
    if prompt_kind != "train":
        try:
            return baselines.build_requests(data_dir, split, prompt_kind, tokenizer=tokenizer,
                                            chat_template_kwargs=chat_template_kwargs, max_samples=max_samples,
                                            budget=prompt_budget)
        except baselines.BaselineError as exc:
            raise InferError(str(exc)) from exc
    variant = PreparedVariant(data_dir, InferError)
    table = variant.verl(split, ["prompt", "reward_model", "extra_info"])
    if max_samples is not None:
        table = table.slice(0, max_samples)
    columns = table.to_pydict()
    requests = []
    for row, (prompt, reward, extra) in enumerate(zip(columns["prompt"], columns["reward_model"],
                                                      columns["extra_info"])):
        sample_id = extra.get("sample_id") if isinstance(extra, dict) else None
        if sample_id is None:
            raise InferError(f"{variant.verl_path(split)}: row {row} has no extra_info.sample_id; re-run "
                             "data_tools.build.prepare")
        messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
        requests.append(Request(str(sample_id), messages, [str(c) for c in reward["ground_truth"]]))
    return requests


def finished_ids(path: Path) -> set[str]:
    """Ids already written to ``path``; a torn last line (an interrupted write) is cut off first."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    keep = data if data.endswith(b"\n") or not data else data[: data.rfind(b"\n") + 1]
    ids = set()
    for number, line in enumerate(keep.splitlines(), 1):
        try:
            ids.add(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError, RecursionError) as exc:  # the type only: a line may echo a note
            raise InferError(f"{path}: line {number} is not a prediction record ({type(exc).__name__}). Fix: pass "
                             "--overwrite to start this output again, or another --out") from None
    if len(keep) != len(data):
        atomic.write_bytes(path, keep)
    return ids


def meta_path(out: Path) -> Path:
    """The run record of an output file: ``<out>.meta.json``."""
    return out.with_name(out.name + ".meta.json")


def fingerprint(path: Path) -> str:
    """sha256 over a file's or folder's files (relative name, size, content); a file over 64 MiB contributes
    its first, middle and last MiB, so a multi-GB model is told apart from another in seconds."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(path).parts))
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path) if file != path else file.name}\0{size}\0".encode())
        with open(file, "rb") as fh:
            if size <= WHOLE_FILE_LIMIT:
                for block in iter(lambda: fh.read(SAMPLE), b""):
                    digest.update(block)
            else:
                for offset in (0, size // 2, size - SAMPLE):
                    fh.seek(offset)
                    digest.update(fh.read(SAMPLE))
    return digest.hexdigest()


def data_files(data_dir: Path, split: str, prompt_kind: str) -> list[Path]:
    """The prepared files the prompts of a run are built from (their hashes go into the run record)."""
    variant = PreparedVariant(data_dir, InferError)
    if prompt_kind == "train":
        files = [variant.verl_path(split)]
    else:
        files = [variant.examples_path(split), variant.stats_path]
        if prompt_kind.startswith("few_shot") and split != "train":
            files.append(variant.examples_path("train"))
    variant.require(*files)
    return files


def run_record(model: Path, adapter: Path | None, split: str, prompt_kind: str, files: Sequence[Path],
               decoding: dict, *, model_sha256: str | None = None, data_sha256: dict | None = None) -> dict:
    """What defines a run's outputs; a resume must match it exactly (fingerprints computed unless given)."""
    return {"version": RECORD_VERSION, "model": str(Path(model).resolve()),
            "model_sha256": model_sha256 or fingerprint(model),
            "adapter": str(Path(adapter).resolve()) if adapter is not None else None,
            "adapter_sha256": fingerprint(adapter) if adapter is not None else None,
            "split": split, "prompt": prompt_kind,
            "data_sha256": data_sha256 or {str(Path(f).resolve()): fingerprint(f) for f in files},
            "decoding": dict(decoding)}


def _differences(saved: dict, record: dict) -> list[str]:
    keys = dict.fromkeys([*record, *saved])
    out = []
    for key in keys:
        a, b = saved.get(key), record.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key == "decoding":
            out += [f"decoding.{k}" for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(key)
    return out


def plan_resume(out: Path, record: dict, overwrite: bool = False) -> set[str]:
    """Decide how a run writes ``out``: the ids already done when the file holds this same run, nothing when
    it is new or ``overwrite`` (the old file is removed); ``InferError`` with the fix when it holds another
    run. Afterwards the run record beside ``out`` is this run's."""
    out = Path(out)
    meta = meta_path(out)
    for final in (out, meta):
        atomic.remove_stale_temporaries(final)
    out.with_name(out.name + ".tmp").unlink(missing_ok=True)  # an earlier version's temporary
    if overwrite:
        out.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
    done: set[str] = set()
    if out.exists() and out.stat().st_size > 0:
        fix = "pass --overwrite to start this output again, or choose another --out"
        try:
            saved = json.loads(meta.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InferError(f"{out}: holds predictions but no run record ({meta.name}), so resuming could mix "
                             f"runs. Fix: {fix}") from None
        except (OSError, ValueError, RecursionError) as exc:
            raise InferError(f"{meta}: unreadable run record ({type(exc).__name__}). Fix: {fix}") from None
        diff = _differences(saved if isinstance(saved, dict) else {}, record)
        if diff:
            raise InferError(f"{out}: holds predictions of another run ({', '.join(diff)} differ; see {meta.name}), "
                             f"and appending would mix the two. Fix: {fix}")
        done = finished_ids(out)
    else:  # nothing written yet: whatever record is there describes no output
        atomic.write_text(meta, json.dumps(record, indent=2) + "\n")
    return done


def _parse_lora(specs: Sequence[str]) -> list[tuple[str, Path]]:
    adapters = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise InferError(f"--lora {spec!r}: expected NAME=PATH (e.g. sft=outputs/sft/lora)")
        if not (Path(path) / "adapter_config.json").is_file():
            raise InferError(f"--lora {spec!r}: {path} holds no adapter_config.json (a PEFT LoRA adapter folder)")
        adapters.append((name, Path(path)))
    return adapters


def _adapter_rank(path: Path) -> int:
    return int(json.loads((path / "adapter_config.json").read_text()).get("r", 8))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_tools.evaluation.infer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path,
                   help="prepared variant folder (from data_tools.build.prepare), e.g. data/prepared/mimic3_full")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="which split to generate for (default test; PHI refreshes use train)")
    p.add_argument("--model", required=True, type=Path,
                   help="merged model folder, or the base model when --lora adapters are given")
    p.add_argument("--lora", action="append", default=[], metavar="NAME=PATH",
                   help="a LoRA adapter to run on top of --model; repeat for a checkpoint sweep in one engine")
    p.add_argument("--include-base", action="store_true",
                   help="with --lora, also generate with the bare base model (written as base.jsonl)")
    p.add_argument("--out", "--output", "--output-dir", dest="out", type=Path, metavar="PATH",
                   help="output JSONL of a single model (appended, resumable), or with --lora the folder for one "
                        "NAME.jsonl per adapter (--output and --output-dir are accepted as older names)")
    p.add_argument("--prompt", default="train", choices=PROMPT_KINDS,
                   help="prompt: the prepared training prompt (default) or a prompting baseline of Appendix D")
    p.add_argument("--max-new-tokens", type=int, default=196,
                   help="generation budget (paper: 196 for Top-50; measure a sufficient one for Full)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy decoding (default)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling when temperature > 0")
    p.add_argument("--enable-thinking", action=argparse.BooleanOptionalAction, default=None,
                   help="chat-template thinking switch for hybrid Qwen3 (train and infer alike: off); default: the "
                        "setting data_tools.build.prepare recorded in the variant's stats.json")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs per model replica")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="context length for vLLM (default: the model's; lower it to save KV-cache memory)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vLLM GPU memory share")
    p.add_argument("--dtype", default="auto", help="model dtype for vLLM (auto, bfloat16, float32)")
    p.add_argument("--enforce-eager", action="store_true",
                   help="skip vLLM's graph compilation and capture: starts faster, generates slower (CPU tests)")
    p.add_argument("--prompt-budget", type=int, default=None,
                   help="prompting baselines: prompt tokens incl. chat template that notes and demonstrations are "
                        "fitted to (default: the variant's max prompt length in stats.json, capped at "
                        "--max-model-len minus --max-new-tokens)")
    p.add_argument("--max-samples", type=int, default=None, help="only the first N samples (quick checks)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="samples per engine call; results are appended after each (an interruption loses one)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--constrain", default="off", choices=constrain.MODES,
                   help="decode only valid answers <code>c1, c2</code>: codes of the variant's label space (closed "
                        "set) or of the code system's tables (open set); off by default")
    p.add_argument("--max-codes", type=int, default=None, help="with --constrain: at most N codes per answer")
    p.add_argument("--samples", type=int, default=1,
                   help="K samples per note (needs --temperature > 0): writes the majority answer, each code's vote "
                        "share and X.votes.npz for data_tools.evaluation.thresholds")
    p.add_argument("--overwrite", action="store_true",
                   help="start the output(s) again instead of resuming (needed when they hold another run)")
    return p


def _outputs(args, adapters) -> list[tuple[str, Path, object]]:
    if args.out is None:
        raise InferError("no output. Fix: give --out FILE.jsonl (or --lora ... with --out FOLDER)")
    if adapters:
        if args.out.suffix == ".jsonl":
            raise InferError(f"--out {args.out}: with --lora it is a folder (one NAME.jsonl per adapter). Fix: give "
                             "a folder path")
        runs = [(name, args.out / f"{name}.jsonl", path) for name, path in adapters]
        if args.include_base:
            runs.insert(0, ("base", args.out / "base.jsonl", None))
        return runs
    return [(args.model.name, args.out, None)]


def run(args: argparse.Namespace) -> list[dict]:
    """Generate for every run (model or adapter) and return one throughput summary per run."""
    adapters = _parse_lora(args.lora)
    runs = _outputs(args, adapters)
    if not (args.model / "config.json").is_file():
        raise InferError(f"--model {args.model}: no config.json there (a Hugging Face model folder is expected)")
    _check_decoding(args)
    kwargs, budget = _prompt_settings(args)
    grammar = _grammar(args, kwargs)
    # Every output is checked against its run record before anything heavy is loaded.
    done = {out: plan_resume(out, record, args.overwrite)
            for out, record in run_records(args, runs, grammar=grammar).items()}
    if not _has_gpu():
        # vLLM's CPU build would otherwise reserve most of the RAM for its KV cache
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        # engine and worker in this process: starting and stopping their two processes cost ~25 s a run on 2 cores
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    tokenizer = load_tokenizer(args.model, args.data)
    requests = load_requests(args.data, args.split, args.prompt, tokenizer=tokenizer,
                             chat_template_kwargs=kwargs, max_samples=args.max_samples,
                             prompt_budget=budget)
    variant = PreparedVariant(args.data, InferError)
    code_system = variant.code_system() if variant.label_space_path.is_file() else None

    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest
    from vllm.sampling_params import StructuredOutputsParams

    engine_kwargs = dict(model=str(args.model), tokenizer=str(args.model), dtype=args.dtype, seed=args.seed,
                         tensor_parallel_size=args.tensor_parallel_size,
                         gpu_memory_utilization=args.gpu_memory_utilization, enforce_eager=args.enforce_eager)
    if args.max_model_len:
        engine_kwargs["max_model_len"] = args.max_model_len
    if grammar is not None:
        engine_kwargs["structured_outputs_config"] = {"backend": "xgrammar"}
    if args.temperature > 0 and not _has_gpu():
        # vLLM's CPU build fails on seeded sampling after a partly prefilled prompt ("CPU Generator does not use
        # offset"): prefill every prompt whole.
        length = args.max_model_len or _model_max_len(args.model)
        engine_kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(length, 2048))
    if adapters:
        engine_kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=max(_adapter_rank(p) for _, p in adapters))
    llm = LLM(**engine_kwargs)
    structured = StructuredOutputsParams(grammar=grammar) if grammar is not None else None
    sampling = SamplingParams(n=args.samples, temperature=args.temperature, top_p=args.top_p,
                              max_tokens=args.max_new_tokens, seed=args.seed, structured_outputs=structured)
    summaries = []
    for number, (name, out_path, adapter) in enumerate(runs, 1):
        lora = LoRARequest(name, number, str(adapter)) if adapter is not None else None
        summaries.append(_generate(llm, tokenizer, sampling, lora, requests, out_path, name, kwargs,
                                   args.batch_size, code_system, done[out_path]))
        if args.samples > 1 and variant.label_space_path.is_file():
            summaries[-1]["votes_matrix"] = str(write_vote_matrix(out_path, variant.label_space().codes))
    return summaries


def _prompt_settings(args: argparse.Namespace) -> tuple[dict, int | None]:
    """Chat-template settings and the baselines' prompt budget, as the run will use them."""
    kwargs = PreparedVariant(args.data).chat_template_kwargs() if args.enable_thinking is None else {
        "enable_thinking": args.enable_thinking}
    budget = args.prompt_budget
    if budget is None and args.prompt != "train" and args.max_model_len:  # leave room for the answer
        budget = min(baselines.default_budget(args.data), args.max_model_len - args.max_new_tokens)
    return kwargs, budget


def run_records(args: argparse.Namespace, runs=None, *, grammar: str | None | bool = False) -> dict[Path, dict]:
    """The run record of every output of this command line (see ``run_record``); ``grammar``: the one already
    built for it (None when unconstrained), else built here."""
    runs = runs if runs is not None else _outputs(args, _parse_lora(args.lora))
    kwargs, budget = _prompt_settings(args)
    files = data_files(args.data, args.split, args.prompt)
    decoding = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
                "seed": args.seed, "chat_template_kwargs": kwargs, "prompt_budget": budget, "dtype": args.dtype,
                "samples": args.samples, "constrain": args.constrain, "max_codes": args.max_codes}
    if grammar is False:
        grammar = _grammar(args, kwargs)
    if grammar is not None:  # the code set (label space, table release) is part of what defines the outputs
        decoding["grammar_sha256"] = hashlib.sha256(grammar.encode()).hexdigest()
    shared = dict(model_sha256=fingerprint(args.model),  # computed once for all adapters of the command
                  data_sha256={str(Path(f).resolve()): fingerprint(f) for f in files})
    return {out: run_record(args.model, adapter, args.split, args.prompt, files, decoding, **shared)
            for _, out, adapter in runs}


def _check_decoding(args: argparse.Namespace) -> None:
    if args.samples < 1:
        raise InferError(f"--samples {args.samples}: give at least 1 sample per note")
    if args.samples > 1 and args.temperature <= 0:
        raise InferError(f"--samples {args.samples} with greedy decoding repeats one answer. Fix: add --temperature "
                         "(e.g. 0.7), or drop --samples")
    if args.max_codes is not None and args.constrain == "off":
        raise InferError("--max-codes caps the constrained answer. Fix: add --constrain label-space|code-system")


def _grammar(args: argparse.Namespace, template_kwargs: dict) -> str | None:
    """The answer grammar of a constrained run (None when off); CoT prompts and thinking templates may think."""
    if args.constrain == "off":
        return None
    think = constrain.is_cot(args.prompt) or bool(template_kwargs.get("enable_thinking"))
    try:
        return constrain.build_grammar(constrain.code_set(args.constrain, args.data), max_codes=args.max_codes,
                                       think=think)
    except constrain.ConstrainError as exc:
        raise InferError(str(exc)) from None


def vote_matrix(path: Path, codes: Sequence[str]):
    """The vote shares of a voted output file as ``thresholds.ProbMatrix`` over ``codes`` (shares of other
    codes are left out, like predictions outside the label space in the evaluation)."""
    column = {c: j for j, c in enumerate(codes)}
    found = records.read_predictions(path, None, require_gold=False, error=InferError)
    probs = np.zeros((len(found), len(codes)))
    for i, record in enumerate(found):
        if record.votes is None:
            raise InferError(f"{path}: line {record.line} has no vote shares. Fix: write it with --samples K (K > 1)")
        for code, share in record.votes.items():
            if code in column:
                probs[i, column[code]] = share
    return ProbMatrix([r.id for r in found], list(codes), probs)


def write_vote_matrix(path: Path, codes: Sequence[str], out: Path | None = None) -> Path:
    """Write ``vote_matrix`` as the ``.npz`` (probs, ids, codes) that ``data_tools.evaluation.thresholds`` reads."""
    matrix = vote_matrix(path, codes)
    out = Path(out) if out is not None else path.with_name(path.name.removesuffix(".jsonl") + ".votes.npz")

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a bare temporary name
            np.savez(fh, probs=matrix.probs, ids=np.array(matrix.ids, dtype=str),
                     codes=np.array(matrix.codes, dtype=str))

    atomic.write_with(out, save)
    return out


def _model_max_len(model: Path) -> int:
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    config = config.get("text_config", config)
    return int(config.get("max_position_embeddings") or 32768)


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - any torch problem means no usable GPU here
        return False


def load_tokenizer(model: Path, data: Path):
    """The model's tokenizer with the chat template the variant's prompts were fitted with (a backbone's override)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    template = PreparedVariant(data, InferError).chat_template()
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


def prompt_inputs(tokenizer, conversations: Sequence[list[dict]], template_kwargs: dict) -> list[dict]:
    """vLLM prompts as token ids rendered here: vLLM would add a second BOS to a text prompt that has one."""
    return [{"prompt_token_ids": tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                               return_dict=False, **template_kwargs)}
            for messages in conversations]


def _generate(llm, tokenizer, sampling, lora, requests, out_path: Path, name: str, template_kwargs: dict,
              batch_size: int, code_system, done: set[str]) -> dict:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    todo = [r for r in requests if r.id not in done]
    prompt_tokens = gen_tokens = 0
    start = time.perf_counter()
    with open(out_path, "a", encoding="utf-8") as sink, tqdm(total=len(todo), desc=f"infer {name}",
                                                             unit="sample") as bar:
        for lo in range(0, len(todo), batch_size):
            chunk = todo[lo: lo + batch_size]
            inputs = prompt_inputs(tokenizer, [r.messages for r in chunk], template_kwargs)
            params = sampling if not sampling.temperature else [_seeded(sampling, r.id) for r in chunk]
            outputs = llm.generate(inputs, params, lora_request=lora, use_tqdm=False)
            for request, output in zip(chunk, outputs):
                record = _record(request, output, name, code_system)
                prompt_tokens += record["prompt_tokens"]
                gen_tokens += record["gen_tokens"]
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            bar.update(len(chunk))
    seconds = max(time.perf_counter() - start, 1e-9)
    summary = {"model": name, "output": str(out_path), "generated": len(todo), "skipped_done": len(done),
               "seconds": round(seconds, 2), "samples_per_s": round(len(todo) / seconds, 3),
               "prompt_tokens_per_s": round(prompt_tokens / seconds, 1),
               "gen_tokens_per_s": round(gen_tokens / seconds, 1)}
    print(f"[infer] {name}: {len(todo)} generated ({len(done)} already done) in {seconds:.1f} s — "
          f"{summary['samples_per_s']} samples/s, {summary['prompt_tokens_per_s']} prompt tok/s, "
          f"{summary['gen_tokens_per_s']} generated tok/s → {out_path}")
    return summary


def _seeded(sampling, sample_id: str):
    """The sampling settings with a seed of this note's own (from ``--seed`` and its id): its samples do not
    depend on the batch it ran in or on a resume, and no two notes share one random stream."""
    digest = hashlib.sha256(f"{sampling.seed}\0{sample_id}".encode()).digest()
    params = sampling.clone()
    params.seed = int.from_bytes(digest[:4], "little") >> 1
    return params


def _record(request: Request, output, name: str, code_system) -> dict:
    """One output line (``llm4icd_plugins.records``): the response, or for K samples the majority answer and
    vote shares."""
    completions = output.outputs
    tokens = {"prompt_tokens": len(output.prompt_token_ids or ()),
              "gen_tokens": sum(len(c.token_ids) for c in completions)}
    if len(completions) == 1:
        return records.response_record(request.id, name, completions[0].text, request.gold, code_system,
                                       finish_reason=completions[0].finish_reason, extra=request.extra, **tokens)
    return records.voted_record(request.id, name, [c.text for c in completions], request.gold, code_system,
                                majority=MAJORITY, finish_reasons=[c.finish_reason for c in completions],
                                extra=request.extra, **tokens)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def body() -> None:
        run(args)

    return run_tool(parser.prog, body)


if __name__ == "__main__":  # vLLM spawns worker processes: the guard is required
    exit_with(main)
