"""Sampling engines behind one interface, chosen by `00_sample.backend`.

A backend is built once per run from the stage (it loads its model its own way) and
then turns prompts into responses:

    engine = load_backend("hf", stage)
    generated = engine.generate(prompt_ids, seeds)   # list[rl_onoff.generation.Generated]

`prompt_ids` are token-id lists built by the stage's one template code; `seeds[i]` is
the sample's own seed (rl_onoff.generation.sample_seed), so a sample never depends on
its batch. Each backend samples exactly the stage's `sampling` block and nothing from
the checkpoint's generation_config. Adding a backend: a module here with a class taking
`(stage)` and having `generate`, `eos_ids`, `tokenizer`, `model_info` and `name`, plus
its line in BACKENDS.
"""

from __future__ import annotations

import importlib

BACKENDS = {
    "hf": "rl_onoff.backends.hf:HFBackend",
    "vllm": "rl_onoff.backends.vllm:VLLMBackend",
}


def load_backend(name: str, stage):
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(stage)
