"""Prompt completion: the sampling settings and the loaded model that the generate job runs.

These classes live in the library, not in ``jobs/generate.py``, because executors
use them. spark-submit runs a job script as ``__main__``, so cloudpickle ships
anything defined there *by value*; the cloudpickle inside pyspark 3.5 (what EMR 7.x
runs) rebuilds a dataclass pickled that way without its fields
(cloudpipe/cloudpickle#386), and ``asdict(sampling)`` came back empty on every
executor. A class imported from ``sparklm`` (shipped with ``--py-files``) is pickled
by reference and arrives whole on any Spark version.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from sparklm.errors import PipelineError


@dataclass(frozen=True)
class Sampling:
    """How to sample; recorded next to every completion so it can be reproduced."""

    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    seed: int = 0

    def check(self) -> None:
        if self.max_new_tokens < 1 or self.max_new_tokens > 100_000:
            raise PipelineError("--max-new-tokens must be between 1 and 100000")
        if self.temperature < 0:
            raise PipelineError("--temperature must be >= 0 (0 means greedy decoding)")
        if self.top_k < 0:
            raise PipelineError("--top-k must be >= 0 (0 disables it)")
        if not 0 < self.top_p <= 1:
            raise PipelineError("--top-p must be in (0, 1] (1 disables it)")


class Sampler:
    """A loaded model and tokenizer that turn a prompt into a completion record."""

    def __init__(self, weights: bytes, config: dict, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer

        from sparklm.tokenizer import special_ids
        from sparklm.weights import load_model

        self.model = load_model(weights, config)
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.eod = special_ids(self.tokenizer)["eod"]

    def complete(self, prompt: str, sampling: Sampling, index: int) -> dict:
        """Sample one completion; the seed depends on the prompt's index, not on where it runs."""
        from sparklm.sampling import generate
        from sparklm.tokenizer import decode

        # A document starts after an end-of-document token, as in the training stream.
        prompt_ids = [self.eod, *self.tokenizer.encode(prompt, add_special_tokens=False).ids]
        started = time.perf_counter()
        new_ids = generate(
            self.model, prompt_ids, sampling.max_new_tokens, temperature=sampling.temperature,
            top_k=sampling.top_k or None, top_p=sampling.top_p, seed=sampling.seed + index,
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
