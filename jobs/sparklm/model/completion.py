"""Prompt completion: the sampling settings and the loaded model that the generate job runs.

They live in the library, not in ``jobs/generate.py``, because executors use them: a
class defined in a job script is pickled by value, and the cloudpickle in Spark 3.5
(what EMR 7.x runs) rebuilds such a dataclass without its fields; a class imported
from ``sparklm`` (shipped with ``--py-files``) is pickled by reference.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from sparklm import settings


@dataclass(frozen=True)
class Sampling:
    """How to sample; recorded next to every completion so it can be reproduced. Defaults and
    bounds are the settings' (``sampling seed`` is the ``sample_seed`` setting)."""

    max_new_tokens: int = settings.default("max_new_tokens")
    temperature: float = settings.default("temperature")
    top_k: int = settings.default("top_k")
    top_p: float = settings.default("top_p")
    seed: int = settings.default("sample_seed")

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            settings.SETTINGS["sample_seed" if name == "seed" else name].check(value)


class Sampler:
    """A loaded model and tokenizer that turn a prompt into a completion record."""

    def __init__(self, weights: bytes, config: dict, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer

        from sparklm.data.tokenizer import special_ids
        from sparklm.model.weights import load_model

        self.model = load_model(weights, config)
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.eod = special_ids(self.tokenizer)["eod"]

    def complete(self, prompt: str, sampling: Sampling, index: int) -> dict:
        """Sample one completion; the seed depends on the prompt's index, not on where it runs."""
        from sparklm.data.tokenizer import decode
        from sparklm.model.decoding import Decoding, generate

        # A document starts after an end-of-document token, as in the training stream.
        prompt_ids = [self.eod, *self.tokenizer.encode(prompt, add_special_tokens=False).ids]
        started = time.perf_counter()
        new_ids = generate(
            self.model, prompt_ids, sampling.max_new_tokens,
            Decoding(sampling.temperature, sampling.top_k or None, sampling.top_p,
                     sampling.seed + index),
            stop_ids=(self.eod,),
        )  # fmt: skip
        seconds = time.perf_counter() - started
        return {
            "index": index,
            "prompt": prompt,
            "completion": decode(self.tokenizer, new_ids),
            **asdict(sampling),
            "seed": sampling.seed + index,
            "prompt_tokens": len(prompt_ids) - 1,
            "new_tokens": len(new_ids),
            "stopped_by": "end_of_document" if len(new_ids) < sampling.max_new_tokens else "length",
            "tokens_per_s": round(len(new_ids) / seconds, 2) if seconds > 0 else None,
        }
