"""Registry versions written by hand, laid out as publish lays them out."""

from __future__ import annotations

import hashlib
import json

from helpers.corpora import write_text
from sparklm.model.gpt import GPT, GPTConfig
from sparklm.model.weights import model_bytes

CONFIG = GPTConfig(vocab_size=300, context_len=16, n_layer=1, n_head=2, n_embd=16,
                   position="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True)  # fmt: skip


def publish_by_hand(registry, version="v1", *, lineage=None, latest=True, eval_bpb=2.5) -> str:
    """A complete version of model ``m`` in ``registry`` (a folder): weights, config, tokenizer,
    metrics, run.json with their checksums and the tokenize Params, then promotion.json."""
    folder = registry / "m" / version
    files = {
        "model.safetensors": model_bytes(GPT(CONFIG)),
        "config.json": json.dumps(CONFIG.to_dict()).encode(),
        "tokenizer.json": b'{"fake": "tokenizer"}',
        "metrics.csv": b"round,tokens,val_bpb\n1,4096,3.1\n2,8192,2.9\n",
    }
    for name, data in files.items():
        write_text(folder / name, data)
    run = {"params": {"tokenize": {"vocab_size": 512}},
           "artifacts": [{"path": n, "sha256": hashlib.sha256(d).hexdigest()}
                         for n, d in files.items()],
           **({"lineage": lineage} if lineage else {})}  # fmt: skip
    write_text(folder / "run.json", json.dumps(run))
    promotion = {"promoted": True, "evaluation": {"candidate": {"bits_per_byte": eval_bpb}}}
    write_text(folder / "promotion.json", json.dumps(promotion))
    if latest:
        pointer = {"version": version, "uri": f"file://{folder}"}
        write_text(registry / "m" / "latest.json", json.dumps(pointer))
    return f"file://{folder}"
