"""Training: the split, the example layouts (the tasks' own), the objective's forward (the engine's), resume,
and the exported checkpoint (the engine and transformers read it with the same logits)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from engine import DiffusionEngine
from engine.tokenizer import Tokenizer
from engine.training import LayoutSpec, ModelSpec, Trainer, TrainSpec
from engine.training.corpus import list_files, split_of
from engine.training.examples import ExampleMaker, collate
from engine.training.model_io import build_model, export_checkpoint
from engine.training.objective import decoder_forward, encoder_forward, logits
from engine.training.tokenizer_train import SPECIAL_TOKENS, save_tokenizer, train_bpe

SOURCE = '''import os


def area(width, height):
    """The area of a rectangle."""
    if width < 0 or height < 0:
        raise ValueError("negative side")
    return width * height


class Box:
    def __init__(self, size):
        self.size = size

    def volume(self):
        return self.size ** 3
'''

TINY = ModelSpec(vocab_size=320, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=16, global_head_dim=16, num_global_key_value_heads=1,
                 sliding_window=64, num_experts=4, top_k_experts=2, moe_intermediate_size=16, canvas_length=8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for i in range(40):
        (root / f"mod{i}.py").write_text(SOURCE.replace("area", f"area{i}").replace("Box", f"Box{i}"))
    (root / "tests").mkdir()
    (root / "tests" / "test_mod.py").write_text("assert True\n")
    return root


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, corpus) -> Path:
    path = tmp_path_factory.mktemp("tok")
    save_tokenizer(train_bpe([(corpus / f"mod{i}.py").read_text() for i in range(40)], TINY.vocab_size), path)
    return path


def test_split_is_fixed_disjoint_and_skips_tests(corpus):
    every = list_files(corpus)
    parts = [list_files(corpus, s) for s in ("train", "validation", "test")]
    assert sorted(sum(parts, [])) == every and len(set(sum(parts, []))) == len(every)
    assert "tests/test_mod.py" not in every
    assert all(split_of(p) == "train" for p in parts[0])
    assert split_of("json/decoder.py") == split_of("json/decoder.py")  # a pure function of the path


def test_tokenizer_has_gemma_special_ids(tok_dir):
    tok = Tokenizer(tok_dir)
    assert [tok.token_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert tok.bos_id == 2 and tok.decode(tok.encode("x = 'é'\n")) == "x = 'é'\n"


def test_line_example_is_the_infill_tasks_layout(tok_dir):
    """A line hole's training canvas equals what the infill task builds for the same hole and budget."""
    from engine.tasks.editing import EditJob, Hole, _EditRun, _TextSide

    tok = Tokenizer(tok_dir)
    maker = ExampleMaker(tok, LayoutSpec(canvas_length=16, context_tokens=24), eos_id=1, pad_id=0)
    start = SOURCE.index("    return width")
    end = SOURCE.index("\n", start)
    ex = maker.hole("line", SOURCE, start, end, budget=10, rng=random.Random(0))
    job = EditJob(SOURCE, [(start, end)], fill_only=True, holes=[Hole(start, end, 10)], prompt_head=tok.encode(""))
    window = _EditRun(job, 0, _TextSide(tok, 16, 4096), 24).next_window()
    prompt, known = window.prompt_ids, window.known
    assert ex.context == prompt
    assert ex.known == [k != -1 for k in known] + [True] * (16 - len(known))
    assert [t for t, k in zip(ex.canvas, ex.known) if k][:len(known) - 10] == known[10:]
    fill = tok.encode(SOURCE[start:end], add_bos=False)
    assert ex.canvas[:10] == fill + [1] * (10 - len(fill))  # the fill, then EOS up to the budget


def test_training_forward_is_the_engines(tmp_path, tok_dir):
    """The objective's no-cache forward gives the engine's canvas logits on the exported checkpoint."""
    model = build_model(TINY, seed=3)
    path = export_checkpoint(model, TINY, tok_dir, tmp_path / "ckpt")
    engine = DiffusionEngine.from_pretrained(path, device="cpu", dtype=torch.float32)
    prompts = [[2, 50, 60, 70, 80], [2, 90]]
    canvas = torch.randint(0, TINY.vocab_size, (2, TINY.canvas_length), generator=torch.Generator().manual_seed(0))
    ours = engine.canvas_logits(prompts, canvas)
    ctx = torch.tensor([[2, 50, 60, 70, 80], [0, 0, 0, 2, 90]])
    valid = ctx != 0
    with torch.no_grad():
        _, kvs = encoder_forward(model, ctx, valid)
        trained = logits(model, decoder_forward(model, canvas, None, kvs, valid))
    torch.testing.assert_close(trained, ours, atol=1e-4, rtol=0)


def test_exported_checkpoint_matches_transformers(tmp_path, tok_dir):
    transformers = pytest.importorskip("transformers")
    model = build_model(TINY, seed=5)
    path = export_checkpoint(model, TINY, tok_dir, tmp_path / "ckpt")
    ref = transformers.DiffusionGemmaForBlockDiffusion.from_pretrained(path).eval()
    engine = DiffusionEngine.from_pretrained(path, device="cpu", dtype=torch.float32)
    prompt = [2, 11, 12, 13, 14, 15, 16]
    canvas = torch.randint(0, TINY.vocab_size, (1, TINY.canvas_length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = ref(input_ids=torch.tensor([prompt]), decoder_input_ids=canvas).logits
    torch.testing.assert_close(engine.canvas_logits([prompt], canvas), theirs, atol=1e-4, rtol=0)


def _spec(out, corpus, **kw) -> TrainSpec:
    base = dict(out_dir=str(out), corpus_root=str(corpus), model=TINY, batch_size=4, lr=3e-3, warmup_steps=2,
                max_minutes=60, eval_every=5, val_examples=4, tokenizer_chars=50_000, checkpoint_seconds=1e9,
                layout=LayoutSpec(canvas_length=8, context_tokens=16, line_budget=8, max_span_tokens=6))
    base.update(kw)
    return TrainSpec(**base)


def test_training_learns_and_resumes_exactly(tmp_path, corpus):
    """Loss falls; a run stopped at step 6 and resumed to 12 ends with the weights of an unstopped 12-step run."""
    whole = Trainer(_spec(tmp_path / "a", corpus, max_steps=12), log=lambda s: None)
    first_val = whole.validate()["loss"]
    whole.run()
    assert whole.validate()["loss"] < first_val
    part = Trainer(_spec(tmp_path / "b", corpus, max_steps=6), log=lambda s: None)
    part.run()
    resumed = Trainer(_spec(tmp_path / "b", corpus, max_steps=12), log=lambda s: None)
    assert resumed.step == 6
    resumed.run()
    for (n, a), (_, b) in zip(whole.model.named_parameters(), resumed.model.named_parameters()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=n)
    best = tmp_path / "a" / "best"
    assert json.loads((best / "training.json").read_text())["step"] in (5, 10, 12)
    engine = DiffusionEngine.from_pretrained(best, device="cpu", dtype=torch.float32)
    assert engine.canvas_length == 8


def test_collate_left_pads():
    from engine.training.examples import Example

    b = collate([Example("line", [2, 5], [1] * 4, [False] * 4), Example("line", [2, 5, 6, 7], [1] * 4, [True] * 4)], 0)
    assert b.context_BT.tolist() == [[0, 0, 2, 5], [2, 5, 6, 7]]
    assert b.valid_BT.tolist() == [[False, False, True, True], [True] * 4]


def _train_yaml(tmp_path, corpus) -> Path:
    cfg = {
        "model": {"vocab_size": 320, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                  "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "global_head_dim": 16,
                  "sliding_window": 64, "num_experts": 4, "top_k_experts": 2, "moe_intermediate_size": 16,
                  "canvas_length": 8},
        "data": {"corpus": str(corpus), "context_tokens": 16, "line_budget": 8, "tokenizer_chars": 50_000},
        "train": {"out_dir": str(tmp_path / "run"), "batch_size": 4, "warmup_steps": 2, "max_steps": 6,
                  "eval_every": 3, "val_examples": 4, "export": str(tmp_path / "shipped"), "log_every_s": 0.01},
    }
    path = tmp_path / "train.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def test_redraft_train_command_exports_and_resumes(tmp_path, corpus, capsys):
    from pipelines.cli import main

    cfg = _train_yaml(tmp_path, corpus)
    assert main(["train", str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert "trained 6 steps" in out and "copied the best checkpoint" in out
    assert "tok/s" in err and "val loss" in err  # plain progress lines off a terminal
    shipped = tmp_path / "shipped"
    assert DiffusionEngine.from_pretrained(shipped, device="cpu", dtype=torch.float32).tokenizer is not None
    assert main(["train", str(cfg), "--set", "train.max_steps=8"]) == 0
    out, err = capsys.readouterr()
    assert "at step 6" in err and "trained 8 steps" in out  # resumed, not restarted


@pytest.mark.parametrize("override, field", [("train.batch_size=0", "train.batch_size"),
                                             ("data.kind_weights={line: 0}", "data.kind_weights"),
                                             ("model.hidden_sise=64", "model.hidden_sise")])
def test_redraft_train_config_errors_name_the_field(tmp_path, corpus, capsys, override, field):
    from pipelines.cli import main

    assert main(["train", str(_train_yaml(tmp_path, corpus)), "--set", override]) == 2
    assert field in capsys.readouterr().err
