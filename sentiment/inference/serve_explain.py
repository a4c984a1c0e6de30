"""`sentiment serve`'s POST /explain and its page (GET /): each token's contribution to the logits, next to the
label and every class's probability.

Explaining costs `steps` forward and backward passes per text (Integrated Gradients), hundreds of times a
prediction, so it has limits of its own (texts, tokens per text, steps), runs on a thread of its own (the
event loop keeps answering /health and /predict), and has a time bound: a request still unanswered after
`explain_timeout_s` (waiting included) is answered 503 with the reason, and what is left of it is dropped.

The explainer (sentiment.inference.explain) needs the run's PyTorch model and its gradients. A server of an
exported model (`--model`) has neither: its /explain answers 501 in one line saying that explanations need
`--run`, and the page shows the label and probabilities with that line.
"""

import asyncio
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from sentiment.errors import SentimentError

NEEDS_RUN = ("explanations need a run directory (serve --run DIR): an exported model (--model) has no gradients "
             "to attribute its prediction to its words")
_PAGE_HEADERS = {
    # the page may load nothing from anywhere: no CDN, no font, no image; it talks to this server only
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def page_html() -> str:
    """The one self-contained page GET / answers (inline CSS and JS, no external URL)."""
    return resources.files("sentiment.inference").joinpath("page.html").read_text(encoding="utf-8")


class _TooLate(Exception):
    """A request's time bound passed before its explanation finished."""


class _Job:
    """One request's explanation: past its monotonic deadline, or cancelled, it stops at the next check."""

    def __init__(self, deadline: float) -> None:
        self.deadline, self.cancelled = deadline, threading.Event()

    def late(self) -> bool:
        return self.cancelled.is_set() or time.monotonic() > self.deadline


class ExplainWorker:
    """The run's explainer, loaded in the background at startup, used on one thread of its own."""

    def __init__(self, opts: Any, started_digest: str | None, digest_now: Callable[[], str]) -> None:
        """started_digest: the sha256 of the run's files the scorer loaded; digest_now computes it afresh."""
        self.opts, self.digest_now = opts, digest_now
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="explain")
        self.default_steps: int | None = None
        self.loaded: Future | None = None
        self.running: _Job | None = None  # the job on the explain thread
        self.unavailable: str | None = NEEDS_RUN if opts.model is not None else None
        if self.unavailable is None:  # loading takes seconds (captum's import): /health is ready before
            self.loaded = self.pool.submit(self._load, started_digest)

    def _load(self, started_digest: str | None) -> Any:
        try:
            from sentiment.inference import explain

            explainer = explain.load_explainer(Path(self.opts.run), checkpoint=self.opts.checkpoint, device="cpu")
            embedding = getattr(explainer.model, "embedding", None)
            if embedding is not None:  # every pass of Integrated Gradients' batches starts there: a late job stops
                embedding.register_forward_pre_hook(self._stop_if_late)
            if started_digest is not None and self.digest_now() != started_digest:
                raise SentimentError(f"{self.opts.run} changed since the server started (its sha256 differs): "
                                     "explanations would come from other weights than predictions; restart the server")
            self.default_steps = min(explain.DEFAULT_STEPS, self.opts.explain_max_steps)
            return explainer
        except SentimentError as e:
            self.unavailable = str(e)
            raise
        except ImportError as e:  # the explain module itself, or one it needs, is missing
            self.unavailable = f"explanations are not available in this installation ({e})"
            raise SentimentError(self.unavailable) from None

    def status(self) -> str:
        if self.unavailable is not None:
            return "unavailable"
        return "ready" if self.loaded is not None and self.loaded.done() else "loading"

    def info(self) -> dict[str, Any]:
        o = self.opts
        return {"status": self.status(), "reason": self.unavailable, "default_steps": self.default_steps,
                "max_texts": o.explain_max_texts, "max_tokens": o.explain_max_tokens,
                "max_steps": o.explain_max_steps, "timeout_s": o.explain_timeout_s}

    async def explain(self, texts: list[str], steps: int | None, deadline: float) -> list[dict[str, Any]]:
        """Explanations of texts (none empty) in their order; _TooLate once the monotonic deadline passes."""
        job = _Job(deadline)
        future = asyncio.get_running_loop().run_in_executor(self.pool, self._explain_all, texts, steps, job)
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            job.cancelled.set()  # the explain thread stops at its next check (within one batch of steps)
            raise _TooLate from None
        except asyncio.CancelledError:  # the client went away
            job.cancelled.set()
            raise

    def _explain_all(self, texts: list[str], steps: int | None, job: _Job) -> list[dict[str, Any]]:
        explainer = self.loaded.result()  # raises the load's SentimentError
        answers = []
        self.running = job
        try:
            for text in texts:  # one at a time, checked between texts and between batches of steps
                if job.late():
                    raise _TooLate
                explanation, = explainer.explain([text], steps=steps or self.default_steps,
                                                 max_tokens=self.opts.explain_max_tokens)
                answers.append(_finite(explanation.to_dict()))
        finally:
            self.running = None
        return answers

    def _stop_if_late(self, module: Any, inputs: Any) -> None:
        job = self.running
        if job is not None and job.late():
            raise _TooLate

    def close(self) -> None:
        """At shutdown: queued jobs are dropped, the running one stops at its next check."""
        job = self.running
        if job is not None:
            job.cancelled.set()
        self.pool.shutdown(wait=False, cancel_futures=True)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such a float (a completeness error of 0/0) is written as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def explain_request_model() -> type:
    """The body of POST /explain: /predict's, plus `steps`."""
    from pydantic import BaseModel, ConfigDict, Field, model_validator

    class ExplainRequest(BaseModel):
        """Either `texts` (a list) or `text` (one); `steps`: Integrated Gradients' steps (default: the server's)."""

        model_config = ConfigDict(extra="forbid", strict=True)
        texts: list[str] | None = Field(None, description="Texts to explain.")
        text: str | None = Field(None, description="One text to explain (answered with one explanation).")
        steps: int | None = Field(None, ge=1, description="Integrated Gradients' steps (more: closer to "
                                  "completeness, slower); at most the server's --explain-max-steps.")
        threshold: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False,
                                        description="Two-class runs: P(positive) from which a text gets it.")

        @model_validator(mode="after")
        def _one_of(self) -> "ExplainRequest":
            if (self.texts is None) == (self.text is None):
                raise ValueError("give either `texts` (a list of strings) or `text` (a string)")
            return self

    return ExplainRequest


def add_page_and_explain(app: Any, opts: Any, state: dict[str, Any], check_limits: Callable[..., None]) -> None:
    """GET / (the page) and POST /explain on app; state["explainer"] is the ExplainWorker (set at startup).
    check_limits: serve's, for --max-chars and the count of texts."""
    from fastapi import HTTPException
    from fastapi.responses import HTMLResponse

    from sentiment.inference.predict import prediction_rows

    page = page_html()
    ExplainRequest = explain_request_model()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> Any:
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    @app.post("/explain")
    async def explain(request: ExplainRequest) -> Any:
        """Each token's contribution to the logits (one column for two classes: the positive class's logit),
        the label and every class's probability. 501 where the server cannot explain (an exported model)."""
        deadline = time.monotonic() + opts.explain_timeout_s
        worker: ExplainWorker = state["explainer"]
        if worker.unavailable is not None:
            raise HTTPException(501, worker.unavailable)
        texts = request.texts if request.texts is not None else [request.text]
        check_limits(texts, opts, max_texts=opts.explain_max_texts, option="--explain-max-texts")
        if request.steps is not None and request.steps > opts.explain_max_steps:
            raise HTTPException(422, f"steps={request.steps:,}; the server takes at most {opts.explain_max_steps:,} "
                                     "(--explain-max-steps)")
        s = state["scorer"]
        threshold = request.threshold if request.threshold is not None else opts.threshold
        if threshold is not None and not s.space.binary:
            raise HTTPException(422, f"threshold is for two-class runs; this run has {s.space.num_classes} classes")
        try:
            counts = await s.tokenizer.count(texts)  # in the tokenizer process: a huge text costs no GIL here
        except SentimentError as e:
            raise HTTPException(503, str(e)) from None
        longest = max(counts, default=0)
        if longest > opts.explain_max_tokens:
            raise HTTPException(413, f"a text of {longest:,} tokens; explanations take at most "
                                     f"{opts.explain_max_tokens:,} per text (--explain-max-tokens)")
        kept = [t for t, n in zip(texts, counts) if n > 0]
        try:
            explained = iter(await worker.explain(kept, request.steps, deadline) if kept else [])
        except _TooLate:
            raise HTTPException(503, f"the explanation took longer than the server's bound of "
                                     f"{opts.explain_timeout_s:g} s (--explain-timeout, waiting included); send "
                                     "fewer texts or steps, or try again when the server is less busy") from None
        except SentimentError as e:  # the explainer did not load (501), or refused this text (422)
            raise HTTPException(501 if worker.unavailable is not None else 422, str(e)) from None
        answers = []
        for n in counts:
            if n == 0:
                answers.append({"error": "empty text: skipped"})
                continue
            answer = next(explained)
            if threshold is not None:  # the label /predict gives for the same text and threshold
                import numpy as np

                answer["label"] = prediction_rows(np.asarray([answer["probabilities"]]), s.space, threshold)[0]["label"]
            answers.append(answer)
        return {"explanations": answers} if request.texts is not None else answers[0]
