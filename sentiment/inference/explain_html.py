"""Explanations as one self-contained HTML page: inline CSS, no scripts, no external URLs (it opens offline)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from sentiment.inference.explain import Explanation

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 960px; color: #222; line-height: 1.9; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin: 1.6em 0 0.2em; }
.meta { color: #555; font-size: 0.9em; line-height: 1.4; }
.tokens span { padding: 1px 2px; border-radius: 3px; }
.tokens span.unread { opacity: 0.45; text-decoration: underline dotted #888; }
.legend span { padding: 1px 6px; border-radius: 3px; margin-right: 0.6em; }
table { border-collapse: collapse; font-size: 0.9em; } td { padding: 0 0.8em 0 0; }
"""


def _color(value: float, scale: float) -> str:
    """Green for a push towards the column's class, red away from it; the stronger, the deeper."""
    alpha = min(1.0, abs(value) / scale) if scale > 0 else 0.0
    rgb = "22,163,74" if value > 0 else "220,38,38"
    return f"rgba({rgb},{alpha * 0.85:.3f})"


def token_line(e: Explanation, column: int) -> str:
    """The text's tokens as spans colored by their contribution to one column's logit."""
    scores = e.token_scores(column)
    scale = max((abs(v) for v in scores), default=0.0)
    spans = []
    for token, value, read in zip(e.tokens, scores, e.read):
        title = f"{value:+.4f}" + ("" if read else " (not read by the recurrent part)")
        spans.append(f'<span class="{"" if read else "unread"}" style="background:{_color(value, scale)}" '
                     f'title="{escape(title)}">{escape(token)}</span>')
    return " ".join(spans)


def render_html(explanations: Sequence[Explanation], title: str = "sentiment explain",
                headings: Sequence[str] | None = None) -> str:
    """The page: per explanation its label, every class's probability, and for each column explained the tokens
    colored by their contribution (hover: the value). headings: one line per explanation (default: #i)."""
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>",
             '<p class="legend meta"><span style="background:rgba(22,163,74,0.7)">pushes towards the class</span>'
             '<span style="background:rgba(220,38,38,0.7)">pushes away from it</span>'
             '<span class="tokens"><span class="unread">dotted, faded</span></span> not read by the recurrent part '
             '(outside its head+tail window; the n-gram branch may still read it)</p>']
    for i, e in enumerate(explanations):
        heading = headings[i] if headings is not None else f"#{i + 1}"
        probs = " · ".join(f"P({escape(c)}) = {p:.4f}" for c, p in zip(e.classes, e.probabilities))
        parts.append(f"<h2>{escape(heading)}: {escape(e.label)}</h2><div class=\"meta\">{probs}<br>"
                     f"{escape(e.method)}; completeness error {e.completeness_error:.2%}</div>")
        for j, output in enumerate(e.outputs):
            gap = e.logits[j] - e.baseline_logits[j]
            parts.append(f"<div class=\"meta\">contributions to the logit of {escape(output)}: logit "
                         f"{e.logits[j]:+.3f}, baseline {e.baseline_logits[j]:+.3f}, difference {gap:+.3f}</div>"
                         f"<p class=\"tokens\">{token_line(e, j)}</p>")
    parts.append("</body></html>\n")
    return "".join(parts)
