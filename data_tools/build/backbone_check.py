"""Check a backbone before any GPU hour: SFT trains on the prompt GRPO and inference see, and prepared data
was fitted for this backbone.

`template`: LlamaFactory's template (its own encode path, run in the SFT environment) and the tokenizer's
chat template as `prepare`, verl and vLLM apply it must give the same prompt tokens, and the same answer
tokens after them, for representative conversations; a template that reads the date is refused.
`data`: a prepared variant's `stats.json` records the backbone, tokenizer fingerprint, chat-template
arguments and budgets it was fitted for; any difference is refused with the command that re-prepares.

    python -m data_tools.build.backbone_check template --backbone qwen3-4b [--tokenizer PATH]
    python -m data_tools.build.backbone_check data --backbone qwen3-4b --data data/prepared/qwen3-4b/mimic3_full
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from data_tools.build.prompt_candidates import prepare_into
from data_tools.cli import exit_with, run_tool
from llm4icd_plugins import prompts
from llm4icd_plugins.backbones import Backbone, list_backbones, load_backbone
from llm4icd_plugins.errors import UserError, user_error

PROG = "python -m data_tools.build.backbone_check"
REPO_ROOT = Path(__file__).resolve().parents[2]
SFT_ENV_VAR = "LLM4ICD_SFT_ENV"
PREPARED_ROOT = Path("data/prepared")
"""Prepared data lives in PREPARED_ROOT/<backbone>/<variant> (e.g. mimic3_full): backbones side by side."""
DATES = (datetime.datetime(2001, 1, 2), datetime.datetime(2012, 11, 30))
CANDIDATE_TEMPLATES = ("qwen", "qwen3", "qwen3_nothink", "llama3", "chatml", "default")
SAMPLE_NOTE = ("admission date: [**2150-1-1**] discharge date: [**2150-1-9**]\nservice: medicine\n"
               "history of present illness: 67 y/o male with chf and hypertension, dyspnea and edema.\n"
               "brief hospital course: diuresed with iv lasix 40mg bid; creatinine 1.4 -> 1.1.\n"
               "discharge diagnosis: acute on chronic systolic heart failure; atrial fibrillation.")


class BackboneCheckError(UserError):
    """The backbone's prompts differ between frameworks, or prepared data does not match it."""


def sample_conversations() -> dict[str, list[dict]]:
    """Representative conversations (synthetic note, no PHI): the SFT/RL prompt of both code systems, a
    PHI-hinted prompt, and one with a system turn; each ends with its answer."""
    icd9, icd10 = prompts.PromptSpec("icd9", "full"), prompts.PromptSpec("icd10", "top50")
    hints = [("I10", "Essential (primary) hypertension"), ("N17.9", None)]
    answer9 = {"role": "assistant", "content": prompts.format_answer(["428.0", "427.31", "96.04"])}
    answer10 = {"role": "assistant", "content": prompts.format_answer(["I50.9", "I10"])}
    system = {"role": "system", "content": "You are a careful clinical coder."}
    return {
        "icd9 full prompt": prompts.build_messages(SAMPLE_NOTE, icd9) + [answer9],
        "icd10 top50 prompt with PHI hints": prompts.build_messages(SAMPLE_NOTE, icd10, hints) + [answer10],
        "prompt after a system turn": [system] + prompts.build_messages(SAMPLE_NOTE, icd9) + [answer9],
    }


# --- the Hugging Face side (prepare, verl, vLLM) ----------------------------------------------------------

def chat_template_text(backbone: Backbone) -> str | None:
    """The backbone's own Jinja chat template (its `chat_template` text), or None for the tokenizer's."""
    return backbone.chat_template or None


def load_tokenizer(backbone: Backbone, tokenizer_path: str | os.PathLike | None = None):
    """The backbone's tokenizer with the chat template verl and vLLM will use."""
    path = str(tokenizer_path or backbone.model)
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # hub errors, missing files, bad configs all surface here
        raise user_error(path, f"backbone '{backbone.name}': cannot load its tokenizer ({type(exc).__name__})",
                         "download the model (huggingface-cli download MODEL) or pass --tokenizer LOCAL_FOLDER",
                         cls=BackboneCheckError) from None
    text = chat_template_text(backbone)
    if text is not None:
        tokenizer.chat_template = text
    if not tokenizer.chat_template:
        raise user_error(path, f"backbone '{backbone.name}': the tokenizer has no chat template",
                         f"set chat_template in its recipes/models YAML to the Jinja text ({PROG} export-template "
                         "writes a backbone with LlamaFactory's format)", cls=BackboneCheckError)
    return tokenizer


def _ids(rendered) -> list[int]:
    return list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)


def hf_encode(tokenizer, conversation: list[dict], kwargs: dict) -> tuple[list[int], list[int]]:
    """(prompt ids with the generation prompt, ids of the whole conversation) as verl/vLLM tokenize them."""
    prompt = _ids(tokenizer.apply_chat_template(conversation[:-1], tokenize=True, add_generation_prompt=True,
                                                return_dict=False, **kwargs))
    full = _ids(tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=False, **kwargs))
    return prompt, full


def reads_the_date(tokenizer, conversation: list[dict], kwargs: dict) -> bool:
    """True when the rendered prompt changes with the date (`date_string` or `strftime_now`)."""
    renders = []
    for day in DATES:
        dated = dict(kwargs, date_string=day.strftime("%d %b %Y"), strftime_now=day.strftime)
        renders.append(hf_encode(tokenizer, conversation, dated)[0])
    return renders[0] != renders[1]


def fingerprint(tokenizer) -> str:
    """A hash of what decides prompt tokens: vocabulary, added tokens, special tokens and chat template."""
    payload = {"vocab": sorted(tokenizer.get_vocab().items()), "chat_template": tokenizer.chat_template,
               "bos": tokenizer.bos_token, "eos": tokenizer.eos_token}
    return "sha256:" + hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


# --- the LlamaFactory side (SFT) ---------------------------------------------------------------------------

def lf_encode(requests: list[dict]) -> list[dict]:
    """LlamaFactory's side of each request (`tokenizer`, `template`, `enable_thinking`, `conversations`,
    optional `match_prompts`): the (prompt, response) ids of each conversation as its supervised processor
    encodes them (`pairs`), the template as Jinja (`jinja`), and which common templates (× enable_thinking)
    would give `match_prompts` (`matches`). One call for all requests: here when LlamaFactory imports, else
    in the SFT environment."""
    try:
        import llamafactory  # noqa: F401
    except ImportError:
        return _lf_subprocess(requests)
    return [_lf_work(request) for request in requests]


def _where(model: str | os.PathLike) -> str:
    """A local folder as an absolute path (the SFT environment runs from the repository), else the hub id."""
    return str(Path(model).resolve()) if Path(model).exists() else str(model)


def _sft_python() -> Path:
    env = Path(os.environ.get(SFT_ENV_VAR) or REPO_ROOT / ".venvs" / "sft")
    python = env / "bin" / "python"
    if not python.is_file():
        raise user_error(env, "no LlamaFactory environment here (bin/python missing)",
                         "create it (bash env/setup.sh sft, or pip install -e '.[sft]' in a venv) and set "
                         f"{SFT_ENV_VAR}",
                         cls=BackboneCheckError)
    return python


def _lf_subprocess(requests: list[dict]) -> list[dict]:
    python = _sft_python()
    with tempfile.TemporaryDirectory(prefix="llm4icd-lf-") as tmp:
        req, out = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(requests), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.setdefault("DISABLE_VERSION_CHECK", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        proc = subprocess.run([str(python), "-m", "data_tools.build.backbone_check", "lf-encode", str(req), str(out)],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not out.is_file():
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise BackboneCheckError(f"{python}: LlamaFactory's encoder failed (exit {proc.returncode}):\n{tail}\n"
                                     f"Fix: check that {SFT_ENV_VAR} points to an environment with llamafactory and "
                                     "this project installed (pip install -e '.[sft]')")
        return json.loads(out.read_text(encoding="utf-8"))


def _lf_work(request: dict) -> dict:
    from llamafactory.data.template import TEMPLATES, ReasoningTemplate, get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(request["tokenizer"])
    if request["template"] not in TEMPLATES:
        return {"error": f"LlamaFactory has no template '{request['template']}'"}

    def encode(name, thinking):
        tokenizer = copy.deepcopy(base)
        args = DataArguments(template=name, enable_thinking=True if thinking is None else thinking)
        template = get_template_and_fix_tokenizer(tokenizer, args)
        pairs = []
        for conversation in request["conversations"]:
            system = conversation[0]["content"] if conversation[0]["role"] == "system" else None
            turns = conversation[1:] if system is not None else conversation
            pairs.append(template.encode_multiturn(tokenizer, turns, system, None)[-1])
        return pairs, isinstance(template, ReasoningTemplate), template

    pairs, _, template = encode(request["template"], request["enable_thinking"])
    result = {"pairs": pairs, "jinja": None, "matches": []}
    try:
        result["jinja"] = template._get_jinja_template(copy.deepcopy(base))
    except ValueError:
        pass
    want = request.get("match_prompts")
    if want is None or [p for p, _ in pairs] == want:
        return result
    for name in CANDIDATE_TEMPLATES:
        for thinking in (None, False):
            try:
                found, reasoning, _ = encode(name, thinking)
            except Exception:  # a template that cannot encode with this tokenizer is simply no candidate
                break
            if [p for p, _ in found] == want:
                result["matches"].append({"template": name, "enable_thinking": thinking})
            if not reasoning:
                break
    return result


# --- the template check -----------------------------------------------------------------------------------

def _first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def check_template(backbone: Backbone, tokenizer_path: str | os.PathLike | None = None) -> dict:
    """Raise `BackboneCheckError` unless LlamaFactory and the chat template render the same tokens; returns a
    summary (conversations checked, prompt lengths)."""
    return check_templates([(backbone, tokenizer_path)])[0]


def check_templates(items: Sequence[tuple[Backbone, str | os.PathLike | None]]) -> list[dict]:
    """`check_template` for several (backbone, tokenizer path or None) pairs with one LlamaFactory call."""
    conversations = sample_conversations()
    first = next(iter(conversations.values()))
    checked, requests = [], []
    for backbone, tokenizer_path in items:
        tokenizer = load_tokenizer(backbone, tokenizer_path)
        kwargs = dict(backbone.chat_template_kwargs)
        where = (f"backbone '{backbone.name}' (LlamaFactory template '{backbone.template}', chat_template_kwargs "
                 f"{kwargs})")
        if reads_the_date(tokenizer, first, kwargs):
            raise BackboneCheckError(
                f"{where}: the chat template reads today's date (date_string/strftime_now), so the prompt verl and "
                "vLLM see changes with the calendar and differs from the one SFT trained on. Fix: give the backbone "
                f"a date-free chat_template rendering LlamaFactory's '{backbone.template}' format ({PROG} "
                f"export-template --backbone {backbone.name} --model MODEL --out recipes/models/NEW.yaml writes such "
                "a backbone; llama3.1-8b-instruct ships one), or use a model whose chat template has no date (e.g. "
                "Meta-Llama-3-8B-Instruct)")
        hf = {name: hf_encode(tokenizer, conv, kwargs) for name, conv in conversations.items()}
        checked.append((backbone, tokenizer, where, hf))
        requests.append({"tokenizer": _where(tokenizer_path or backbone.model), "template": backbone.template,
                         "enable_thinking": backbone.enable_thinking, "conversations": list(conversations.values()),
                         "match_prompts": [p for p, _ in hf.values()]})
    summaries = []
    for (backbone, tokenizer, where, hf), lf in zip(checked, lf_encode(requests)):
        if "error" in lf:
            raise BackboneCheckError(f"{where}: {lf['error']}. Fix: set template in "
                                     f"recipes/models/{backbone.name}.yaml to a LlamaFactory template name")
        for (name, (prompt, full)), (lf_prompt, lf_response) in zip(hf.items(), lf["pairs"]):
            part, ours, theirs = "prompt", lf_prompt, prompt
            if lf_prompt == prompt:
                part, ours, theirs = "prompt + answer", lf_prompt + lf_response, full
                if ours == theirs:
                    continue
            raise BackboneCheckError(_mismatch(where, backbone, tokenizer, name, part, ours, theirs, lf["matches"]))
        summaries.append({"backbone": backbone.name, "conversations": len(hf),
                          "prompt_tokens": [len(p) for p, _ in hf.values()]})
    return summaries


def _mismatch(where, backbone, tokenizer, name, part, ours, theirs, matches) -> str:
    at = _first_difference(ours, theirs)

    def pieces(ids):  # tokens of the template at the difference (the sample note is synthetic)
        return tokenizer.convert_ids_to_tokens(list(ids[at:at + 3])) if at < len(ids) else "the end"

    message = (f"{where}: for the {name}, LlamaFactory (SFT) and the chat template (prepare, verl, vLLM) render "
               f"different {part} tokens: they agree on the first {at} tokens, then LlamaFactory has "
               f"{pieces(ours)} and the chat template {pieces(theirs)} ({len(ours)} vs {len(theirs)} tokens).")
    if matches:
        fix = "; or ".join(f"template: {m['template']}" + (" with chat_template_kwargs {enable_thinking: false} "
                                                           "(and enable_thinking: false in SFT)"
                                                           if m["enable_thinking"] is False else "")
                           for m in matches)
        return f"{message} Fix: in recipes/models/{backbone.name}.yaml set {fix}"
    return (f"{message} Fix: choose the LlamaFactory template that reproduces this model's own chat template "
            f"(qwen: Qwen2.5; qwen3 + enable_thinking false: hybrid Qwen3; qwen3_nothink: Qwen3-2507 Instruct; "
            f"llama3: Llama-3 Instruct), or set chat_template in recipes/models/{backbone.name}.yaml to Jinja "
            f"text rendering the LlamaFactory format ({PROG} export-template writes such a backbone)")


# --- prepared data vs backbone ------------------------------------------------------------------------------

def data_record(backbone_name: str | None, tokenizer) -> dict:
    """What `prepare` adds to `stats.json` ("tokens") so that `check_data` can tell which backbone it fits, and
    the chat template the prompts were fitted with, so that inference can render them the same way."""
    return {"backbone": backbone_name, "tokenizer_fingerprint": fingerprint(tokenizer),
            "chat_template": tokenizer.chat_template}


def prepare_settings(args: argparse.Namespace) -> dict:
    """`prepare --backbone`: take --tokenizer and --enable-thinking from the backbone (an explicit --tokenizer is
    a local copy of its model), check its templates first; returns the `TruncationSettings` fields recording it."""
    if not getattr(args, "backbone", None):
        return {}
    backbone = load_backbone(args.backbone)
    unsupported = sorted(set(backbone.chat_template_kwargs) - {"enable_thinking"})
    if unsupported:
        raise BackboneCheckError(f"backbone '{backbone.name}': prepare passes only enable_thinking to the chat "
                                 f"template, not {unsupported}. Fix: remove them from "
                                 f"recipes/models/{backbone.name}.yaml")
    if args.enable_thinking is not None and args.enable_thinking != backbone.enable_thinking:
        raise BackboneCheckError(f"--enable-thinking contradicts backbone '{backbone.name}' (enable_thinking "
                                 f"{backbone.enable_thinking}). Fix: leave out --enable-thinking; the backbone sets it")
    check_template(backbone, args.tokenizer)
    args.enable_thinking = backbone.enable_thinking
    args.tokenizer = args.tokenizer or backbone.model
    return {"backbone": backbone.name, "chat_template": chat_template_text(backbone)}


def prepared_dir(backbone: str, dataset: str, root: str | os.PathLike = PREPARED_ROOT) -> Path:
    """Where a backbone's prepared variant lives: ROOT/<backbone>/<dataset> (e.g. mimic3_full)."""
    return Path(root) / backbone / dataset


def check_data(backbone: Backbone, data_dir: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None,
               budgets: dict | None = None) -> dict:
    """Raise `BackboneCheckError` unless ``data_dir`` was prepared for this backbone's tokenizer, chat template and
    arguments (and ``budgets``: max_prompt_length / hint_reserve / cutoff_len, where given); returns its record."""
    data_dir = Path(data_dir)
    stats_path = data_dir / "stats.json"
    budgets = {k: v for k, v in (budgets or {}).items() if v is not None}
    if not stats_path.is_file():
        raise user_error(data_dir, "no prepared data here (stats.json missing)",
                         f"prepare it: {prepare_command({}, backbone, data_dir, budgets)}", cls=BackboneCheckError)
    try:
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
        tokens = stats["tokens"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise user_error(stats_path, "is not a stats.json written by data_tools.build.prepare",
                         f"re-prepare: {prepare_command({}, backbone, data_dir, budgets)}",
                         cls=BackboneCheckError) from None
    problems = []
    kwargs = dict(backbone.chat_template_kwargs)
    if "tokenizer_fingerprint" not in tokens:
        problems.append("its prompts were not fitted with a recorded tokenizer (prepared without --backbone, or by an "
                        "older version)")
    else:
        if tokens.get("tokenizer_fingerprint") != fingerprint(load_tokenizer(backbone, tokenizer_path)):
            problems.append(f"it was fitted with another tokenizer or chat template (backbone "
                            f"'{tokens.get('backbone')}', tokenizer {tokens.get('tokenizer')})")
        if tokens.get("chat_template_kwargs", {}) != kwargs:
            problems.append(f"it was fitted with chat_template_kwargs {tokens.get('chat_template_kwargs')}, the "
                            f"backbone uses {kwargs}")
    for key, want in budgets.items():
        if key in tokens and tokens[key] != want:
            problems.append(f"it was fitted for {key} {tokens[key]}, the run uses {want}")
    if problems:
        raise BackboneCheckError(f"{data_dir}: prepared data does not match backbone '{backbone.name}': "
                                 f"{'; '.join(problems)}. Fix: re-prepare for this backbone: "
                                 f"{prepare_command(stats, backbone, data_dir, budgets)}")
    return {k: tokens.get(k) for k in ("backbone", "tokenizer", "chat_template_kwargs", "max_prompt_length",
                                       "hint_reserve", "cutoff_len")}


def prepare_command(stats: dict, backbone: Backbone, data_dir: Path, budgets: dict) -> str:
    """The `data_tools.build.prepare` command that writes ``data_dir``'s variant for ``backbone``."""
    variant = stats.get("variant") or data_dir.name
    prefix, _, scope = variant.rpartition("_")
    sources, tokens = stats.get("sources", {}), stats.get("tokens", {})
    if "input" in sources:
        kind, inputs = "generic", [f"--input {sources['input']}", f"--code-system {stats.get('code_system', 'CODES')}"]
    else:
        corpus = stats.get("corpus") or {"mimic3": "MIMIC-III", "mimic4": "MIMIC-IV"}.get(prefix[:6])
        kind = {"MIMIC-III": "mimic3", "MIMIC-IV": "mimic4"}.get(corpus, "{mimic3,mimic4}")
        inputs = ([f"--{k} {sources[k]}" for k in ("notes", "diagnoses", "procedures") if k in sources]
                  or ["--root RAW_DIR"]) + ["--splits SPLIT_FILE"]
        if prefix == "mimic4_icd9":
            inputs.append("--icd-version 9")
    parent = data_dir.parent  # ROOT/<backbone>/<variant>, or the flat ROOT/<variant> of older layouts
    keyed = parent.name in list_backbones() or parent.name == tokens.get("backbone")
    out = (parent.parent if keyed else parent) / backbone.name
    parts = [f"python -m data_tools.build.prepare {kind}", *inputs, f"--backbone {backbone.name}", f"--out {out}"]
    if prefix and prefix not in (kind, "mimic4_icd9"):
        parts.append(f"--name {prefix}")
    if scope in prompts.LABEL_SCOPES:
        parts.append(f"--variants {scope}")
    for key in ("max_prompt_length", "hint_reserve", "cutoff_len"):
        value = budgets.get(key, tokens.get(key))
        if value is not None:
            parts.append(f"--{key.replace('_', '-')} {value}")
    candidates = stats.get("candidates") or {}
    if candidates.get("source"):
        parts += [f"--candidates {candidates['source']}", f"--top-k {candidates.get('top_k')}"]
    if data_dir.name != variant:  # e.g. the launcher's <dataset>_cand<K>
        parts.remove(f"--out {out}")
        return prepare_into(" ".join(parts), variant, out / data_dir.name)
    if (out / variant).exists():
        parts.append("--overwrite")
    return " ".join(parts)


def backbone_yaml(backbone: Backbone, name: str, model: str, chat_template: str | None) -> str:
    """A backbone file: ``backbone``'s settings under a new name and model, the chat template as a YAML block."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    spec = dict(dataclasses.asdict(backbone), name=name, model=model, chat_template=chat_template)
    header = (f"# {name}: backbone {backbone.name} with LlamaFactory's '{backbone.template}' format as its chat "
              f"template (written by {PROG} export-template).\n")
    return header + yaml.dump(spec, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=1000)


# --- command line --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{template,data,export-template}")
    names = ", ".join(list_backbones()) or "none"

    def backbone_args(p):
        p.add_argument("--backbone", required=True, help=f"backbone name ({names}) or a backbone YAML file")
        p.add_argument("--tokenizer", help="local tokenizer/model folder to use instead of the backbone's model")

    p = sub.add_parser("template", help="LlamaFactory's template and the chat template render the same tokens")
    backbone_args(p)
    p = sub.add_parser("data", help="a prepared variant was fitted for this backbone")
    backbone_args(p)
    p.add_argument("--data", required=True, type=Path, help="prepared variant folder (holds stats.json)")
    for flag in ("--max-prompt-length", "--hint-reserve", "--cutoff-len"):
        p.add_argument(flag, type=int, help="the run's value; the data must have been fitted for it")
    p = sub.add_parser("export-template", help="write a new backbone YAML whose chat_template is LlamaFactory's "
                       "template as Jinja (the fix for a chat template that differs from LlamaFactory's)")
    backbone_args(p)
    p.add_argument("--out", required=True, type=Path,
                   help="backbone YAML to write (e.g. recipes/models/NAME.yaml); its name is the file name")
    p.add_argument("--model", help="the new backbone's model (hub id or folder) [the --backbone's model]")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p = sub.add_parser("lf-encode")  # internal: the LlamaFactory side, run in the SFT environment
    p.add_argument("request", type=Path)
    p.add_argument("result", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.command == "lf-encode":
            result = [_lf_work(r) for r in json.loads(args.request.read_text(encoding="utf-8"))]
            args.result.write_text(json.dumps(result), encoding="utf-8")
            return 0
        backbone = load_backbone(args.backbone)
        if args.command == "template":
            summary = check_template(backbone, args.tokenizer)
            print(f"template check passed: backbone {backbone.name}, LlamaFactory template '{backbone.template}' and "
                  f"the chat template give the same tokens for {summary['conversations']} conversations "
                  f"(prompts of {', '.join(map(str, summary['prompt_tokens']))} tokens)")
        elif args.command == "data":
            budgets = {"max_prompt_length": args.max_prompt_length, "hint_reserve": args.hint_reserve,
                       "cutoff_len": args.cutoff_len}
            record = check_data(backbone, args.data, args.tokenizer, budgets)
            print(f"data check passed: {args.data} was prepared for backbone {backbone.name} "
                  f"(chat_template_kwargs {record['chat_template_kwargs']}, max_prompt_length "
                  f"{record['max_prompt_length']}, hint_reserve {record['hint_reserve']}, "
                  f"cutoff_len {record['cutoff_len']})")
        else:
            from data_tools.cli import refuse_existing
            from llm4icd_plugins.atomic import write_text

            refuse_existing(args.out, args.overwrite, cls=BackboneCheckError)
            tokenizer = args.tokenizer or args.model or backbone.model
            load_tokenizer(backbone, tokenizer)  # a clear error when the tokenizer is missing
            jinja = lf_encode([{"tokenizer": _where(tokenizer), "template": backbone.template,
                                "enable_thinking": backbone.enable_thinking, "conversations": []}])[0].get("jinja")
            if not jinja:
                raise BackboneCheckError(f"LlamaFactory cannot write template '{backbone.template}' as Jinja. Fix: "
                                         "write the chat template by hand")
            name = args.out.name.removesuffix(".yaml").removesuffix(".yml")
            write_text(args.out, backbone_yaml(backbone, name, args.model or backbone.model, jinja))
            load_backbone(args.out)  # what was written reads back as a backbone
            print(f"wrote {args.out}: backbone {name} ({args.model or backbone.model}) with LlamaFactory's "
                  f"'{backbone.template}' format as its chat template; check it with `{PROG} template --backbone "
                  f"{args.out}`")
        return 0

    return run_tool(PROG, body)


if __name__ == "__main__":
    exit_with(main)
