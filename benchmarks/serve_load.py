"""Serve under load: rounds of concurrent clients, one of them sending an oversized request.

Each round starts ``--clients`` clients at once on 127.0.0.1, one request each: plain and streaming completions,
chat (some with content as a list of text parts), infills, edits, streams dropped after their first chunk and
non-streaming requests dropped after 0.3 s (disconnects), malformed requests (not JSON, a missing field, a lone
surrogate, an image part, an unknown model, max_tokens over the limit, 65 prompts), and, in every round but the
first (the baseline), one request of 10,000 prompts (about 170 KB, under the body limit) sent just before the
others. Reported per round: status counts per kind, p50/p99 seconds of the valid requests (to the last byte; a
stream to ``[DONE]``), the oversized request's status and seconds, and the replica's resident memory after it.

    python -m benchmarks.serve_load --clients 100 --rounds 3 --out benchmarks/results/serve_load.json
    python -m benchmarks.serve_load --rounds 1 --uncapped --out benchmarks/results/serve_load_uncapped.json

Standalone it starts a local Ray and Serve on a free loopback port and deploys redraft on a tiny random
checkpoint (``benchmarks.checkpoints.make_tiny_checkpoint``); ``tests/test_serve_load.py`` runs ``run_rounds`` against the
test session's Serve. No traffic leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
MODEL = "redraft-load"
LOAD_CONFIG = {"model_name": MODEL, "sampling": {"max_new_tokens": 16, "max_denoising_steps": 4},
               "http": {"max_tokens_limit": 256},
               "deployment": {"num_replicas": 1, "max_batch_size": 8, "batch_wait_timeout_s": 0.02, "num_cpus": 1}}


def _kinds(clients: int) -> list[str]:
    """The request kind of each client of a round (the same mix at any size, malformed and disconnects spread)."""
    return [_CYCLE[i % len(_CYCLE)] for i in range(clients)]


_CYCLE = (["plain"] * 4 + ["stream"] * 2 + ["chat", "chat_parts", "chat_stream", "infill", "edit"] +
          ["drop_stream", "drop_plain"] + ["malformed"])


MALFORMED = [
    (b"{not json", "/v1/completions"),
    (json.dumps({"model": MODEL}).encode(), "/v1/completions"),
    (b'{"model": "' + MODEL.encode() + b'", "prompt": "a \\ud800 b"}', "/v1/completions"),
    (json.dumps({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://127.0.0.1/x.png"}}]}]}).encode(), "/v1/chat/completions"),
    (json.dumps({"model": "gpt-4", "prompt": "x"}).encode(), "/v1/completions"),
    (json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 10_000}).encode(), "/v1/completions"),
    (json.dumps({"model": MODEL, "prompt": ["x = 1"] * 65}).encode(), "/v1/completions"),
]


def _body(kind: str, i: int) -> tuple[str, dict | bytes]:
    seed, tokens = i, 8 + i % 9
    prompt = f"def handler_{i}(event):"
    if kind in ("plain", "drop_plain"):
        return "/v1/completions", {"model": MODEL, "prompt": [prompt] * (1 + i % 2), "max_tokens": tokens,
                                   "seed": seed}
    if kind in ("stream", "drop_stream"):
        return "/v1/completions", {"model": MODEL, "prompt": prompt, "max_tokens": 32, "seed": seed, "stream": True}
    if kind.startswith("chat"):
        content = [{"type": "text", "text": "Write"}, {"type": "text", "text": prompt}] if kind == "chat_parts" \
            else f"Write {prompt}"
        return "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": content}],
                                        "max_tokens": tokens, "seed": seed, "stream": kind == "chat_stream"}
    if kind == "infill":
        return "/v1/completions", {"model": MODEL, "prompt": prompt + "\n    return ", "suffix": "\n\nprint(1)",
                                   "max_tokens": tokens, "seed": seed}
    if kind == "edit":
        return "/v1/edits", {"model": MODEL, "document": f"The cat {i} sat on the mat.", "spans": [[4, 7]],
                             "max_tokens": 6, "seed": seed}
    body, path = MALFORMED[i // len(_CYCLE) % len(MALFORMED)]  # the round's malformed clients: each kind once
    return path, body


def oversized_body(prompts: int = 10_000) -> dict:
    return {"model": MODEL, "prompt": [f"p{i} x" for i in range(prompts)], "max_tokens": 16}


def _request(base: str, kind: str, path: str, body, timeout: float) -> dict:
    """One request; returns ``{kind, status, seconds}`` (status 0: the client dropped the connection itself)."""
    url = urlparse(base)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=0.3 if kind == "drop_plain" else timeout)
    started = time.perf_counter()
    status = 0
    try:
        conn.request("POST", url.path.rstrip("/") + path, body=raw, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        status = resp.status
        if kind == "drop_stream" and status == 200:
            while not resp.fp.readline().startswith(b"data:"):  # the first chunk, then hang up
                pass
            status = 0
        else:
            data = resp.read()
            if status == 200 and isinstance(body, dict) and body.get("stream") and b"data: [DONE]" not in data:
                status = -1  # a stream that ended without [DONE]
    except TimeoutError:
        status = 0 if kind == "drop_plain" else -2
    except OSError:
        status = -3
    finally:
        conn.close()
    return {"kind": kind, "status": status, "seconds": time.perf_counter() - started}


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_round(base: str, clients: int, oversized: bool, timeout: float = 300) -> dict:
    """One round of ``clients`` concurrent requests (and the oversized one when ``oversized``)."""
    kinds = _kinds(clients)
    results: list[dict | None] = [None] * clients
    big: dict = {}
    gate = threading.Event()

    def client(i: int) -> None:
        gate.wait()
        path, body = _body(kinds[i], i)
        results[i] = _request(base, kinds[i], path, body, timeout)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    if oversized:
        raw = oversized_body()
        big_thread = threading.Thread(target=lambda: big.update(_request(base, "oversized", "/v1/completions",
                                                                          raw, timeout)))
        big_thread.start()
        time.sleep(0.05)  # it is first in line
    started = time.perf_counter()
    gate.set()
    for t in threads:
        t.join()
    if oversized:
        big_thread.join()
    return summarize(results, big or None, time.perf_counter() - started)


def summarize(results: list[dict], big: dict | None, wall: float) -> dict:
    counts: dict[str, dict[str, int]] = {}
    for r in results:
        counts.setdefault(r["kind"], {}).setdefault(str(r["status"]), 0)
        counts[r["kind"]][str(r["status"])] += 1
    valid = [r for r in results if r["kind"] not in ("malformed", "drop_stream", "drop_plain")]
    seconds = [r["seconds"] for r in valid]
    out = {"requests": len(results), "wall_s": round(wall, 2), "counts": counts,
           "valid": len(valid), "valid_ok": sum(r["status"] == 200 for r in valid),
           "valid_5xx": sum(r["status"] >= 500 for r in valid),
           "malformed_4xx": sum(400 <= r["status"] < 500 for r in results if r["kind"] == "malformed"),
           "malformed": sum(r["kind"] == "malformed" for r in results),
           "p50_s": round(statistics.median(seconds), 3) if seconds else 0.0,
           "p99_s": round(_percentile(seconds, 0.99), 3)}
    if big is not None:
        out["oversized"] = {"status": big["status"], "seconds": round(big["seconds"], 3)}
    return out


def replica_rss_mib(app: str = MODEL) -> float | None:
    """Resident memory of this Ray's Serve replica of ``app`` (children of our raylet only)."""
    import psutil
    import ray._private.worker as ray_worker

    node = ray_worker._global_node
    for info in (node.all_processes.get("raylet", []) if node is not None else []):
        for child in psutil.Process(info.process.pid).children(recursive=True):
            try:
                if f"ServeReplica:{app}:" in " ".join(child.cmdline()):
                    return round(child.memory_info().rss / 2**20, 1)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
    return None


def run_rounds(base: str, clients: int, rounds: int, app: str = MODEL) -> dict:
    """A baseline round without the oversized request, then ``rounds`` rounds with it."""
    out = []
    for k in range(rounds + 1):
        row = {"round": k, "with_oversized": k > 0, **run_round(base, clients, oversized=k > 0)}
        row["replica_rss_mib"] = replica_rss_mib(app)
        out.append(row)
    return {"clients": clients, "rounds": out}


def _start(checkpoint: str, uncapped: bool = False) -> str:
    import ray
    from ray import serve

    from pipelines.serve_app import build_app
    from pipelines.serve_config import validate_serve_config

    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cfg = {**LOAD_CONFIG, "engine": {"checkpoint": checkpoint, "device": "cpu", "dtype": "float32"}}
    if uncapped:  # what the caps prevent: the per-request limits set out of reach
        cfg["http"] = {**cfg["http"], "max_prompts_per_request": 10**6, "max_request_tokens": 10**9}
    serve.run(build_app(validate_serve_config(cfg)), name=MODEL, route_prefix="/")
    return f"http://127.0.0.1:{port}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> None:
    import sys
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    ap.add_argument("--uncapped", action="store_true", help="set http.max_prompts_per_request and "
                    "http.max_request_tokens out of reach (shows what they prevent)")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    from benchmarks.checkpoints import make_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        make_tiny_checkpoint(tmp, "base")
        base = _start(tmp, args.uncapped)
        run_round(base, 8, oversized=False)  # warm-up: the engine's first passes
        report = {"command": " ".join(["python -m benchmarks.serve_load", *argv]),
                  **run_rounds(base, args.clients, args.rounds)}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
