"""The generation task's web partial renders its metrics and sample generations (plain Jinja
over the EvalMetrics dict), escaping what users wrote."""

from __future__ import annotations

from pathlib import Path

import jinja2

from modelmill.training.contract import Example, Output
from modelmill.training.tasks.generation import GENERATION
from modelmill.web.rendering import number

PARTIALS = Path(__file__).parents[2] / "src" / "modelmill" / "web" / "templates"


def test_generation_partial_shows_metrics_and_generations():
    examples = [
        Example("a", "text", lambda: "upper: <b>cat</b>", target_text="<B>CAT</B>"),
        Example("b", "text", lambda: "reverse: one two", target_text="two one"),
    ]
    outputs = [Output(text="<B>CAT</B>"), Output(text="one two")]
    metrics = GENERATION.metrics(examples, outputs, [], False, {"loss": 1.0, "held_out": True})
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(PARTIALS), autoescape=True)
    environment.filters["number"] = number
    html = environment.get_template(f"partials/{GENERATION.web_partial}.html").render(
        metrics=metrics
    )
    assert "Perplexity" in html and "2.718" in html and "Exact match" in html
    assert "0.5" in html  # one of two exact
    assert "&lt;B&gt;CAT&lt;/B&gt;" in html and "<B>" not in html
    assert html.count('class="right"') == 1 and html.count('class="wrong"') == 1
