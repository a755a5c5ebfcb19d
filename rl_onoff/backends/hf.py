"""The reference engine: our own batched loop over a Hugging Face model (rl_onoff.generation)."""

from __future__ import annotations


class HFBackend:
    name = "hf"

    def __init__(self, stage):
        from rl_onoff.generation import eos_token_ids

        self.cfg = stage.cfg
        self.model, self.tokenizer = stage.load_model()
        self.model_info = stage.model_info
        self.eos_ids = eos_token_ids(self.model, self.tokenizer)

    def generate(self, prompt_ids: list[list[int]], seeds: list[int]):
        from rl_onoff.generation import generate

        s = self.cfg.sampling
        return generate(self.model, self.tokenizer, prompt_ids, s.params, s.max_new_tokens,
                        stop=s.stop, eos_ids=self.eos_ids, seeds=seeds)

    @property
    def context_length(self) -> int | None:
        from rl_onoff.stage import context_length
        return context_length(self.model)
