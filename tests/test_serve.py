"""`sentiment serve`: a real server process on a free port of 127.0.0.1, answering what `sentiment predict`
answers; limits (413), bad requests (422), empty texts, concurrent clients, and a graceful SIGTERM; its page and
POST /explain (limits, a time bound, /health answering meanwhile). The page in a browser: test_serve_page.py."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sentiment.cli import app
from sentiment.errors import SentimentError
from conftest import TINY_TRAINING, make_imdb, one_line_error, set_args

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
FAST = ["data.glove_dim=null", "model.embed_dim=16", "run.threads=1", "data.workers=1", "train.epochs=2",
        *TINY_TRAINING]
SAMPLE = [
    " ".join(["The film was great and the cast was wonderful."] * 12),
    "awful",
    "",
    'He said "superb", and I loved it.',
    " ".join(["A boring, dull mess with the worst plot."] * 30),
    "<br /><br />",
    "Terrible. Hated it.<br /><br />Really.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*source_and_options: str) -> tuple[subprocess.Popen, int]:
    """A server process on a free port, ready; source_and_options: --run DIR (or --model FILE) and others."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sentiment", "serve", *source_and_options, "--port", str(port),
                             "--threads", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            if request(port, "GET", "/health")[0] == 200:
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the server did not become ready")


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out.decode()


def request(port: int, method: str, path: str, body: bytes | dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def fetch(port: int, path: str) -> tuple[int, dict[str, str], str]:
    """GET path: status, headers (lowercased names) and the body as text."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        conn.close()


def predict_cli(run_dir: Path, *texts: str, extra: tuple[str, ...] = ()) -> list[dict]:
    result = runner.invoke(app, ["predict", "--run", str(run_dir), "--json", *extra, *texts])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]


def assert_same_rows(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.keys() == e.keys(), (g, e)
        if "error" in e:
            assert g == e
            continue
        assert g["label"] == e["label"]
        assert g["probs"].keys() == e["probs"].keys()
        for name, p in e["probs"].items():
            assert abs(g["probs"][name] - p) <= 1e-6, (g, e)
        if "probability" in e:
            assert abs(g["probability"] - e["probability"]) <= 1e-6


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("serve")
    data = make_imdb(base / "data", n_per_class=60, with_glove=False)
    run_dir = base / "run"
    result = runner.invoke(app, ["train", *set_args([f"data.data_dir={data}", *FAST]), "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.fixture(scope="module")
def server(trained):
    # a time bound on explanations that the tests' small ones stay far below, and a steps limit high enough
    # for one request to pass it (test_health_answers_while_explaining_and_a_request_over_the_time_bound_is_503)
    proc, port = start_server("--run", str(trained), "--log-batches", "--explain-timeout", str(EXPLAIN_TIMEOUT),
                              "--explain-max-steps", "1000")
    yield port
    code, out = stop(proc)
    assert code == 0, out


EXPLAIN_TIMEOUT = 4.0
EXPLANATION_KEYS = {"text", "tokens", "read", "classes", "probabilities", "label", "outputs", "contributions",
                    "rnn_contributions", "branch_contributions", "logits", "baseline_logits", "completeness_error"}


def test_health_and_info(server, trained):
    assert request(server, "GET", "/health") == (200, {"status": "ready"})
    status, info = request(server, "GET", "/info")
    assert status == 200
    assert info["labels"] == ["negative", "positive"]
    assert info["model"]["rnn"] and info["model"]["vocab_size"] > 2
    assert info["valid"]["accuracy"] == json.loads((trained / "results.json").read_text())["valid"]["accuracy"]
    assert "commit" in info


def test_predict_equals_sentiment_predict(server, trained):
    expected = predict_cli(trained, *SAMPLE)
    status, body = request(server, "POST", "/predict", {"texts": SAMPLE})
    assert status == 200
    assert_same_rows(body["predictions"], expected)
    for text, row in zip(SAMPLE, expected):  # one at a time, and as {"text": ...}
        status, one = request(server, "POST", "/predict", {"text": text})
        assert status == 200
        assert_same_rows([one], [row])
    assert expected[2] == {"error": "empty text: skipped"}  # an empty text is answered, as predict answers it


def test_threshold_as_predict_takes_it(server, trained):
    expected = predict_cli(trained, *SAMPLE, extra=("--threshold", "0.9"))
    status, body = request(server, "POST", "/predict", {"texts": SAMPLE, "threshold": 0.9})
    assert status == 200
    assert_same_rows(body["predictions"], expected)


@pytest.mark.parametrize("body, needle", [
    ({"texts": ["fine"] * 1001}, "1,001 texts"),
    ({"text": "x" * 100_001}, "100,001 characters"),
    ({"texts": ["great movie " * 1000] * 200}, "bytes"),
])
def test_too_much_is_413_with_a_message(server, body, needle):
    status, answer = request(server, "POST", "/predict", body)
    assert status == 413 and needle in answer["detail"], answer


@pytest.mark.parametrize("body", [
    b"{not json", b'{"texts": "a string"}', b'{"texts": [1, 2]}', b'{"text": 3}', b"{}",
    b'{"text": "a", "texts": ["b"]}', b'{"txt": "typo"}', b'{"text": "a", "threshold": 2}', b"[]",
])
def test_bad_requests_are_422_saying_what_is_wrong(server, body):
    status, answer = request(server, "POST", "/predict", body)
    assert status == 422, answer
    assert answer["detail"], answer


@pytest.mark.parametrize("body, needle", [
    (b'{"text": "great", "threshold": NaN}', "finite"),
    (b'{"text": "great", "threshold": Infinity}', "finite"),
    (b'{"text": "a great \\ud83d film"}', "lone surrogate"),
    (b'{"texts": ["fine", "half \\udc00 of it"]}', "text 1 holds a lone surrogate"),
])
def test_non_finite_thresholds_and_lone_surrogates_are_422_with_a_reason(server, body, needle):
    status, answer = request(server, "POST", "/predict", body)
    assert status == 422, answer
    assert needle in json.dumps(answer), answer
    assert request(server, "POST", "/predict", {"text": "a great \U0001f600 film"})[0] == 200  # a whole emoji is fine


def test_health_answers_within_a_second_while_a_long_text_is_scored(server):
    # 100,000 characters, within --max-chars: ordinary words and one long chunk without whitespace, which
    # spaCy tokenizes (holding the GIL) in seconds: GET /health must not wait for it
    chunk = "great." * 700
    words = " ".join(["the film was great but the plot was dull and boring"] * 2000)[: 100_000 - len(chunk) - 1]
    text = words + " " + chunk
    assert len(text) <= 100_000
    answer: list[int] = []
    thread = threading.Thread(target=lambda: answer.append(request(server, "POST", "/predict", {"text": text})[0]))
    thread.start()
    waits = []
    while thread.is_alive():
        started = time.monotonic()
        assert request(server, "GET", "/health")[0] == 200
        waits.append(time.monotonic() - started)
        time.sleep(0.05)
    thread.join()
    assert answer == [200]
    assert waits and max(waits) < 1.0, waits


def test_concurrent_clients_get_their_own_answers(server, trained):
    texts = [t for t in SAMPLE if t.strip("<br /> ")]
    expected = {t: row for t, row in zip(texts, predict_cli(trained, *texts))}
    failures: list[str] = []

    def client(text: str) -> None:
        for _ in range(15):
            status, row = request(server, "POST", "/predict", {"text": text})
            try:
                assert status == 200
                assert_same_rows([row], [expected[text]])
            except AssertionError as e:
                failures.append(f"{text[:20]}: {e}")

    before = request(server, "GET", "/info")[1]["scored"]
    threads = [threading.Thread(target=client, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    after = request(server, "GET", "/info")[1]["scored"]
    requests_, rounds = after["requests"] - before["requests"], after["rounds"] - before["rounds"]
    assert requests_ == 15 * len(texts)
    assert rounds < requests_, "concurrent requests were never scored together"


def test_sigterm_answers_every_request_in_flight_and_exits_0(trained):
    proc, port = start_server("--run", str(trained))
    long_texts = [" ".join(["the film was great but the plot was dull and boring"] * 40)] * 300
    answers: list[tuple[int, float]] = []

    def client() -> None:
        status, body = request(port, "POST", "/predict", {"texts": long_texts})
        answers.append((status if len(body["predictions"]) == len(long_texts) else -1, time.monotonic()))

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # every request sent and read; scoring them all takes longer
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    code, out = stop(proc)
    assert [a[0] for a in answers] == [200] * 6, out
    assert any(at > signalled for _, at in answers), "no request was still in flight at SIGTERM"
    assert code == 0, out
    assert "Traceback" not in out


def test_bad_input_is_one_error_line(trained, tmp_path):
    port = free_port()
    result = runner.invoke(app, ["serve", "--run", str(tmp_path), "--port", str(port)])
    one_line_error(result.exit_code, result.output, "not a run directory")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = runner.invoke(app, ["serve", "--run", str(trained), "--port", str(busy.getsockname()[1])])
        one_line_error(result.exit_code, result.output, "cannot listen on 127.0.0.1")
    for option, value in (("--explain-timeout", "0"), ("--explain-max-steps", "0")):
        result = runner.invoke(app, ["serve", "--run", str(trained), "--port", str(port), option, value])
        one_line_error(result.exit_code, result.output, option)
    for host, needle in (("999.1.1.1", "--host 999.1.1.1 is not an IP address"),
                         ("192.0.2.1", "192.0.2.1: it is not an address of this machine")):
        result = runner.invoke(app, ["serve", "--run", str(trained), "--host", host, "--port", str(port)])
        error = one_line_error(result.exit_code, result.output, needle)
        assert "port" not in error


def test_workers_serve_the_model_the_server_started_with_and_a_death_stops_the_server(trained, tmp_path):
    import shutil

    import torch

    from sentiment.inference.serve import Scorer, ServeOptions, model_digest
    from sentiment.runs import BEST, load_checkpoint, save_checkpoint

    run_dir = Path(shutil.copytree(trained, tmp_path / "run"))
    opts = ServeOptions(str(run_dir), threads=1)
    with pytest.raises(SentimentError, match="changed since the server started"):
        Scorer(ServeOptions(str(run_dir), threads=1, digest="0" * 64))  # what a worker started later checks
    proc, port = start_server("--run", str(run_dir), "--workers", "2")
    try:
        expected = request(port, "POST", "/predict", {"text": "great film"})[1]
        started_with = model_digest(opts)
        state = load_checkpoint(run_dir / BEST)
        state["model"] = {k: v + 0.5 if v.is_floating_point() else v for k, v in state["model"].items()}
        save_checkpoint(run_dir / BEST, state)  # best.pt replaced while the server runs
        assert model_digest(opts) != started_with
        for _ in range(6):  # both workers still answer with the weights they started with
            assert request(port, "POST", "/predict", {"text": "great film"})[1] == expected
        workers = _children(proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        # communicate, not read(): a process the server left behind (its tokenizer process) would hold stdout open
        # and a read would never return; here it fails the test instead
        out = proc.communicate(timeout=60)[0].decode()
        code = proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code != 0, out
    # the killed worker's multiprocessing resource tracker may add its own "leaked semaphore" warning after it
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "server worker" in errors[0] and "killed by signal 9" in errors[0], out
    assert "Traceback" not in out, out


def _children(pid: int) -> list[int]:
    """The server's worker processes (uvicorn spawns them; a resource tracker may sit beside them)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"resource_tracker" not in cmdline:
                children.append(int(child))
    return children


def test_bench_serve_help_and_smoke(trained, tmp_path):
    script = ROOT / "benchmarks" / "bench_serve.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "--clients" in done.stdout
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("\n".join(SAMPLE[:2] + SAMPLE[3:5]) + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), "--run", str(trained), "--data", str(reviews), "--clients",
                           "2", "--seconds", "0.3", "--warmup", "0.1", "--threads", "1", "--in-process-repeats",
                           "3", "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for mode in ("batched", "alone"):
        assert [r["clients"] for r in results[mode]] == [2]
        assert all(r["requests"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in results[mode])
    assert results["in_process_ms"] > 0


def test_serving_an_exported_onnx_model_answers_as_predict_model(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", "--run", str(trained), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", "--model", str(out), "--json", *SAMPLE])
    expected = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    proc, port = start_server("--model", str(out))
    try:
        status, body = request(port, "POST", "/predict", {"texts": SAMPLE})
        assert status == 200
        assert_same_rows(body["predictions"], expected)
        info = request(port, "GET", "/info")[1]
        assert info["labels"] == ["negative", "positive"]
        # no gradients in an exported model: /explain says in one line that explanations need --run
        assert info["explain"]["status"] == "unavailable" and "--run" in info["explain"]["reason"]
        status, body = request(port, "POST", "/explain", {"text": "great"})
        assert status == 501 and "serve --run DIR" in body["detail"], body
    finally:
        code, log = stop(proc)
    assert code == 0, log


def test_a_run_with_the_ngram_branch_serves_from_the_run_and_from_its_export(tmp_path):
    """The n-gram branch's input (the texts' token hashes) travels through the batcher: `serve --run` and
    `serve --model` (its ONNX export) answer what `predict` answers, for the default's two parts mixed."""
    pytest.importorskip("onnxruntime")
    data = make_imdb(tmp_path / "data", n_per_class=30, with_glove=False)
    run_dir, out = tmp_path / "run", tmp_path / "model.onnx"
    result = runner.invoke(app, ["train", *set_args([f"data.data_dir={data}", *FAST, "model.hidden_size=8",
                                                     "model.ngrams.buckets=4096", "model.ngrams.lr=0.05",
                                                     "model.combine=mixture"]),
                                 "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", "--run", str(run_dir), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = predict_cli(run_dir, *SAMPLE)
    for source in (("--run", str(run_dir)), ("--model", str(out))):
        proc, port = start_server(*source)
        try:
            status, body = request(port, "POST", "/predict", {"texts": SAMPLE})
            assert status == 200, body
            assert_same_rows(body["predictions"], expected)
            assert_same_rows([request(port, "POST", "/predict", {"text": SAMPLE[1]})[1]], expected[1:2])
        finally:
            code, log = stop(proc)
        assert code == 0, log


def test_the_page_and_everything_else_served_is_self_contained(server):
    """GET / is one page with its CSS and JS inline and no URL of anywhere else (it works offline, and its
    Content-Security-Policy forbids loading anything); FastAPI's /docs and /redoc (scripts from a CDN) are gone,
    /openapi.json stays."""
    status, headers, page = fetch(server, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert 'id="text"' in page and 'id="submit"' in page and 'id="label"' in page and "<script>" in page
    assert "default-src 'none'" in headers["content-security-policy"]
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert fetch(server, path)[0] == 404, path
    status, _, schema = fetch(server, "/openapi.json")
    assert status == 200 and {"/predict", "/explain"} <= json.loads(schema)["paths"].keys()


def test_explain_answers_the_label_probabilities_and_contributions_predict_agrees_with(server, trained):
    pytest.importorskip("captum")
    expected = predict_cli(trained, *SAMPLE)
    status, body = request(server, "POST", "/explain", {"texts": SAMPLE})
    assert status == 200, body
    for text, row, answer in zip(SAMPLE, expected, body["explanations"]):
        if "error" in row:  # an empty text is answered as /predict answers it
            assert answer == row
            continue
        assert EXPLANATION_KEYS <= answer.keys() and answer["text"] == text
        assert answer["label"] == row["label"] and answer["classes"] == list(row["probs"])
        assert answer["probabilities"] == pytest.approx(list(row["probs"].values()), abs=1e-5)
        assert len(answer["tokens"]) == len(answer["read"]) == len(answer["contributions"]) > 0
        assert answer["outputs"] == ["positive"] and all(len(r) == 1 for r in answer["contributions"])
        total = sum(r[0] for r in answer["contributions"])
        assert total == pytest.approx(answer["logits"][0] - answer["baseline_logits"][0], rel=0.05, abs=1e-3)
    long = request(server, "POST", "/explain", {"text": " ".join(["dull"] * 500), "steps": 2})[1]
    assert sum(long["read"]) == 400 and len(long["read"]) == 500  # the tokens outside the window are marked
    one = request(server, "POST", "/explain", {"text": SAMPLE[1], "steps": 4, "threshold": 0.0001})[1]
    assert one["tokens"] == ["awful"] and one["label"] == "positive"  # the request's threshold, as /predict


@pytest.mark.parametrize("body, status, needle", [
    ({"texts": ["fine"] * 17}, 413, "--explain-max-texts"),
    ({"text": "great " * 2001}, 413, "2,001 tokens"),
    ({"text": "great", "steps": 1001}, 422, "--explain-max-steps"),
    ({"text": "great", "steps": 0}, 422, "greater than or equal to 1"),
    ({"text": "great", "step": 3}, 422, "extra"),
    ({"text": "x" * 100_001}, 413, "--max-chars"),
])
def test_explain_has_limits_of_its_own(server, body, status, needle):
    answer = request(server, "POST", "/explain", body)
    assert answer[0] == status and needle in json.dumps(answer[1]), answer


def test_health_answers_while_explaining_and_a_request_over_the_time_bound_is_503(server):
    pytest.importorskip("captum")
    slow = {"texts": [" ".join(["the film was great but the plot was dull"] * 50)] * 16, "steps": 1000}
    answer: list[tuple[int, dict]] = []
    thread = threading.Thread(target=lambda: answer.append(request(server, "POST", "/explain", slow)))
    started = time.monotonic()
    thread.start()
    waits = []
    while thread.is_alive():
        at = time.monotonic()
        assert request(server, "GET", "/health")[0] == 200
        assert request(server, "POST", "/predict", {"text": "great"})[0] == 200  # scoring goes on meanwhile
        waits.append(time.monotonic() - at)
        time.sleep(0.05)
    thread.join()
    status, body = answer[0]
    assert status == 503 and "--explain-timeout" in body["detail"], (status, str(body)[:300])
    assert EXPLAIN_TIMEOUT <= time.monotonic() - started < EXPLAIN_TIMEOUT + 5
    assert len(waits) > 5 and max(waits) < 1.0, waits
    # the refused request's other texts were dropped: the next one is answered well within the bound
    assert request(server, "POST", "/explain", {"text": "great", "steps": 2})[0] == 200
