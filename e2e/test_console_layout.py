"""The console's lists fit a 1280x800 window: no horizontal scroll, the last column in view.

In view means inside the window and not clipped by a scrolling box around it (Django's admin
puts the result table in one, so a too-wide table scrolls there while the page does not).
"""

from __future__ import annotations

import re

from conftest import Fleet
from playwright.sync_api import Locator, Page, expect

# Why ``element`` is not fully in view: outside the window, or cut by an ancestor that clips.
_NOT_IN_VIEW = """(element) => {
  const box = element.getBoundingClientRect();
  const problems = [];
  if (box.left < 0 || box.right > window.innerWidth) {
    problems.push(`spans ${box.left}-${box.right} px of a ${window.innerWidth} px window`);
  }
  for (let node = element.parentElement; node && node !== document.body; node = node.parentElement) {
    if (getComputedStyle(node).overflowX === "visible") continue;
    const classes = typeof node.className === "string" ? node.className.trim().split(/\\s+/) : [];
    const name = node.tagName.toLowerCase() + (node.id ? "#" + node.id : "") +
      classes.filter(Boolean).map((c) => "." + c).join("");
    const frame = node.getBoundingClientRect();
    if (box.left < frame.left - 0.5 || box.right > frame.right + 0.5) {
      problems.push(`cut by ${name} (${frame.left}-${frame.right} px)`);
    }
    if (node.scrollWidth > node.clientWidth + 1) {
      problems.push(`${name} scrolls sideways (${node.scrollWidth} px in ${node.clientWidth} px)`);
    }
  }
  return problems;
}"""


def _assert_fits(page: Page, last_column: Locator) -> None:
    expect(last_column).to_be_visible()
    scroll_width, window_width = page.evaluate(
        "() => [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert scroll_width <= window_width, f"the page scrolls sideways: {scroll_width} px in {window_width} px"
    assert last_column.evaluate(_NOT_IN_VIEW) == []


def test_host_list_fits_1280px(as_admin: Page, fleet: Fleet) -> None:
    page = as_admin
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(fleet.reverse("admin:hosts_host_changelist"))
    expect(page.locator("#result_list tbody tr")).to_have_count(fleet.hosts)
    header = page.locator("#result_list thead th", has_text=re.compile(r"^\s*last seen\s*$", re.I))
    _assert_fits(page, header)


def test_query_list_fits_1280px(as_admin: Page, fleet: Fleet) -> None:
    page = as_admin
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(fleet.reverse("admin:queries_query_changelist"))
    _assert_fits(page, page.locator("#result_list tbody").get_by_role("link", name="Run live").first)
