"""Build a tiny Qwen-architecture model and a locally trained tokenizer, for tests and CPU runs.

No model hub is involved: a byte-level BPE tokenizer is trained with the ``tokenizers`` library on
clinical-style texts (Qwen2's pre-tokenizer, so every digit and "." is its own token and ICD codes
are learnable), and a randomly initialised ``Qwen2ForCausalLM`` / ``Qwen3ForCausalLM`` is saved next
to it. The chat template renders Qwen2.5-Instruct's format token for token (Qwen3's hybrid format
for ``arch="qwen3"``), so LlamaFactory's built-in ``qwen`` / ``qwen3`` templates, transformers,
verl and vLLM all see the same prompts. The output folder loads with ``HF_HUB_OFFLINE=1``.

    python -m data_tools.build.tiny_model --out outputs/tiny-qwen2 --synthetic

The folder is built next to ``--out`` and moved into place when complete; an existing one is replaced only
with ``--overwrite``. Training texts (perhaps notes) are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from data_tools.cli import add_output_arguments, refuse_existing, run_tool
from llm4icd_plugins import atomic
from llm4icd_plugins.errors import UserError, user_error

ARCHS = ("qwen2", "qwen3")
HEAD_DIM = 64
"""vLLM's CPU attention supports head dims 32, 64, 80, ... (not 16); 64 is also what real Qwen uses."""

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_TOKENS = ("<think>", "</think>")
ANSWER_TOKENS = ("<code>", "</code>")
"""Single tokens in the tiny vocabulary so a few-minute CPU SFT learns the answer format; real Qwen
tokenizers split them into pieces, which costs a real backbone nothing."""
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)


class TinyModelError(UserError, ValueError):
    """Bad input or settings for the tiny model (a ValueError too, for callers of the Python API)."""
QWEN25_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Qwen2's pre-tokenisation regex (a fact about its tokenizer): letters run together, each digit alone.
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
    r"""|\s+(?!\S)|\s+"""
)

# Qwen2.5-Instruct's chat format for system/user/assistant turns (tool calls are not supported):
# a default system turn when the conversation has none, every turn "<|im_start|>ROLE\n...<|im_end|>\n".
QWEN25_CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' -}}"
    "{%- set turns = messages[1:] -%}"
    "{%- else -%}"
    "{{- '<|im_start|>system\\n" + QWEN25_DEFAULT_SYSTEM + "<|im_end|>\\n' -}}"
    "{%- set turns = messages -%}"
    "{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if message['role'] not in ('user', 'assistant', 'system') -%}"
    "{{- raise_exception('tiny chat template: unsupported role ' + message['role']) -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Qwen3 (hybrid thinking) format: no default system turn; the assistant turns after the last user
# turn carry a think block (empty unless ``reasoning_content``); ``enable_thinking=false`` appends an
# empty think block to the generation prompt. Earlier assistant turns are rendered without it.
QWEN3_CHAT_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ('user', 'assistant', 'system') -%}"
    "{{- raise_exception('tiny chat template: unsupported role ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- set content = message['content'] -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- set reasoning = message.get('reasoning_content', '') or '' -%}"
    "{%- if '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].split('<think>')[-1] -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{%- if loop.index0 > ns.last_user and (loop.last or reasoning) -%}"
    "{%- set content = '<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') -%}"
    "{%- endif -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)

CHAT_TEMPLATES = {"qwen2": QWEN25_CHAT_TEMPLATE, "qwen3": QWEN3_CHAT_TEMPLATE}

_BUILTIN_NOTES = (
    ("admission date: [**2150-1-1**] discharge date: [**2150-1-9**]\nservice: medicine\n"
     "chief complaint: shortness of breath.\nhistory of present illness: 67 y/o male with chf, "
     "hypertension and type 2 diabetes presented with dyspnea and lower extremity edema. bnp 1,240."),
    ("brief hospital course: pt was diuresed with iv lasix 40mg bid. creatinine 1.4 -> 1.1. "
     "echo showed ef 30%. discharged on metoprolol 25 mg po bid, lisinopril 10 mg daily."),
    ("discharge diagnosis: acute on chronic systolic heart failure; atrial fibrillation; "
     "acute kidney injury; hyperlipidemia.\ndischarge condition: stable."),
    ("past medical history: copd on home o2 2l, cad s/p cabg x3 (2142), gerd, depression.\n"
     "social history: 40 pack-year smoker, quit 2145. no etoh."),
    ("physical exam: t 98.6 hr 88 bp 142/78 rr 18 o2 sat 94% ra. lungs: bibasilar crackles. "
     "ext: 2+ pitting edema to the knees."),
    ("procedures: right heart catheterization; intubation and mechanical ventilation < 96 hours; "
     "central venous catheter placement; transfusion of packed red blood cells."),
    ("hospital course: 54f admitted with sepsis from a urinary source, e. coli bacteremia. "
     "treated with ceftriaxone then cipro for 14 days total. lactate 4.2 on admission."),
    ("pertinent results: wbc 14.2 hgb 9.8 plt 210 na 134 k 4.1 cl 99 hco3 22 bun 32 cr 1.6 glu 212."),
    ("medications on admission: aspirin 81 mg, atorvastatin 40 mg, metformin 500 mg bid, insulin."),
    ("followup instructions: please follow up with your cardiologist in 2 weeks. "
     "call your doctor if you have chest pain, fever > 101.5 or worsening swelling."),
)
_BUILTIN_CODES = (
    "401.9", "428.0", "427.31", "584.9", "272.4", "250.00", "496", "414.01", "V45.81", "E878.8",
    "038.9", "995.92", "599.0", "96.04", "96.6", "38.93", "99.04", "37.22", "39.95", "88.56",
    "I10", "I50.9", "E11.9", "N17.9", "J44.9", "I48.91", "A41.9", "R65.20", "Z95.1", "S72.001A",
    "0BH17EZ", "5A1955Z", "02HV33Z", "30233N1", "0DJ08ZZ", "B2111ZZ",
)


def builtin_texts() -> list[str]:
    """A small fixed corpus of lower-cased clinical-style notes and ICD code strings (no PHI)."""
    codes = " ".join(_BUILTIN_CODES)
    answers = [f"<code>{', '.join(_BUILTIN_CODES[i:i + 6])}</code>" for i in range(0, len(_BUILTIN_CODES), 6)]
    return [*(_BUILTIN_NOTES), codes, codes.lower(), *answers]


def synthetic_texts(n_admissions: int = 200, seed: int = 0) -> list[str]:
    """Discharge notes and code strings from ``data_tools.build.synth``'s synthetic MIMIC-III tables."""
    from data_tools.build import synth

    with tempfile.TemporaryDirectory() as tmp:
        paths = synth.generate_mimic3(tmp, n_admissions=n_admissions, seed=seed)
        texts = [t.lower() for t in _read_csv(paths["notes"])["TEXT"]]
        for table, key in (("icd9_dx", "diagnoses"), ("icd9_proc", "procedures")):
            codes = sorted({_formatted(c, table) for c in _read_csv(paths[key])["ICD9_CODE"]} - {None})
            texts.append(" ".join(codes))
            texts.append(" ".join(codes).lower())
    return texts + builtin_texts()


def _formatted(raw: str, table: str) -> str | None:
    from llm4icd_plugins.normalize import format_code

    try:
        return format_code(raw, table)
    except ValueError:  # synth leaves some codes empty, as MIMIC does
        return None


def _read_csv(path):
    import pandas as pd

    return pd.read_csv(path, dtype=str, keep_default_na=False)


def read_text_files(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Texts from files: ``.jsonl`` → every string value of every row (ShareGPT ``content`` too),
    anything else → the whole file as one text."""
    texts: list[str] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise user_error(path, "--texts: no such file", "pass existing text or .jsonl files", cls=TinyModelError)
        lineno = 0
        try:
            if path.suffix == ".jsonl":
                with path.open(encoding="utf-8") as fh:
                    for lineno, line in enumerate(fh, 1):
                        if line.strip():
                            texts.extend(_strings(json.loads(line)))
            else:
                texts.append(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise user_error(path, f"not valid JSON ({err.msg})", "give one JSON object per line or a plain text file",
                             line=lineno, cls=TinyModelError) from None
        except UnicodeDecodeError:
            raise user_error(path, "the file is not UTF-8 text", "convert it to UTF-8",
                             line=lineno + 1 if path.suffix == ".jsonl" else None, cls=TinyModelError) from None
    return texts


def _strings(obj) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _strings(value)


def _build_bpe(texts: Sequence[str], vocab_size: int):
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    # Qwen keeps <think>/</think> as added, non-special tokens (decode keeps them).
    from tokenizers import AddedToken

    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS + ANSWER_TOKENS])
    return tok


def train_tokenizer(texts: Sequence[str], out_dir: str | os.PathLike, vocab_size: int = 4096, *,
                    arch: str = "qwen2", overwrite: bool = False):
    """Train a Qwen2-style byte-level BPE tokenizer on ``texts`` and save it to ``out_dir``.

    Returns the ``PreTrainedTokenizerFast`` as reloaded from disk. The vocabulary may be smaller
    than ``vocab_size`` when the corpus runs out of merges. Deterministic for the same texts.
    The folder is written next to ``out_dir`` and moved into place when complete; an existing
    ``out_dir`` is replaced only with ``overwrite`` (an empty folder, e.g. a fresh temporary one, is used).
    """
    from transformers import AutoTokenizer

    _check_arch(arch)
    out_dir = Path(out_dir)
    if not (out_dir.is_dir() and not any(out_dir.iterdir())):
        check_out(out_dir, overwrite)
    with atomic.atomic_dir(out_dir) as tmp:
        _save_tokenizer(texts, tmp, vocab_size, arch)
        _make_readable(tmp)
    return AutoTokenizer.from_pretrained(out_dir)


def _save_tokenizer(texts: Sequence[str], out_dir: Path, vocab_size: int, arch: str) -> None:
    """Train the BPE and save it with its config and chat template into the existing folder ``out_dir``."""
    from transformers import PreTrainedTokenizerFast

    texts = [t for t in texts if t]
    if not texts:
        raise TinyModelError("train_tokenizer: no texts to train on. Fix: pass --texts FILES or --synthetic")
    if vocab_size < 512:
        raise TinyModelError(f"train_tokenizer: --vocab-size {vocab_size} is below the 259 byte/special tokens plus "
                             "room for merges. Fix: use at least 512")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=_build_bpe(texts, vocab_size),
        bos_token=None,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        unk_token=None,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATES[arch],
        model_max_length=32768,
        padding_side="right",
        clean_up_tokenization_spaces=False,
        errors="replace",
        split_special_tokens=False,
    )
    fast.save_pretrained(out_dir)
    _set_tokenizer_class(out_dir)


def _set_tokenizer_class(out_dir: Path) -> None:
    # Same class name as the real Qwen checkpoints; the saved tokenizer.json is used as is.
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "Qwen2Tokenizer"
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise TinyModelError(f"unknown arch {arch!r}. Fix: use one of {', '.join(ARCHS)}")


def check_out(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Before any work: remove a killed run's temporary folders and refuse an output in the way."""
    out_dir = Path(out_dir)
    for stale in atomic.remove_stale_temporaries(out_dir):
        print(f"note: removed {stale}, the temporary folder of an interrupted run", file=sys.stderr)
    if out_dir.exists() and not out_dir.is_dir():
        raise user_error(out_dir, "--out is a file, not a folder", "choose another --out", cls=TinyModelError)
    refuse_existing(out_dir, overwrite, cls=TinyModelError)
    return out_dir


def build_tiny_model(out_dir: str | os.PathLike, texts: Sequence[str], *, arch: str = "qwen2",
                     layers: int = 2, hidden: int = 128, heads: int | None = None, kv_heads: int = 1,
                     intermediate: int | None = None, vocab_size: int = 4096,
                     max_position_embeddings: int = 8192, seed: int = 0, pretrain_steps: int = 0,
                     pretrain_seq_len: int = 256, pretrain_batch: int = 8, pretrain_lr: float = 3e-3,
                     overwrite: bool = False) -> Path:
    """Train the tokenizer on ``texts`` and save it with a randomly initialised tiny Qwen model.

    ``heads`` defaults to ``hidden // 64`` (head dim 64, which vLLM's CPU attention supports);
    embeddings are tied; weights are float32 safetensors. Same arguments and seed → same files.
    ``pretrain_steps`` > 0 first trains the whole model as a plain language model on ``texts`` (random
    windows of ``pretrain_seq_len`` tokens), so that LoRA SFT starts from a base that knows the
    corpus, as with a real backbone; 0 keeps random weights (fast, for tests).
    The folder is written next to ``out_dir`` and moved into place only when complete; an existing
    ``out_dir`` is replaced only with ``overwrite``.
    """
    _check_arch(arch)
    heads = heads if heads is not None else hidden // HEAD_DIM
    if heads < 1 or hidden != heads * HEAD_DIM:
        raise TinyModelError(f"--hidden {hidden} with {heads} heads: head dim must be {HEAD_DIM} (vLLM CPU "
                             f"attention). Fix: use --hidden = heads * {HEAD_DIM}")
    if kv_heads < 1 or heads % kv_heads:
        raise TinyModelError(f"heads={heads} is not a multiple of kv_heads={kv_heads}. Fix: change --kv-heads")
    out_dir = check_out(out_dir, overwrite)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    with atomic.atomic_dir(out_dir) as tmp:
        _save_tokenizer(texts, tmp, vocab_size, arch)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        config = _model_config(arch, tokenizer, layers=layers, hidden=hidden, heads=heads,
                               kv_heads=kv_heads, intermediate=intermediate or 2 * hidden,
                               max_position_embeddings=max_position_embeddings)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        if pretrain_steps > 0:
            pretrain(model, tokenizer, texts, steps=pretrain_steps, seq_len=pretrain_seq_len,
                     batch_size=pretrain_batch, lr=pretrain_lr, seed=seed)
        model.generation_config = GenerationConfig(
            bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id, do_sample=False)
        model.save_pretrained(tmp, safe_serialization=True)
        _make_readable(tmp)
    return out_dir


def pretrain(model, tokenizer, texts: Sequence[str], *, steps: int, seq_len: int = 256, batch_size: int = 8,
             lr: float = 3e-3, seed: int = 0) -> list[float]:
    """Causal-LM training of the whole tiny model on ``texts`` (each followed by <|endoftext|>).

    Returns the loss of every step. Windows are drawn with a seeded generator, so runs repeat.
    """
    import torch
    from tqdm.auto import tqdm

    eot = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    ids = [i for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"] for i in (*ids, eot)]
    stream = torch.tensor(ids, dtype=torch.long)
    if len(stream) <= seq_len + 1:
        raise TinyModelError(f"pretraining needs more than {seq_len + 1} tokens of text, got {len(stream)}. "
                             "Fix: give more texts or a smaller --pretrain-seq-len")
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
    model.train()
    losses = []
    with tqdm(range(steps), desc="pretrain tiny model", unit="step") as bar:
        for _ in bar:
            starts = torch.randint(0, len(stream) - seq_len, (batch_size,), generator=gen)
            batch = torch.stack([stream[s:s + seq_len] for s in starts.tolist()])
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def _make_readable(folder: Path) -> None:
    # mkdtemp creates the folder 0700; the model is meant to be shared like any other output.
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def _model_config(arch, tokenizer, *, layers, hidden, heads, kv_heads, intermediate, max_position_embeddings):
    from transformers import Qwen2Config, Qwen3Config

    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": max_position_embeddings,
        "tie_word_embeddings": True,
        "bos_token_id": tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        "eos_token_id": tokenizer.convert_tokens_to_ids(IM_END),
        "pad_token_id": tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        "use_cache": True,
    }
    if arch == "qwen3":
        return Qwen3Config(head_dim=HEAD_DIM, **common)
    return Qwen2Config(**common)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_tools.build.tiny_model",
        description="Build a tiny Qwen-architecture model (random or briefly pretrained weights) and a BPE tokenizer "
                    "trained locally on clinical-style texts; the folder loads in transformers, LlamaFactory, "
                    "verl and vLLM (CPU) without a model hub.")
    add_output_arguments(parser, "the model folder")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--texts", nargs="+", metavar="FILE",
                     help="training texts for the tokenizer: .jsonl files (every string value, e.g. "
                          "ShareGPT message contents) or plain text files (one text each)")
    src.add_argument("--synthetic", action="store_true",
                     help="train the tokenizer on notes and codes from data_tools.build.synth (default: a small "
                          "built-in corpus of clinical-style texts)")
    parser.add_argument("--n-admissions", type=int, default=200,
                        help="admissions to synthesise with --synthetic (default 200)")
    parser.add_argument("--arch", choices=ARCHS, default="qwen2",
                        help="qwen2 (Qwen2.5 chat format, LlamaFactory template 'qwen') or qwen3 (hybrid "
                             "thinking format, template 'qwen3'); default qwen2")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers (default 2)")
    parser.add_argument("--hidden", type=int, default=128,
                        help=f"hidden size, a multiple of the head dim {HEAD_DIM} (default 128)")
    parser.add_argument("--kv-heads", type=int, default=1, help="key/value heads (default 1)")
    parser.add_argument("--intermediate", type=int, default=None, help="MLP size (default 2 × hidden)")
    parser.add_argument("--vocab-size", type=int, default=4096,
                        help="target BPE vocabulary incl. special tokens (default 4096)")
    parser.add_argument("--max-positions", type=int, default=8192,
                        help="max_position_embeddings; must cover the SFT cutoff_len (default 8192)")
    parser.add_argument("--seed", type=int, default=0, help="weight-initialisation seed (default 0)")
    parser.add_argument("--pretrain-steps", type=int, default=0,
                        help="language-model pretraining steps on the texts before saving (default 0: random "
                             "weights); a few hundred make LoRA SFT on the synthetic task learn like a real backbone")
    parser.add_argument("--pretrain-seq-len", type=int, default=256, help="tokens per pretraining window (256)")
    parser.add_argument("--pretrain-batch", type=int, default=8, help="windows per pretraining step (8)")
    parser.add_argument("--pretrain-lr", type=float, default=3e-3,
                        help="pretraining learning rate, linear decay (3e-3)")
    args = parser.parse_args(argv)
    return run_tool("python -m data_tools.build.tiny_model", lambda: _run(args))


def _run(args: argparse.Namespace) -> None:
    check_out(args.out, args.overwrite)
    if args.texts:
        texts = read_text_files(args.texts)
    elif args.synthetic:
        texts = synthetic_texts(args.n_admissions, seed=args.seed)
    else:
        texts = builtin_texts()
    out = build_tiny_model(args.out, texts, arch=args.arch, layers=args.layers, hidden=args.hidden,
                           kv_heads=args.kv_heads, intermediate=args.intermediate,
                           vocab_size=args.vocab_size, max_position_embeddings=args.max_positions,
                           seed=args.seed, pretrain_steps=args.pretrain_steps,
                           pretrain_seq_len=args.pretrain_seq_len, pretrain_batch=args.pretrain_batch,
                           pretrain_lr=args.pretrain_lr, overwrite=args.overwrite)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    n_params = _count_params(out)
    print(f"tiny {args.arch} model → {out}: {config['num_hidden_layers']} layers, hidden "
          f"{config['hidden_size']}, vocab {config['vocab_size']}, {n_params:,} parameters, "
          f"tokenizer trained on {len(texts)} texts")


def _count_params(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as fh:
        for key in fh.keys():  # noqa: SIM118 (safe_open is not a dict)
            total += _prod(fh.get_slice(key).get_shape())
    return total


def _prod(shape) -> int:
    out = 1
    for dim in shape:
        out *= dim
    return out


if __name__ == "__main__":
    sys.exit(main())
