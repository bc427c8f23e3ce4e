"""Accessibility checked by a tool: axe-core run in the page, as the browser tests see it.

``assert_no_serious_axe_violations(page)`` fails with a readable list of every rule that axe rates
serious or critical (contrast, missing names, broken ARIA...). Minor and moderate findings are left to
review. axe is evaluated through the DevTools protocol, which the page's Content-Security-Policy does
not govern, so the policy under test stays as strict as in production.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")

RUN = """async (context) => {
  const results = await axe.run(context || document, { resultTypes: ["violations"] });
  return results.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ") + ": " + n.failureSummary.split("\\n").slice(1).join(" ")),
  }));
}"""


@cache
def axe_source() -> str:
    return AXE.read_text()


def axe_violations(page, context: str | None = None) -> list[dict]:
    """axe's violations on the page as it is now (or within the ``context`` selector)."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source())
    return page.evaluate(RUN, context)


def assert_no_serious_axe_violations(page, context: str | None = None) -> None:
    blocking = [v for v in axe_violations(page, context) if v["impact"] in BLOCKING]
    report = "\n".join(f"{v['impact']} {v['id']}: {v['help']}\n    " + "\n    ".join(v["nodes"]) for v in blocking)
    assert not blocking, f"axe-core found serious or critical violations on {page.url}:\n{report}"
