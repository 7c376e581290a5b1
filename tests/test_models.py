import pytest
import torch

from loraleak.models import ModelError, load_model


def test_tiny_llama_is_small_deterministic_and_has_a_pad_token():
    (m1, tok), (m2, _) = load_model("tiny-llama", "float32"), load_model("tiny-llama", "float32")
    n = sum(p.numel() for p in m1.parameters())
    assert 100_000 < n < 1_000_000
    assert tok.pad_token is not None
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_dtype_is_applied():
    model, _ = load_model("tiny-llama", "bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("name, message", [
    ("no-such-model", "unknown model 'no-such-model'"),
    ("/nonexistent/model.gguf", "GGUF file '/nonexistent/model.gguf' does not exist"),
])
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
