"""The model card: what was trained on what, how well it does, and how to use it."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

from sparklm.model.gpt import GPTConfig
from sparklm.registry.publication import Publication


def render_model_card(publication: Publication, decision: Mapping[str, Any],
                      hf_export: Mapping[str, Any], samples: int = 5) -> str:  # fmt: skip
    """The card, section by section: data, model, training, validation curve, the promotion
    gate's numbers, sample generations, how to load it, and its limits."""
    p = publication
    status = "**promoted** to latest" if decision["promoted"] else "**not promoted**"
    lines = [
        f"# {p.model_name} — version {p.version}",
        "",
        f"A decoder-only transformer language model trained by the `llm_decoder` pipeline. "
        f"Promotion: {status} ({decision['reason']}).",
        "",
        *data_section(p.manifests),
        *model_section(p.manifests["train"]),
        *training_section(p.manifests["train"]),
        *validation_section(p.manifests["train"], p.contents["metrics.csv"].decode()),
        *evaluation_section(decision),
        *samples_section(p.contents["generated.jsonl"].decode(), samples),
        "## Use",
        "",
        *usage_section(p.model_name, hf_export),
        "## Limitations",
        "",
        "A small research model trained on a small corpus: it imitates the style of its "
        "training text and states falsehoods fluently. Not for any decision-making use.",
        "",
    ]
    return "\n".join(lines)


def data_section(manifests: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The corpus, the split and the tokenizer."""
    pre, tok = manifests["preprocess"]["stats"], manifests["tokenize"]["stats"]
    params = manifests["preprocess"]["params"]
    return [
        "## Data",
        "",
        f"- Corpus: `{params['input']}`",
        f"- Documents: {pre['train']['documents']:,} train / {pre['val']['documents']:,} "
        f"validation (split by document, {params['val_fraction']:.0%} held out)",
        f"- Text: {pre['train']['bytes']:,} train bytes / {pre['val']['bytes']:,} validation bytes",
        "- Dropped lines: "
        + (", ".join(f"{k} {v['lines']:,}" for k, v in sorted(pre["dropped"].items())) or "none"),
        f"- Invalid UTF-8 bytes replaced: {pre['input']['invalid_utf8_bytes_replaced']:,}",
        f"- Tokenizer: byte-level BPE, {tok['vocab_size']:,} tokens; "
        f"{tok['train']['tokens']:,} train tokens, {tok['val']['tokens']:,} validation tokens "
        f"({tok['val']['bytes_per_token']:.2f} bytes/token)",
        "",
    ]  # fmt: skip


def model_section(train: Mapping[str, Any]) -> list[str]:
    model = train["params"]["model"]
    return [
        "## Model",
        "",
        f"- {train['stats']['parameters']:,} parameters: {model['n_layer']} layers × "
        f"{model['n_embd']} wide, {model['n_head']} heads, context {model['context_len']}, "
        f"dropout {model['dropout']}",
        f"- {GPTConfig.from_dict(model).describe()}",
        "",
    ]


def training_section(train: Mapping[str, Any]) -> list[str]:
    """Replicas, rounds, the inner and outer optimizers."""
    opt = train["params"]["train"]
    return [
        "## Training",
        "",
        f"- {opt['partitions']} Spark replicas × {rounds(opt)} (batch {opt['batch_size']}; "
        f"{inner_optimizer(opt)}; "
        f"warm-up {opt['warmup_steps']}, {schedule(opt)}, weight decay {opt['weight_decay']}, "
        f"clip {opt['grad_clip']})",
        f"- Outer optimizer: `{opt['outer']}`"
        + (f" (lr {opt['outer_lr']}, momentum {opt['outer_momentum']}"
           f"{outer_warmup(opt)})"
           if opt["outer"] == "nesterov" else " (plain parameter averaging)")
        + f"; inner optimizer state {opt['optimizer_state']} across rounds",
        f"- Tokens trained: {train['stats']['tokens_trained']:,}; seed {opt['seed']}",
        *lineage_lines(train["stats"]),
        "",
    ]  # fmt: skip


def lineage_lines(stats: Mapping[str, Any]) -> list[str]:
    """Where a continued model started: its parent version, and the tokens in its weights."""
    parent = stats.get("init_from")
    if not parent:
        return ["- Started from scratch (random initialisation, its own tokenizer)"]
    score = parent["eval_bits_per_byte"]
    return [
        f"- Continued from version `{parent['version']}` (its tokenizer and weights; "
        + (f"{score:.4f} bits/byte on the evaluation set when published" if score is not None
           else "no evaluation score recorded")
        + f"): {stats['tokens_trained_total']:,} tokens trained in all"
    ]  # fmt: skip


def validation_section(train: Mapping[str, Any], metrics_csv: str) -> list[str]:
    """The final validation numbers and every round's."""
    final = train["stats"]["final"]
    rows = list(csv.DictReader(io.StringIO(metrics_csv)))
    return [
        "## Evaluation (validation split)",
        "",
        f"Final: loss {final['val_loss']:.4f} nats/token, perplexity {final['val_ppl']:.2f}, "
        f"**{final['val_bpb']:.4f} bits/byte**, next-token accuracy {final['val_acc']:.1%}.",
        "",
        "| round | tokens | train loss | val loss | val bits/byte | val acc | tokens/s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['round']} | {int(r['tokens']):,} | {float(r['train_loss']):.3f} | "
            f"{float(r['val_loss']):.3f} | {float(r['val_bpb']):.3f} | "
            f"{float(r['val_acc']):.1%} | {float(r['tokens_per_s']):,.0f} |"
            for r in rows
        ),
        "",
        "![training curves](loss.png)",
        "",
    ]  # fmt: skip


def samples_section(generated_jsonl: str, samples: int) -> list[str]:
    """The first ``samples`` generations, each with its prompt and sampling settings."""
    records = [json.loads(line) for line in generated_jsonl.splitlines() if line.strip()]
    lines = ["## Sample generations", ""]
    for r in records[:samples]:
        lines += [
            f"Prompt: `{r['prompt']}` (temperature {r['temperature']}, top-k {r['top_k']}, "
            f"top-p {r['top_p']}, seed {r['seed']})",
            "",
            "> " + (r["prompt"] + r["completion"]).replace("\n", "\n> "),
            "",
        ]
    return lines


def evaluation_section(decision: Mapping[str, Any]) -> list[str]:
    """The promotion gate's numbers: candidate and current latest on the same bytes."""
    evaluation = decision["evaluation"]
    lines = ["## Evaluation set (promotion gate)", ""]
    if evaluation["set"] is None:
        return [*lines, f"Not scored: {decision['reason']}.", ""]
    s, candidate, latest = evaluation["set"], evaluation["candidate"], evaluation["latest"]
    lines += [
        f"Both models are scored on the registry's evaluation set — {s['documents']:,} "
        f"documents, {s['bytes']:,} bytes from {s['source']}, sha256 `{s['sha256']}` — each "
        "through its own tokenizer, in bits per byte of that text.",
        "",
        "| model | bits/byte | tokens scored |",
        "|---|---:|---:|",
        f"| this version | **{candidate['bits_per_byte']:.4f}** | {candidate['tokens']:,} |",
    ]
    if latest is not None:
        lines.append(f"| latest before it ({decision['compared_to']}) | "
                     f"{latest['bits_per_byte']:.4f} | {latest['tokens']:,} |")  # fmt: skip
    return [*lines, "", f"Decision: {decision['reason']}.", ""]


def usage_section(model_name: str, hf_export: Mapping[str, Any]) -> list[str]:
    """How to load the version: with transformers (``hf/``), or with this project's code."""
    lines = []
    if hf_export["exported"]:
        lines += [
            f"With Hugging Face `transformers` (`hf/` is a stock `{hf_export['architecture']}`; "
            "no custom code):",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            'model, tok = AutoModelForCausalLM.from_pretrained("hf"), '
            'AutoTokenizer.from_pretrained("hf")',
            'print(tok.decode(model.generate(**tok("The history of", return_tensors="pt"), '
            "max_new_tokens=40)[0], skip_special_tokens=True))",
            "```",
            "",
            "(`hf` is this version's `hf/` folder, downloaded; the tokenizer starts every text "
            "with the end-of-document token, as training did, and generation stops at it.)",
            "",
        ]
    else:
        lines += [f"No `transformers` export: {hf_export['reason']}.", ""]
    return [
        *lines,
        "Without Spark or Airflow, from the registry:",
        "",
        "```bash",
        f"python -m jobs.generate --registry REGISTRY --model-name {model_name} "
        '--prompt "The history of"',
        "```",
        "",
        "Weights are `model.safetensors` (load with `sparklm.model.weights.load_model` and "
        "`config.json`); the tokenizer is `tokenizer.json` (HF `tokenizers`). `run.json` "
        "lists every input manifest, parameter and checksum.",
        "",
    ]


def inner_optimizer(opt: Mapping[str, Any]) -> str:
    """The inner optimizer in words; training settings from before Muon existed mean AdamW,
    and from before ``muon_adamw_lr`` existed, AdamW beside Muon ran at ``lr``."""
    if opt.get("optimizer", "adamw") == "muon":
        return (
            f"Muon on the blocks' matrices (peak lr {opt['muon_lr']}, momentum "
            f"{opt['muon_momentum']}) and AdamW on the rest (peak lr "
            f"{opt.get('muon_adamw_lr', opt['lr'])})"
        )
    return f"AdamW, peak lr {opt['lr']}"


def schedule(opt: Mapping[str, Any]) -> str:
    if opt.get("schedule", "cosine") == "wsd":
        return (
            f"stable, then a linear decay over the last {opt['decay_fraction']:.0%} of the "
            f"steps to {opt['min_lr_ratio']} × peak (WSD)"
        )
    return f"cosine decay to {opt.get('min_lr_ratio', 0.1)} × peak"


def outer_warmup(opt: Mapping[str, Any]) -> str:
    """The outer momentum's warm-up, if any; settings from before it existed had none."""
    warmup = opt.get("outer_momentum_warmup", 0)
    return f", warmed up over {warmup} rounds" if warmup else ""


def rounds(opt: Mapping[str, Any]) -> str:
    """Rounds × inner steps, the early short-interval rounds first if there were any."""
    early = opt.get("early_rounds", 0)
    later = f"{opt['rounds'] - early} rounds × {opt['local_steps']} inner steps"
    if not early:
        return later
    return f"({early} rounds × {opt['early_local_steps']} + {later})"
