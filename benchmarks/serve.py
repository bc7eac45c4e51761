"""Serving throughput and latency: the OpenAI-compatible API vs direct engine calls.

    python benchmarks/serve.py [--model M] [--engine auto|torch|llamacpp] [--clients 1,4,8] [--requests 16]
                               [--tokens 32] [--threads N]

Starts the real server (`tailor serve`) on a free loopback port and sends a fixed number of
chat requests with the official `openai` client from N concurrent client threads, for each
N in --clients. The baseline, measured in the same run, is the same work done in-process
with the same backend's `generate` from N threads (no HTTP, no queue, no logging), so the ratio
isolates what serving adds: HTTP + JSON, the request queue, the conversation log and the
reply thread. Both sides use the same model, thread budget, greedy decoding, prompts and
max tokens; the baseline runs while the server is idle so they do not share the CPU.

On the llama.cpp backend (the CPU default) concurrent requests are decoded together, so
requests/s grow with clients up to TAILOR_PARALLEL; on torch the engine answers one request at
a time, so requests/s stay flat while latency grows with the queue."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPTS = [
    "What should I check before a long bike ride?",
    "Explain how to fix a flat bicycle tyre.",
    "Write two sentences about a lighthouse keeper who loves cycling.",
    "How often should I oil my bicycle chain?",
]


def pct(values: list[float], q: float) -> float:
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def run_level(call, clients: int, requests: int) -> dict:
    """`requests` calls spread over `clients` threads; each call returns completion tokens."""
    latencies: list[float] = []
    tokens = 0
    lock = threading.Lock()

    def one(i: int):
        nonlocal tokens
        t0 = time.perf_counter()
        n = call(PROMPTS[i % len(PROMPTS)])
        dt = time.perf_counter() - t0
        with lock:
            latencies.append(dt)
            tokens += n

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    return {
        "rps": requests / wall,
        "p50": pct(latencies, 50),
        "p95": pct(latencies, 95),
        "tok_s": tokens / wall,
        "wall": wall,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    workspace: Path, model: str | None, threads: int | None, queue: int, engine: str
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workspace", str(workspace)]
    if model:
        cmd += ["--model", model]
    env = {**os.environ, "TAILOR_MAX_QUEUE": str(queue), "TAILOR_ENGINE": engine}
    if threads:
        env["TAILOR_THREADS"] = str(threads)
    log = open(workspace.parent / f"serve-bench-{port}.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early; see {log.name}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("server did not start in 300 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model setting (default: embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--engine", default="auto", help="backend on both sides (TAILOR_ENGINE)")
    ap.add_argument("--clients", default="1,4,8", help="comma-separated concurrent client counts")
    ap.add_argument("--requests", type=int, default=16, help="requests per client count")
    ap.add_argument("--tokens", type=int, default=32, help="max new tokens per reply")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (both sides)")
    ap.add_argument(
        "--workspace",
        default=None,
        help="workspace for the server (default $TAILOR_HOME or a folder under the temp dir; the "
        "converted model is cached there)",
    )
    args = ap.parse_args()
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    workspace = Path(args.workspace or os.environ.get("TAILOR_HOME") or Path(tempfile.gettempdir()) / "tailor-bench")

    import openai

    from assistant.backends import load_engine
    from assistant.engine import GenerationOptions
    from assistant.hardware import pick_hardware, set_threads
    from assistant.models import resolve_model
    from assistant.workspace import Workspace

    set_threads(args.threads)
    ws = Workspace(workspace)
    resolved = resolve_model(args.model, ws.models_dir, progress=lambda m: print(m, file=sys.stderr))
    engine = load_engine(
        resolved,
        pick_hardware(),
        backend=args.engine,
        threads=args.threads,
        parallel=max(levels),
        models_dir=ws.models_dir,
    )
    options = GenerationOptions(temperature=0, max_new_tokens=args.tokens)

    def direct(prompt: str) -> int:
        return engine.generate([{"role": "user", "content": prompt}], options).completion_tokens

    direct("warm up")
    print(
        f"model {resolved.name}, {engine.describe()}, {args.requests} requests per level, "
        f"max {args.tokens} tokens, greedy",
        file=sys.stderr,
    )
    baseline = {c: run_level(direct, c, args.requests) for c in levels}
    engine.close()
    engine = None  # free its memory before the server loads its own copy (`direct` is done)

    proc, url = start_server(workspace, args.model, args.threads, queue=max(levels) + 4, engine=args.engine)
    try:
        client = openai.OpenAI(base_url=url + "v1", api_key="unused", max_retries=0, timeout=600)

        def served(prompt: str) -> int:
            r = client.chat.completions.create(
                model="base", messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=args.tokens
            )
            return r.usage.completion_tokens

        served("warm up")
        server = {c: run_level(served, c, args.requests) for c in levels}
    finally:
        proc.terminate()
        proc.wait(30)

    print(f"\nServing {resolved.name}: /v1/chat/completions (openai client) vs in-process engine.generate\n")
    head = (
        f"{'clients':>7} | {'API req/s':>9} {'p50 s':>7} {'p95 s':>7} {'tok/s':>6} | "
        f"{'direct req/s':>12} {'p50 s':>7} {'p95 s':>7} {'tok/s':>6} | {'req/s ratio':>11} {'p50 ratio':>9}"
    )
    print(head)
    print("-" * len(head))
    for c in levels:
        s, b = server[c], baseline[c]
        print(
            f"{c:>7} | {s['rps']:>9.2f} {s['p50']:>7.2f} {s['p95']:>7.2f} {s['tok_s']:>6.1f} | "
            f"{b['rps']:>12.2f} {b['p50']:>7.2f} {b['p95']:>7.2f} {b['tok_s']:>6.1f} | "
            f"{s['rps'] / b['rps']:>11.2f} {s['p50'] / b['p50']:>9.2f}"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print("\nratio = API / direct (req/s: higher is better, 1.0 = no serving overhead; p50: lower is better)")


if __name__ == "__main__":
    main()
