"""One way to load a model: bundled name, local path or Hugging Face hub id.

    model, tokenizer = load_model("tiny-arith")
    model, tokenizer = load_model("Qwen/Qwen2.5-Math-1.5B-Instruct", device="cuda")

The tokenizer comes back set up for batched generation (left padding, a pad
token). `trust_remote_code` stays off unless the caller turns it on.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_ROOT = Path(__file__).parent / "bundled"


class ModelLoadError(RuntimeError):
    """The model could not be found or read; the message says where we looked and what to do."""


def bundled_models() -> list[str]:
    return sorted(p.name for p in BUNDLED_ROOT.iterdir() if (p / "config.json").is_file()) \
        if BUNDLED_ROOT.is_dir() else []


def resolve_source(name: str) -> str:
    """The path or hub id `from_pretrained` should read for `name`."""
    bundled = BUNDLED_ROOT / name
    if (bundled / "config.json").is_file():
        return str(bundled)
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ModelLoadError(f"model path {local} has no config.json; point the `model` key "
                                 "at a directory written by save_pretrained")
        return str(local)
    return name


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but CUDA is not available here; "
                             "set `device: cpu` (or `auto`) in the YAML")
    return device


def resolve_dtype(dtype: str, device: str):
    """`auto`: bfloat16 on a GPU that supports it, float32 on the CPU."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16,
                "float16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"dtype {dtype!r}: allowed auto, float32, bfloat16, float16") from None


def load_tokenizer(name: str, revision: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    source = resolve_source(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision,
                                                  trust_remote_code=trust_remote_code)
    except OSError as err:
        raise _hub_error(name, err) from err
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


HEADS = {"causal_lm": "AutoModelForCausalLM",
         "sequence_classification": "AutoModelForSequenceClassification",  # outcome rewards
         "token_classification": "AutoModelForTokenClassification"}        # per-step rewards


def load_model(name: str, device: str = "auto", dtype: str = "auto", *,
               revision: str | None = None, trust_remote_code: bool = False,
               gpus: list[int] | None = None, head: str = "causal_lm"):
    """(model in eval mode on `device`, tokenizer) for a bundled name, local path or hub id;
    `head` picks the model class (a language model, or a reward model's head). With several
    `gpus`, the model is spread over them (accelerate's device_map "auto", limited to those
    GPUs), for models larger than one GPU."""
    import transformers

    auto_class = getattr(transformers, HEADS[head])

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    source = resolve_source(name)
    spread = spread_over(gpus) if gpus and len(gpus) > 1 else {}
    try:
        model = auto_class.from_pretrained(
            source, revision=revision, dtype=torch_dtype, trust_remote_code=trust_remote_code,
            **spread)
    except OSError as err:
        raise _hub_error(name, err) from err
    tokenizer = load_tokenizer(name, revision=revision, trust_remote_code=trust_remote_code)
    return (model if spread else model.to(device)).eval(), tokenizer


def replica_gpus(local_rank: int, per_model: int, available: int) -> list[int]:
    """The GPUs of one model copy: local rank r of a node takes GPUs r*M .. r*M+M-1."""
    first = local_rank * per_model
    if first + per_model > available:
        raise ModelLoadError(f"gpus_per_model {per_model} x {local_rank + 1} processes on this "
                             f"node needs {first + per_model} GPUs, it has {available}; start "
                             "fewer processes per node (torchrun --nproc-per-node) or lower "
                             "gpus_per_model")
    return list(range(first, first + per_model))


def spread_over(gpus: list[int]) -> dict:
    """from_pretrained's arguments that split a model over `gpus` and nothing else."""
    import importlib.util

    import torch

    if importlib.util.find_spec("accelerate") is None:
        raise ModelLoadError("gpus_per_model > 1 spreads the model with accelerate, which is "
                             "not installed: pip install '.[multi-gpu]'")
    return {"device_map": "auto",
            "max_memory": {g: torch.cuda.get_device_properties(g).total_memory for g in gpus}}


def describe(model, name: str) -> dict:
    """What a run records about its model: name, where it came from, revision, size."""
    config = model.config
    return {
        "name": name,
        "source": resolve_source(name),
        "revision": getattr(config, "_commit_hash", None),
        "architecture": (config.architectures or [type(model).__name__])[0],
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": config.vocab_size,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "device": str(next(model.parameters()).device),
    }


def _hub_error(name: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"could not load model {name!r}: it is not a bundled model ({', '.join(bundled_models())}) "
        f"nor a local directory, and the Hugging Face hub did not provide it ({err.__class__.__name__}: "
        f"{str(err).splitlines()[0] if str(err) else ''}). Offline? Download it where there is "
        f"network (`hf download {name} --local-dir DIR`), copy DIR here and set the YAML key "
        "`defaults.model` (or the section's `model`) to DIR.")
