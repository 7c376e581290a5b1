"""An adapter someone else trained (`loraleak audit`): found, checked against its base model, loaded.

Checked before it is used, each a clear error: the folder holds a PEFT `adapter_config.json` of the
LoRA family (LoRA, DoRA, rsLoRA are all PEFT's "LORA") and safetensors weights (a pickle
`adapter_model.bin` only with `allow_pickle`); every adapted module exists in the base model with
the shapes the adapter's matrices expect. A base model named differently from the adapter's
`base_model_name_or_path` is a warning, not an error (a local copy of the same model is fine).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache import sha256_file
from .errors import UserError


class AdapterError(UserError, ValueError):
    """The adapter cannot be audited as given; the message says what to do."""


@dataclass(frozen=True)
class GivenAdapter:
    path: Path
    sha256: str  # of its weights file: the adapter's identity in results and cache keys
    peft_type: str
    base_model: str  # base_model_name_or_path from its config ("" when absent)
    variant: str  # LoRA, DoRA or rsLoRA


def find_adapter(source: str, base: str, *, allow_pickle: bool = False, echo: Callable[[str], Any] = print):
    """The adapter at `source` (a directory, or a hub id fetched into the Hugging Face cache), checked."""
    path = Path(source).expanduser()
    if not path.is_dir():
        path = _from_hub(source)
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise AdapterError(f"adapter {path} has no adapter_config.json: give the folder PEFT's save_pretrained wrote")
    try:
        config = json.loads(config_file.read_text())
    except ValueError as e:
        raise AdapterError(f"{config_file} is not valid JSON ({e}); re-save the adapter") from None
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise AdapterError(
            f"adapter {path} is a {peft_type or 'untyped'} adapter; loraleak audits the LoRA family "
            "(LoRA, DoRA, rsLoRA) only"
        )
    weights = _weights(path, allow_pickle)
    named = str(config.get("base_model_name_or_path") or "")
    if named and not _same_base(named, base):
        echo(f"[loraleak] warning: adapter {path} was trained on '{named}', audited on '{base}': same weights?")
    variant = "DoRA" if config.get("use_dora") else "rsLoRA" if config.get("use_rslora") else "LoRA"
    return GivenAdapter(path, sha256_file(weights), peft_type, named, variant)


def _same_base(named: str, base: str) -> bool:
    """Is the adapter's `base_model_name_or_path` the model audited on? The same name or folder name,
    or the folder loraleak converted a bundled alias into (what its own runs record)."""
    from .models import ALIASES

    alias = ALIASES.get(base)
    return Path(named).name == Path(base).name or (alias is not None and Path(named) == alias.cache_dir())


def _weights(path: Path, allow_pickle: bool) -> Path:
    safe, pickled = path / "adapter_model.safetensors", path / "adapter_model.bin"
    if safe.is_file():
        return safe
    if pickled.is_file() and not allow_pickle:
        raise AdapterError(
            f"adapter {path} holds only pickle weights (adapter_model.bin), which can run code when loaded: "
            "convert them to safetensors, or pass --allow-pickle (model.allow_pickle: true) if you trust the file"
        )
    if pickled.is_file():
        return pickled
    raise AdapterError(f"adapter {path} has no weights (adapter_model.safetensors)")


def _from_hub(source: str) -> Path:
    if source.count("/") != 1 or source.startswith((".", "/", "~")):
        raise AdapterError(f"adapter '{source}' is neither a directory nor a Hugging Face id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, allow_patterns=["adapter_config.json", "adapter_model.*"]))
    except Exception as e:  # no network, no such repo, no access
        raise AdapterError(
            f"could not fetch adapter '{source}' from the Hugging Face hub ({type(e).__name__}); "
            "download it where there is network and give the local folder"
        ) from None


def check_fit(model: Any, adapter: GivenAdapter) -> None:
    """Every adapted module exists in `model` and its LoRA matrices fit it: lora_A is [r, in_features],
    lora_B is [out_features, r]. Read from the safetensors header, before PEFT loads anything."""
    if adapter.path.joinpath("adapter_model.safetensors").is_file():
        shapes = _header_shapes(adapter.path / "adapter_model.safetensors")
    else:
        return  # a pickle checkpoint (allowed by the user): PEFT's own error will have to do
    for key, shape in shapes.items():
        if ".lora_A." not in key and ".lora_B." not in key:
            continue
        name = key.split(".lora_")[0].removeprefix("base_model.model.")
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise AdapterError(f"adapter {adapter.path} adapts '{name}', which this base model does not have") from None
        out_f, in_f = getattr(module, "out_features", None), getattr(module, "in_features", None)
        if out_f is None or in_f is None:
            continue  # not a Linear (an embedding, a Conv1D): PEFT checks what it loads
        matrix, got, want = ("lora_A", shape[1], in_f) if ".lora_A." in key else ("lora_B", shape[0], out_f)
        if got != want:
            raise AdapterError(
                f"adapter {adapter.path} does not fit this base model: '{name}' is [{out_f}, {in_f}] (out, in) but "
                f"the adapter's {matrix} is {list(shape)}; audit it on the model it was trained on"
            )


def _header_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes from a safetensors header (8-byte length, then JSON), without reading tensors."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        try:
            header = json.loads(f.read(size))
        except ValueError:
            raise AdapterError(f"{path} is not a safetensors file (truncated?); re-save the adapter") from None
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}
