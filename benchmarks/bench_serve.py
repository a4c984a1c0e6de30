"""Serve throughput under load: `sentiment serve` with dynamic batching vs the same server scoring each
request alone (--no-batching), in one run, at 1 / 8 / 64 concurrent clients each sending one review at a
time; plus scoring one review in-process (what a lone client's latency is held against).

    python benchmarks/bench_serve.py --run runs/NAME [--data data/aclImdb/test] [--clients 1,8,64]
                                     [--seconds 20] [--threads 2] [--json]

The load generator is its own light process (asyncio, keep-alive connections, no HTTP library) on the same
machine; its CPU share (CPU seconds / wall seconds) is reported, since on 2 cores it takes from the server.
Each level runs for --seconds after --warmup seconds; requests/s counts requests completed in the window,
p50/p99 are their latencies. Reviews are drawn (seeded) from the IMDB test set (--data: a directory with
pos/ and neg/ .txt files, or a text file with one review per line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def read_reviews(data: Path, n: int, seed: int = 0) -> list[str]:
    """n reviews drawn (seeded) from a pos/neg directory of .txt files or a one-review-per-line file."""
    data = Path(data)
    if data.is_dir():
        files = sorted(data.glob("pos/*.txt")) + sorted(data.glob("neg/*.txt"))
        if not files:
            raise SystemExit(f"error: no pos/*.txt or neg/*.txt under {data}")
        picked = random.Random(seed).sample(files, min(n, len(files)))
        return [f.read_text(encoding="utf-8", errors="replace") for f in picked]
    lines = [line for line in data.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"error: no reviews in {data}")
    return random.Random(seed).sample(lines, min(n, len(lines)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int, threads: int, batching: bool) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "sentiment", "serve", "--run", str(run), "--port", str(port), "--threads",
           str(threads), "--log-level", "warning", "--batching" if batching else "--no-batching"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the server exited: {proc.stderr.read().decode().strip()[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("error: the server did not start in 300 s")


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> None:
    writer.write(b"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    status = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    if b" 200 " not in status:
        raise RuntimeError(f"server answered {status.decode().strip()}")


async def _client(port: int, bodies: list[bytes], start: float, stop: float, latencies: list[float],
                  offset: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while (now := time.perf_counter()) < stop:
            await _request(reader, writer, bodies[i % len(bodies)])
            done = time.perf_counter()
            if now >= start:  # sent inside the window: counted
                latencies.append(done - now)
            i += 1
    finally:
        writer.close()


def load_level(port: int, reviews: list[str], clients: int, warmup: float, seconds: float, queue) -> None:
    """The load generator process: `clients` connections, each one request at a time, for warmup + seconds."""
    bodies = [json.dumps({"text": r}).encode() for r in reviews]
    latencies: list[float] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    start = wall0 + warmup
    stop = start + seconds

    async def main() -> None:
        await asyncio.gather(*(_client(port, bodies, start, stop, latencies, c * 7919) for c in range(clients)))

    asyncio.run(main())
    wall = time.perf_counter() - wall0
    queue.put({"latencies": latencies, "cpu_share": (time.process_time() - cpu0) / wall, "window": seconds})


def measure(port: int, reviews: list[str], clients: int, warmup: float, seconds: float) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=load_level, args=(port, reviews, clients, warmup, seconds, queue))
    proc.start()
    result = queue.get(timeout=warmup + seconds + 600)
    proc.join()
    lat = sorted(result["latencies"])
    pick = (lambda q: 1000 * lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: float("nan"))
    return {"clients": clients, "requests": len(lat), "requests_per_s": len(lat) / result["window"],
            "p50_ms": pick(0.50), "p99_ms": pick(0.99), "load_cpu_share": result["cpu_share"]}


def in_process_ms(run: Path, reviews: list[str], threads: int, repeats: int) -> float:
    """Median ms to encode and score one review in-process, as the server does for a lone request."""
    import torch

    from sentiment.inference.serve import Scorer, ServeOptions

    scorer = Scorer(ServeOptions(str(run), threads=threads))
    torch.set_num_threads(threads)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        scorer.score(scorer.encode([reviews[i % len(reviews)]]))
        times.append(time.perf_counter() - t0)
    return 1000 * sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--run", type=Path, required=True, help="run directory to serve")
    parser.add_argument("--data", type=Path, default=Path("data/aclImdb/test"),
                        help="reviews: a pos/neg directory of .txt files or a file, one review per line")
    parser.add_argument("--reviews", type=int, default=2000, help="reviews drawn (the clients cycle through them)")
    parser.add_argument("--clients", default="1,8,64", help="comma-separated concurrency levels")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each level")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of the server")
    parser.add_argument("--in-process-repeats", type=int, default=200, help="one-review in-process timings")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    if not levels or min(levels) < 1 or args.seconds <= 0 or args.reviews < 1:
        raise SystemExit("error: --clients needs levels >= 1, --seconds and --reviews positive")
    if not (args.run / "config.yaml").is_file():
        raise SystemExit(f"error: {args.run} is not a run directory")
    reviews = read_reviews(args.data, args.reviews)

    results: dict = {"in_process_ms": in_process_ms(args.run, reviews, args.threads, args.in_process_repeats),
                     "threads": args.threads, "reviews": len(reviews), "seconds": args.seconds}
    for batching in (True, False):
        port = free_port()
        server = start_server(args.run, port, args.threads, batching)
        try:
            results["batched" if batching else "alone"] = [
                measure(port, reviews, c, args.warmup, args.seconds) for c in levels]
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    if args.json:
        print(json.dumps(results))
        return
    print(f"one review in-process: {results['in_process_ms']:.2f} ms (median); server threads {args.threads}")
    print(f"{'clients':>7} {'mode':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'load CPU':>8}  speed-up")
    for batched, alone in zip(results["batched"], results["alone"]):
        for mode, row in (("batched", batched), ("alone", alone)):
            speedup = batched["requests_per_s"] / alone["requests_per_s"] if alone["requests_per_s"] else float("nan")
            print(f"{row['clients']:>7} {mode:>8} {row['requests_per_s']:>9.1f} {row['p50_ms']:>8.1f} "
                  f"{row['p99_ms']:>8.1f} {row['load_cpu_share']:>7.0%}  " + (f"{speedup:.2f}x" if mode == "batched" else ""))


if __name__ == "__main__":
    main()
