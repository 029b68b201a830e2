"""Checkpoints load from the Hugging Face layout; bad ones fail with one clear error."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine import CheckpointError, DiffusionEngine


@pytest.fixture
def ckpt_copy(tiny_checkpoint, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, dst)
    return dst


def test_loads_config_weights_tokenizer_and_skips_vision_once(tiny_checkpoint, caplog):
    with caplog.at_level(logging.INFO, logger="redraft.engine"):
        engine = DiffusionEngine.from_pretrained(tiny_checkpoint, device="cpu", dtype=torch.float32)
    vision_msgs = [r for r in caplog.records if "vision" in r.getMessage()]
    assert len(vision_msgs) == 1 and "skipped 16" in vision_msgs[0].getMessage()
    cfg = engine.config
    assert cfg.canvas_length == 16 and cfg.vocab_size == 512
    assert [l.kind for l in cfg.layers] == ["sliding_attention", "full_attention"] * 2
    assert [(l.head_dim, l.num_kv_heads) for l in cfg.layers] == [(16, 2), (32, 1), (16, 2), (32, 1)]
    # K = V on full layers: no v_proj there (the fused projection holds q, k and, on sliding layers only, v)
    attn = [layer.self_attn.qkv_proj.parts for layer in engine.model.layers[:2]]
    assert list(attn[1]) == ["q_proj", "k_proj"] and list(attn[0]) == ["q_proj", "k_proj", "v_proj"]
    # the encoder's own layer scalars are loaded, distinct from the decoder's
    assert not torch.equal(engine.model.layers[0].encoder_layer_scalar, engine.model.layers[0].layer_scalar)
    assert engine.tokenizer.decode(engine.tokenizer.encode("def f(x): return 'é'")) == "def f(x): return 'é'"
    assert "<start_of_turn>user" in engine.apply_chat_template([{"role": "user", "content": "hi"}])


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        DiffusionEngine.from_pretrained(tmp_path / "nope")


def test_not_a_checkpoint_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        DiffusionEngine.from_pretrained(tmp_path)


def test_wrong_model_type_is_named(ckpt_copy):
    cfg = json.loads((ckpt_copy / "config.json").read_text())
    cfg["model_type"] = "llama"
    (ckpt_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model_type='llama'"):
        DiffusionEngine.from_pretrained(ckpt_copy)


def test_truncated_safetensors_names_the_file(ckpt_copy):
    f = ckpt_copy / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        DiffusionEngine.from_pretrained(ckpt_copy)


def test_missing_unexpected_and_misshaped_tensors_listed_together(ckpt_copy):
    f = ckpt_copy / "model.safetensors"
    tensors = load_file(f)
    del tensors["model.decoder.layers.1.mlp.up_proj.weight"]
    tensors["model.decoder.layers.0.self_attn.q_proj.weight"] = torch.zeros(3, 64)
    tensors["model.decoder.mystery.weight"] = torch.zeros(2, 2)
    save_file(tensors, f)
    with pytest.raises(CheckpointError) as err:
        DiffusionEngine.from_pretrained(ckpt_copy)
    msg = str(err.value)
    assert "3 problems" in msg
    assert "missing   model.decoder.layers.1.mlp.up_proj.weight: expected [96, 64]" in msg
    assert "bad shape model.decoder.layers.0.self_attn.q_proj.weight: expected [64, 64], found [3, 64]" in msg
    assert "unexpected model.decoder.mystery.weight [2, 2]" in msg


def test_missing_encoder_scalar_is_named_by_its_checkpoint_name(ckpt_copy):
    f = ckpt_copy / "model.safetensors"
    tensors = load_file(f)
    del tensors["model.encoder.language_model.layers.2.layer_scalar"]
    save_file(tensors, f)
    with pytest.raises(CheckpointError, match=r"model\.encoder\.language_model\.layers\.2\.layer_scalar"):
        DiffusionEngine.from_pretrained(ckpt_copy)


def test_missing_shard_and_pickle_only(ckpt_copy, tmp_path):
    (ckpt_copy / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"model.decoder.norm.weight": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(CheckpointError, match="model-00001-of-00002.safetensors"):
        DiffusionEngine.from_pretrained(ckpt_copy)
    (ckpt_copy / "model.safetensors.index.json").unlink()
    (ckpt_copy / "model.safetensors").rename(ckpt_copy / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="safetensors only"):
        DiffusionEngine.from_pretrained(ckpt_copy)


def test_bad_config_value_names_the_key(ckpt_copy):
    cfg = json.loads((ckpt_copy / "config.json").read_text())
    cfg["text_config"]["top_k_experts"] = 99
    (ckpt_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="top_k_experts"):
        DiffusionEngine.from_pretrained(ckpt_copy)


def test_nan_or_inf_weights_are_refused_at_load_naming_the_tensor(ckpt_copy):
    f = ckpt_copy / "model.safetensors"
    tensors = load_file(f)
    tensors["model.decoder.layers.1.mlp.up_proj.weight"][3, 5] = float("inf")
    save_file(tensors, f)
    with pytest.raises(CheckpointError, match=r"tensor model.decoder.layers.1.mlp.up_proj.weight holds 1 NaN/Inf "
                                              r"values of \d+ \(as torch.float32\)"):
        DiffusionEngine.from_pretrained(ckpt_copy, dtype="float32")
    tensors = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, f)
    with pytest.raises(CheckpointError, match=r"tensor model\.\S+ holds \d+ NaN/Inf values"):
        DiffusionEngine.from_pretrained(ckpt_copy, dtype="float32")


def test_float16_overflow_is_refused(ckpt_copy):
    f = ckpt_copy / "model.safetensors"
    tensors = load_file(f)
    tensors["model.decoder.norm.weight"][0] = 1e6  # finite in float32, Inf in float16
    save_file(tensors, f)
    DiffusionEngine.from_pretrained(ckpt_copy, dtype="float32")
    with pytest.raises(CheckpointError, match=r"model.decoder.norm.weight holds 1 NaN/Inf .*as torch.float16"):
        DiffusionEngine.from_pretrained(ckpt_copy, dtype="float16")


def test_header_only_shape_check_reads_no_tensor_data(ckpt_copy):
    from engine.weights import check_tensor_shapes

    check_tensor_shapes(ckpt_copy)
    f = ckpt_copy / "model.safetensors"
    tensors = load_file(f)
    tensors["model.decoder.layers.0.self_attn.q_proj.weight"] = torch.zeros(3, 64)
    save_file(tensors, f)
    header_len = int.from_bytes(f.read_bytes()[:8], "little")
    with open(f, "r+b") as fh:  # garbage in every tensor's data: a header-only check cannot notice
        fh.seek(8 + header_len)
        fh.write(b"\xff" * (f.stat().st_size - 8 - header_len))
    with pytest.raises(CheckpointError, match=r"bad shape model.decoder.layers.0.self_attn.q_proj.weight: "
                                              r"expected \[64, 64\], found \[3, 64\]"):
        check_tensor_shapes(ckpt_copy)
