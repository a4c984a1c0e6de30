"""`sentiment serve`: a run behind an HTTP JSON API (FastAPI + uvicorn), with dynamic batching.

Every answer is what `sentiment predict` gives for the same text: the texts are encoded by predict's
encode_texts (same cleaning, tokenizer, lowercasing, truncation), scored by evaluate's predict_logits (in
length-sorted batches, in inference mode) and turned into rows by predict's prediction_rows.

Dynamic batching (Batcher): a request is tokenized on a worker thread, off the event loop, and its ids join
a queue. One scoring thread takes everything queued, up to a budget of positions (`batch_tokens`), and
scores it as one length-sorted set of batches; what arrives meanwhile waits for the next round. When the
queue holds a request and others are still being tokenized, the batch waits for them up to `max_wait_ms`;
when nothing else is on its way it is scored at once, so a lone client never waits.
"""


import asyncio
import errno
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sentiment.errors import SentimentError

OPTIONS_ENV = "SENTIMENT_SERVE_OPTIONS"  # how --workers processes get the options (uvicorn starts them afresh)
log = logging.getLogger("uvicorn.error")  # uvicorn's own logger: its format, its --log-level


@dataclass
class ServeOptions:
    """Everything a server process needs; JSON-serialisable, so --workers processes get the same."""

    run: str | None  # a run directory, or
    checkpoint: str = "best"
    threshold: float | None = None  # two-class runs: P(positive) from which a text gets it (default 0.5)
    max_wait_ms: float = 5.0  # how long a batch waits for requests still being tokenized
    batch_tokens: int = 32768  # positions (tokens, after truncation) one scoring round takes at most
    batching: bool = True  # False: every request is scored alone (the benchmark's baseline)
    max_texts: int = 1000  # texts per request
    max_bytes: int = 2_000_000  # bytes per request body
    max_chars: int = 100_000  # characters per text
    threads: int | None = None  # torch threads per process (default: CPU cores / workers)
    workers: int = 1
    log_batches: bool = False
    model: str | None = None  # instead of run: a `sentiment export` file, scored by onnxruntime or torch.export
    digest: str | None = None  # --workers: the sha256 of the model's files when the server started (model_digest)
    # POST /explain (serve_explain.py): each text costs `steps` forward and backward passes, so it has its own limits
    explain_max_texts: int = 16  # texts per request
    explain_max_tokens: int = 2000  # tokens per text (IMDB's longest review has about 3,000)
    explain_max_steps: int = 256  # Integrated Gradients' steps a request may ask for
    explain_timeout_s: float = 30.0  # a request unanswered after this long (waiting included) is answered 503

    def resolved_threads(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 1) // max(1, self.workers))


# ---------------------------------------------------------------- the model side
class Scorer:
    """A loaded run: texts -> ids (encode), ids -> logits (score). Each runs on its own single thread."""

    def __init__(self, opts: ServeOptions) -> None:
        import torch

        from sentiment.data.tokenize import init_tokenizer
        from sentiment.inference.export import model_summary
        from sentiment.inference.predict import encoding_of
        from sentiment.inference.runtime import load_trained

        self._check_digest(opts)
        if opts.model is not None:
            from sentiment.data.labels import LabelSpace
            from sentiment.inference.exported import encoding_from, load_exported

            self.model = load_exported(Path(opts.model), opts.resolved_threads())
            self.space = LabelSpace(tuple(self.model.meta["labels"]))
            self.enc, self.batch_size = encoding_from(self.model.meta), 256
            summary = self.model.meta.get("model", {})
        else:
            run = load_trained(Path(opts.run), opts.checkpoint, "cpu")
            self.model, self.space = run.model, run.label_space
            self.enc = replace(encoding_of(run), workers=1)  # no forking inside a server
            self.batch_size, summary = run.cfg.train.eval_batch_size, model_summary(run.cfg)
        torch.set_num_threads(opts.resolved_threads())
        self.summary = {**summary, "vocab_size": len(self.enc.vocab), "max_len": self.enc.max_len,
                        "truncate": self.enc.truncate, "lowercase": self.enc.lowercase,
                        "cleaning": asdict(self.enc.cleaning)}
        self._check_digest(opts)  # again: the files read above are the ones the digest was taken of
        # what the explainer, loaded later in the background, must find too (None: an exported model, unexplained)
        self.digest = None if opts.run is None else opts.digest or model_digest(opts)
        init_tokenizer()
        self.score(self.encode(["warm up"]))  # the first request should not pay for lazy initialisation
        self.tokenizer = TokenizerProcess(self.enc)

    @staticmethod
    def _check_digest(opts: ServeOptions) -> None:
        """A --workers process serves the model the server started with, or none: a worker (re)started after
        best.pt was replaced would answer the same text differently from the others."""
        if opts.digest is not None and model_digest(opts) != opts.digest:
            raise SentimentError(f"{opts.model or opts.run} changed since the server started (its sha256 differs): "
                                 "this worker refuses to serve other weights than the others; restart the server")

    def encode(self, texts: list[str]) -> Any:
        from sentiment.inference.predict import encode_texts

        return encode_texts(texts, self.enc)

    def score(self, split: Any) -> np.ndarray:
        """Logits of every review of split (none empty), in its order."""
        from sentiment.inference.evaluate import predict_logits

        return predict_logits(self.model, split, batch_size=self.batch_size, device="cpu",
                              max_len=self.enc.max_len, truncate=self.enc.truncate, workers=1)


_process_encoding: Any = None  # the tokenizer process's Encoding, set once by its initializer


def _start_tokenizer_process(enc: Any, parent: int) -> None:
    global _process_encoding
    import signal as signals

    from sentiment.data.tokenize import init_tokenizer

    signals.signal(signals.SIGINT, signals.SIG_IGN)  # Ctrl-C reaches the process group: the server decides
    # parent: the server process that spawned this one, as it gave its own pid. Read here instead, a parent that
    # died while this process was starting (seconds of imports on a loaded machine) would read as init, and this
    # process would outlive the server for ever, holding its stdout
    if os.getppid() != parent:
        os._exit(0)
    _process_encoding = enc
    init_tokenizer()

    def exit_with_parent() -> None:  # a server process killed -9 cannot end this one itself
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    import threading

    threading.Thread(target=exit_with_parent, daemon=True).start()


def _encode_in_process(texts: list[str]) -> Any:
    from sentiment.inference.predict import encode_texts

    return encode_texts(texts, _process_encoding)


def _count_in_process(texts: list[str]) -> list[int]:
    """Each text's tokens, untruncated (what POST /explain's --explain-max-tokens bounds)."""
    from sentiment.inference.predict import encode_texts

    return encode_texts(texts, replace(_process_encoding, max_len=0)).lengths().tolist()


class TokenizerProcess:
    """Tokenizing (and n-gram hashing) in a process of its own. spaCy keeps the GIL for a whole whitespace
    chunk, and a long one takes seconds: on a thread of the server that would stop its event loop (GET /health
    unanswered) and its signal handling for as long. In a process, only that request waits."""

    def __init__(self, enc: Any) -> None:
        self.enc = enc
        self.pool = self._start()

    def _start(self) -> Any:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the server has threads (the scorer's, torch's), which a fork copies mid-lock
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_tokenizer_process, initargs=(self.enc, os.getpid()))
        pool.submit(_encode_in_process, ["warm up"]).result()  # started now, not by the first request
        return pool

    async def encode(self, texts: list[str]) -> Any:
        return await self._run(_encode_in_process, texts)

    async def count(self, texts: list[str]) -> list[int]:
        return await self._run(_count_in_process, texts)

    async def _run(self, function: Any, texts: list[str]) -> Any:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, function, texts)
        except BrokenProcessPool:  # killed (out of memory?): a fresh one for the next request
            self.close()
            self.pool = await asyncio.to_thread(self._start)  # off the event loop: /health keeps answering
            raise SentimentError("the tokenizer process died while encoding this request; try again") from None

    def close(self) -> None:
        """End the process now, even in the middle of a text (shutdown must not wait for it)."""
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(5)
        self.pool.shutdown(wait=True, cancel_futures=True)  # its threads end at once: the process is gone


def model_digest(opts: ServeOptions) -> str:
    """sha256 of the files a server loads its model from: an exported model and its sidecar, or a run's
    config, vocabulary, labels and checkpoint."""
    import hashlib

    from sentiment.runs import BEST, CONFIG_FILE, LABELS_FILE, LAST, VOCAB_FILE

    if opts.model is not None:
        from sentiment.inference.export import sidecar_path

        files = [Path(opts.model), sidecar_path(Path(opts.model))]
    else:
        run = Path(opts.run)
        files = [run / CONFIG_FILE, run / VOCAB_FILE, run / LABELS_FILE, run / (BEST if opts.checkpoint == "best" else LAST)]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        except FileNotFoundError:
            digest.update(b"\0missing")
        except OSError as e:
            raise SentimentError(f"cannot read {path}: {e.strerror or e}") from None
    return digest.hexdigest()


@dataclass
class _Job:
    rows: list[np.ndarray]  # ids of each non-empty text
    done: asyncio.Future
    hashes: list[np.ndarray] | None = None  # its token hashes, for a model with the n-gram branch
    tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = sum(len(r) for r in self.rows)


class Batcher:
    """Gathers the ids of concurrent requests and scores them together on one scoring thread."""

    def __init__(self, scorer: Scorer, opts: ServeOptions) -> None:
        self.scorer, self.opts = scorer, opts
        self.pending: list[_Job] = []
        self.tokenizing = 0  # requests being tokenized: they will join the queue soon
        self.arrived = asyncio.Event()
        self.stats = {"rounds": 0, "requests": 0, "texts": 0, "tokens": 0}  # scored so far (GET /info)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="score")

    async def logits(self, rows: list[np.ndarray], hashes: list[np.ndarray] | None = None) -> np.ndarray:
        job = _Job(rows, asyncio.get_running_loop().create_future(), hashes)
        self.pending.append(job)
        self.arrived.set()
        return await job.done

    async def run(self) -> None:
        while True:
            await self.arrived.wait()
            self.arrived.clear()
            if not self.pending:
                continue
            await self._gather()
            jobs = self._take()
            try:
                await self._score(jobs)
            except Exception as e:  # answer the requests (500) rather than leave them waiting
                for job in jobs:
                    if not job.done.done():
                        job.done.set_exception(e)
            if self.pending:
                self.arrived.set()

    async def _gather(self) -> None:
        """Wait up to max_wait_ms for requests still being tokenized, unless the budget is already full."""
        if not self.opts.batching:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.opts.max_wait_ms / 1000
        while self.tokenizing and sum(j.tokens for j in self.pending) < self.opts.batch_tokens:
            left = deadline - loop.time()
            if left <= 0:
                return
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[_Job]:
        """The queued jobs, in arrival order, up to the budget of positions (always at least one)."""
        if not self.opts.batching:
            return [self.pending.pop(0)]
        taken, tokens = 0, 0
        while taken < len(self.pending) and (taken == 0 or tokens + self.pending[taken].tokens <= self.opts.batch_tokens):
            tokens += self.pending[taken].tokens
            taken += 1
        jobs, self.pending = self.pending[:taken], self.pending[taken:]
        return jobs

    async def _score(self, jobs: list[_Job]) -> None:
        from sentiment.data.batching import EncodedSplit

        rows = [r for job in jobs for r in job.rows]
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        split = EncodedSplit(np.concatenate(rows) if rows else np.zeros(0, np.int32),
                             np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), np.zeros(len(rows), np.int64))
        if jobs and jobs[0].hashes is not None:  # the n-gram branch's input travels with the ids
            hashes = [h for job in jobs for h in job.hashes]
            split.hashes = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
            split.hash_offsets = np.concatenate([[0], np.cumsum([len(h) for h in hashes])]).astype(np.int64)
        start = time.perf_counter()
        logits = await asyncio.get_running_loop().run_in_executor(self.pool, self.scorer.score, split) if rows else \
            np.zeros((0,) if self.scorer.space.binary else (0, self.scorer.space.num_classes), np.float32)
        for key, value in (("rounds", 1), ("requests", len(jobs)), ("texts", len(rows)), ("tokens", int(lengths.sum()))):
            self.stats[key] += value
        if self.opts.log_batches:
            log.info("batch: %d requests, %d texts, %d tokens, %.1f ms", len(jobs), len(rows), int(lengths.sum()),
                     1000 * (time.perf_counter() - start))
        at = 0
        for job in jobs:
            if not job.done.done():  # a client that went away leaves a cancelled future
                job.done.set_result(logits[at : at + len(job.rows)])
            at += len(job.rows)


# ---------------------------------------------------------------- the HTTP side
class BodyLimit:
    """ASGI middleware: a request body over max_bytes is answered 413 before anything parses it."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.drain_bytes = max(4 * max_bytes, 8 << 20)  # read (and drop) a body this big before answering 413

    async def _drain(self, receive: Any, size: int = 0) -> None:
        while size <= self.drain_bytes:
            message = await receive()
            size += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            if int(declared) <= self.drain_bytes:
                await self._drain(receive)  # a client still sending would see a broken pipe, not the 413
            return await self._too_large(send)
        chunks, size, more = [], 0, True
        while more:  # read it all (it is small), counting: a chunked body declares no length
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                if more:
                    await self._drain(receive, size)
                return await self._too_large(send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any) -> None:
        body = json.dumps({"detail": f"request body over {self.max_bytes:,} bytes (the server's --max-bytes)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def create_app(opts: ServeOptions, scorer: Scorer | None = None) -> Any:
    """The FastAPI app; loads the run at startup unless given its Scorer (the CLI's one-process server)."""
    from fastapi import FastAPI, HTTPException
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    from sentiment.inference.predict import drop_empty, prediction_rows
    from sentiment.inference.serve_explain import ExplainWorker, add_page_and_explain

    state: dict[str, Any] = {"ready": False}

    PredictRequest = _request_model()

    @asynccontextmanager
    async def lifespan(app: Any):
        state["scorer"] = scorer or await asyncio.to_thread(Scorer, opts)
        batcher = state["batcher"] = Batcher(state["scorer"], opts)
        state["explainer"] = ExplainWorker(opts, state["scorer"].digest, lambda: model_digest(opts))
        task = asyncio.create_task(batcher.run())
        state["ready"] = True
        yield
        state["ready"] = False
        task.cancel()
        state["scorer"].tokenizer.close()
        batcher.pool.shutdown(wait=False)
        state["explainer"].close()

    # no /docs nor /redoc: FastAPI's pages load their scripts from a CDN (blank offline); /openapi.json stays
    app = FastAPI(title="sentiment", description=f"Predictions of {opts.model or opts.run}", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=opts.max_bytes)
    add_page_and_explain(app, opts, state, check_limits)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Any, exc: RequestValidationError) -> Any:
        # FastAPI's own handler echoes each bad input, and cannot write a NaN or an infinity as JSON (a 500)
        errors = []
        for error in exc.errors():
            error = dict(error)
            try:
                json.dumps(error.get("input"), allow_nan=False)
            except (TypeError, ValueError):
                error["input"] = repr(error.get("input"))
            errors.append(error)
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.get("/health")
    async def health() -> Any:
        if not state["ready"]:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ready"}

    @app.get("/info")
    async def info() -> Any:
        return _info(opts, state)

    @app.post("/predict")
    async def predict(request: PredictRequest) -> Any:
        texts = request.texts if request.texts is not None else [request.text]
        check_limits(texts, opts)
        s, batcher = state["scorer"], state["batcher"]
        threshold = request.threshold if request.threshold is not None else opts.threshold
        if threshold is not None and not s.space.binary:
            raise HTTPException(422, f"threshold is for two-class runs; this run has {s.space.num_classes} classes")
        batcher.tokenizing += 1
        try:
            split = await s.tokenizer.encode(texts)
        except SentimentError as e:
            raise HTTPException(503, str(e)) from None
        finally:
            batcher.tokenizing -= 1
        split, keep = drop_empty(split)
        rows = [split.ids[split.offsets[i] : split.offsets[i + 1]] for i in range(len(split))]
        hashes = None if split.hashes is None else \
            [split.hashes[split.hash_offsets[i] : split.hash_offsets[i + 1]] for i in range(len(split))]
        logits = await batcher.logits(rows, hashes)
        probs = np.full((len(texts), s.space.num_classes), np.nan)
        if len(rows):
            probs[keep] = s.space.probabilities(logits)
        answers = prediction_rows(probs, s.space, threshold)
        return {"predictions": answers} if request.texts is not None else answers[0]

    return app


def _request_model() -> type:
    """The body of POST /predict, as a pydantic model (pydantic is imported only by a server)."""
    from pydantic import BaseModel, ConfigDict, Field, model_validator

    class PredictRequest(BaseModel):
        """Either `texts` (a list) or `text` (one); `threshold` overrides the server's for two-class runs."""

        model_config = ConfigDict(extra="forbid", strict=True)
        texts: list[str] | None = Field(None, description="Texts to classify.")
        text: str | None = Field(None, description="One text to classify (answered with one row).")
        threshold: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False, description="Two-class runs: P(positive) from which "
                                        "a text gets it.")

        @model_validator(mode="after")
        def _one_of(self) -> "PredictRequest":
            if (self.texts is None) == (self.text is None):
                raise ValueError("give either `texts` (a list of strings) or `text` (a string)")
            return self

    return PredictRequest


def check_limits(texts: list[str], opts: ServeOptions, *, max_texts: int | None = None,
                 option: str = "--max-texts") -> None:
    """413 for a request over the server's --max-texts (or max_texts, named option) or --max-chars
    (--max-bytes: the BodyLimit middleware); 422 for a lone surrogate."""
    from fastapi import HTTPException

    max_texts = opts.max_texts if max_texts is None else max_texts
    if len(texts) > max_texts:
        raise HTTPException(413, f"{len(texts):,} texts in one request; the server takes at most "
                                 f"{max_texts:,} ({option})")
    longest = max(map(len, texts), default=0)
    if longest > opts.max_chars:
        raise HTTPException(413, f"a text of {longest:,} characters; the server takes at most "
                                 f"{opts.max_chars:,} per text (--max-chars)")
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # JSON's "\ud83d" alone: half of a character, which no tokenizer takes
            raise HTTPException(422, f"text {i} holds a lone surrogate ({text[e.start]!a} at character {e.start}): "
                                     "not a Unicode character; send whole characters (a JSON pair such as "
                                     "\\ud83d\\ude00 is one)") from None


def _info(opts: ServeOptions, state: dict[str, Any]) -> dict[str, Any]:
    """GET /info: the labels, the model, the run's validation/test figures and commit, the server's settings."""
    s = state["scorer"]
    run = opts.run or s.model.meta.get("run")  # an exported model names the run it came from
    results = _results(Path(run)) if run else {}
    return {"run": run, "model_file": opts.model, "checkpoint": opts.checkpoint, "labels": list(s.space.names),
            "model": s.summary, "valid": _figures(results.get("valid")), "test": _figures(results.get("test")),
            "commit": results.get("commit"), "threshold": opts.threshold,
            "limits": {"max_texts": opts.max_texts, "max_bytes": opts.max_bytes, "max_chars": opts.max_chars},
            "batching": {"enabled": opts.batching, "max_wait_ms": opts.max_wait_ms,
                         "batch_tokens": opts.batch_tokens}, "threads": opts.resolved_threads(),
            "scored": dict(state["batcher"].stats), "explain": state["explainer"].info()}


def _results(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _figures(split: Any) -> dict[str, Any] | None:
    if not isinstance(split, dict):
        return None
    return {k: split[k] for k in ("accuracy", "macro_f1", "loss", "n") if k in split}


def app_from_environment() -> Any:
    """uvicorn's factory for --workers processes: options from the environment, the run loaded at startup."""
    opts = ServeOptions(**json.loads(os.environ[OPTIONS_ENV]))
    try:
        scorer = Scorer(opts)  # here, not in the lifespan: a refusal is one log line, not a traceback
    except SentimentError as e:
        log.error("error: %s", e)
        sys.exit(3)  # uvicorn's STARTUP_FAILURE
    return create_app(opts, scorer)


# ---------------------------------------------------------------- running it
def check_port(host: str, port: int) -> None:
    """One error line for an address that cannot be listened on, before anything is loaded, naming the cause:
    a host that is not an address (or name) of this machine, or a port in use or reserved."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise SentimentError(f"--host {host} is not an IP address or a name that resolves ({getattr(e, 'strerror', None) or e}); "
                             "use e.g. 127.0.0.1 (this machine) or 0.0.0.0 (every interface)") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
        try:
            sock.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise SentimentError(f"cannot listen on {host}: it is not an address of this machine "
                                     f"({e.strerror}); use 127.0.0.1 or 0.0.0.0, or one of this machine's addresses") from None
            if e.errno == errno.EACCES:
                raise SentimentError(f"cannot listen on port {port} of {host}: {e.strerror} (ports below 1024 need "
                                     "privileges; choose another --port)") from None
            raise SentimentError(f"cannot listen on {host}:{port}: {e.strerror or e} (another server there? "
                                 "choose another --port)") from None


@contextmanager
def _exit_quietly_on_signals() -> Iterator[None]:
    """uvicorn shuts down gracefully on SIGINT/SIGTERM and then raises the signal again for the default
    action (death by signal, or KeyboardInterrupt). A server asked to stop that stopped cleanly exits 0:
    the raised signal finds these no-op handlers instead."""
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(opts: ServeOptions, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info",
          access_log: bool = False) -> None:
    """Run the server until SIGINT/SIGTERM: stop accepting, answer what is in flight, return."""
    try:
        import uvicorn
    except ImportError:
        raise SentimentError("serving needs FastAPI and uvicorn: pip install 'sentiment[serve]'") from None
    if opts.workers < 1:
        raise SentimentError(f"--workers must be >= 1, got {opts.workers}")
    check_port(host, port)
    common = {"host": host, "port": port, "log_level": log_level, "access_log": access_log,
              "timeout_graceful_shutdown": 30}
    if opts.workers == 1:
        scorer = Scorer(opts)  # here, so that a bad run is one error line, not a traceback in startup
        server = uvicorn.Server(uvicorn.Config(create_app(opts, scorer), **common))
        with _exit_quietly_on_signals():
            server.run()
        if not server.started:
            raise SentimentError(f"the server on {host}:{port} did not start (see the log above)")
        return
    from sentiment.runs import load_run

    if opts.model is not None:  # not loadable: one line here, not one traceback per worker
        from sentiment.inference.exported import load_exported

        load_exported(Path(opts.model))
    else:
        load_run(Path(opts.run))
    opts = replace(opts, digest=model_digest(opts))  # every worker serves these files, or refuses to start
    os.environ[OPTIONS_ENV] = json.dumps(asdict(opts))
    config = uvicorn.Config("sentiment.inference.serve:app_from_environment", factory=True, workers=opts.workers,
                            **common)
    with _exit_quietly_on_signals():
        supervisor = _supervisor(config)
        supervisor.run()
    if supervisor.death is not None:
        raise SentimentError(f"{supervisor.death}; the server stopped (its other workers too), rather than go on "
                             "with fewer workers or a replacement that could load other weights")


def _supervisor(config: Any) -> Any:
    """uvicorn's --workers supervisor, except that a worker that dies or hangs stops the server (exit 1)
    instead of being replaced: a replacement loads the run afresh, and if best.pt changed meanwhile it would
    answer differently from the others (it refuses to start then: Scorer._check_digest)."""
    import inspect

    from uvicorn.supervisors.multiprocess import Multiprocess

    class StopOnWorkerDeath(Multiprocess):
        death: str | None = None

        def keep_subprocess_alive(self) -> None:
            if self.should_exit.is_set():
                return
            for process in self.processes:
                if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                    continue
                code = process.exitcode  # None: still running, but not answering
                process.kill()
                process.join()
                how = ("did not answer its health check (hung)" if code is None else
                       f"was killed by signal {-code}" if code < 0 else f"exited with code {code}")
                self.death = f"server worker {process.pid} {how}"
                log.error("%s: stopping the server", self.death)
                self.should_exit.set()
                return

    sockets = [config.bind_socket()]
    if "target" in inspect.signature(Multiprocess.__init__).parameters:  # uvicorn < 0.30
        import uvicorn

        return StopOnWorkerDeath(config, target=uvicorn.Server(config).run, sockets=sockets)
    return StopOnWorkerDeath(config, sockets=sockets)
