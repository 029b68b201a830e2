"""The throughput benchmark and the full-size GPU script, run small on the CPU: they complete and report what
they promise (entries, fields, files). No timing is asserted; the FLOP accounting is checked against torch's
own counter."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu_check, gpu_full_size, throughput


@pytest.mark.slow
def test_throughput_quick_writes_json_and_png(tmp_path, capsys):
    throughput.main(["--quick", "--out", str(tmp_path / "tp")])
    report = json.loads((tmp_path / "tp.json").read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert [r["batch"] for r in report["results"]] == [1, 2]
    for row in report["results"]:
        for which in ("redraft", "transformers"):
            m = row[which]
            assert m["tokens"] == row["batch"] * report["new_tokens"] and m["tok_s"] > 0
            assert m["passes_per_token"] == report["steps"] / 32  # one 32-token canvas, fixed passes
            assert isinstance(m["peak_memory_mib"], float)
            assert m["calls"] == report["repeats"] and m["min_seconds"] <= m["median_seconds"]
        assert row["ratio"] == round(row["redraft"]["tok_s"] / row["transformers"]["tok_s"], 2)
    assert (tmp_path / "tp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gpu_script_runs_small_on_cpu(tmp_path, capsys):
    quantization = "int8"  # the unquantized model runs in the budget test below
    out = tmp_path / "full.json"
    gpu_full_size.main(["--small", "--steps", "2", "--batch", "1", "2", "--quantization", quantization,
                        "--out", str(out)])
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["device"] == "cpu" and report["quantization"] == quantization
    cfg = gpu_full_size.build_config(gpu_full_size.SMALL)
    from engine.quantize import weight_bytes

    assert report["weight_bytes"] == weight_bytes(cfg, quantization, "float32")  # measured on the built model
    first, second = report["results"]
    assert (first["batch"], second["batch"]) == (1, 2)
    assert first["tokens"] == cfg.canvas_length and second["tokens"] == 2 * cfg.canvas_length
    assert first["passes_per_token"] == 2 / cfg.canvas_length
    assert 0 < first["memory_bound_fraction"] and first["memory_bound_tok_s"] > 0
    assert "memory_bound_tok_s" not in second and second["peak_flops_fraction"] > 0
    assert report["peak_source"].startswith("measured") and report["copy_bandwidth_gb_s"] > 0


def test_budget_skips_batches_that_would_not_finish(tmp_path, capsys):
    gpu_full_size.main(["--small", "--steps", "1", "--batch", "1", "64", "--budget-s", "0", "--out",
                        str(tmp_path / "x.json")])
    first, second = json.loads((tmp_path / "x.json").read_text())["results"]
    assert first["batch"] == 1 and "tok_s" in first  # the first batch size always runs
    assert second["batch"] == 64 and "budget" in second["skipped"]


def test_flop_count_matches_torch_counter():
    """``run_flops`` against ``FlopCounterMode`` on a real generate call (reference expert path, whose per-expert
    matmuls the counter sees; it does not count CPU attention kernels, so attention is left out of both)."""
    from torch.utils.flop_counter import FlopCounterMode

    from engine import DiffusionEngine, SamplingParams

    cfg = gpu_full_size.build_config(gpu_full_size.SMALL)
    model = gpu_full_size.random_model(cfg, torch.device("cpu"), torch.float32)
    for layer in model.layers:
        layer.experts.use_grouped = False
    engine = DiffusionEngine(model, None, "small")
    steps, prompt_len, batch = 6, 20, 1
    params = SamplingParams(max_new_tokens=cfg.canvas_length, max_denoising_steps=steps, fixed_steps=True,
                            ignore_eos=True)
    with FlopCounterMode(display=False) as counter:
        engine.generate_ids([[5] * prompt_len] * batch, params, seeds=list(range(batch)))
    attention = batch * (gpu_full_size._attention_flops(cfg, prompt_len, 0, prompt_len) / 2
                         + steps * gpu_full_size._attention_flops(cfg, cfg.canvas_length, prompt_len,
                                                                  cfg.canvas_length))
    counted = gpu_full_size.run_flops(cfg, batch, prompt_len, steps) - attention
    # the engine also embeds the last pass's probabilities (unused): a few percent more than the useful count
    assert 0.97 < counter.get_total_flops() / counted < 1.08


def test_full_size_memory_table():
    table = gpu_full_size.memory_table()
    assert table["weight_gb"] == {"bf16": 50.5, "int8": 27.73, "fp8": 27.73}
    assert table["params_experts"] == 30 * 128 * 3 * 2816 * 704


def test_benchmarks_import_nothing_from_tests():
    """``python -m benchmarks.X`` must work where the test suite (and pytest) is not installed."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    files = sorted(root.glob("*.py"))
    assert len(files) > 5
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("tests", "pytest"), f"{path.name} imports {name}"


def test_timed_gives_every_side_the_same_calls():
    from benchmarks._fixtures import timed

    calls = []
    figures, out = timed(lambda: calls.append(1) or len(calls), repeats=4, warmup=2)
    assert len(calls) == 6 and out == 6 and figures["calls"] == 4
    assert 0 <= figures["min_seconds"] <= figures["median_seconds"]
    with pytest.raises(ValueError, match="repeats"):
        timed(lambda: None, repeats=0)


def test_engine_vs_reference_adaptive_reports_early_exit():
    """Adaptive mode runs the trained demo model: rows end at EOS, and the report says how many passes and
    canvases each engine spent, with the same number of timed calls on both sides."""
    from benchmarks import engine_vs_reference

    report = engine_vs_reference.run([2], steps=2, new_tokens=32, repeats=1, prompt_tokens=32, mode="adaptive")
    [row] = report["results"]
    ours, ref = row["redraft"], row["transformers"]
    assert ours["calls"] == ref["calls"] == report["repeats"] == 1
    assert ours["rows_ended_at_eos"] + ref["rows_ended_at_eos"] > 0  # EOS really ends rows here
    assert 0 < ours["mean_passes_per_row"] <= 48 and ref["decoder_calls_for_the_batch"] <= 48
    assert row["ratio"] == pytest.approx(ours["tok_s"] / ref["tok_s"], rel=0.05)  # (from the unrounded rates)


def test_quantize_tolerance_script_reports_the_readme_quantities():
    from benchmarks import quantize_tolerance

    [row] = quantize_tolerance.run(["wide_heads"])["results"]
    assert row["checkpoint"] == "wide_heads"
    for kind in ("int8", "fp8"):
        assert 0 <= row[f"{kind}_vs_bf16"] and 0 <= row[f"{kind}_vs_bf16_top1"] <= 1
    assert row["int8_fp32_vs_fp32"] < row["bf16_vs_fp32"]  # as tests/test_quantize.py bounds it


def test_gpu_check_runs_small_on_cpu(tmp_path, capsys):
    """The one-call GPU check, CPU-sized: parity is measured for real, the CUDA-only parts say they were
    skipped, and the throughput code path runs on the small config with both precisions."""
    out = tmp_path / "check.json"
    gpu_check.main(["--small", "--out", str(out)])
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    parity = report["parity"]
    assert parity["dtype"] == "bfloat16" and parity["rows"] == 2
    exact = parity["vs_transformers_fp32_cpu"]
    assert exact["within_tolerance"] and 0 < exact["max_abs_diff"] and exact["argmax_agreement"] > 0.75
    assert parity["vs_transformers_bfloat16_cpu"]["argmax_agreement"] > 0.75
    assert report["cuda_graph"] == {"skipped": "no CUDA device"}
    assert report["throughput"]["full_size"] == {"skipped": "no CUDA device"}
    small = report["throughput"]["small_cpu"]
    for name, quantization in (("bf16", "none"), ("fp8", "fp8")):
        run = small[name]
        assert run["quantization"] == quantization and [r["batch"] for r in run["results"]] == [1, 2]
        summary = run["summary"]
        assert summary["memory_bound"]["target"] == 0.70 and summary["memory_bound"]["fraction"] > 0
        assert summary["peak_flops"]["batch"] == 2 and summary["peak_flops"]["target"] == 0.35
    assert report["wall_seconds"] < 60


def test_gpu_check_refuses_a_bad_budget(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--small", "--budget-s", "0"])
    assert "--budget-s must be positive" in capsys.readouterr().err


def test_batch_invariance_benchmark_reports_both_sides(tmp_path):
    from benchmarks.batch_invariance import main

    out = tmp_path / "binv.json"
    main(["--batch", "2", "--repeats", "1", "--out", str(out)])
    row = json.loads(out.read_text())["results"][0]
    assert row["off"]["calls"] == row["on"]["calls"] == 1
    assert row["on"]["rows_equal_alone"] == 2  # the setting's promise, on real rows
