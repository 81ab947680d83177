"""Browser checks of Superset 6.1.0 dashboards: what a manager really sees, drawn by a real browser.

The REST API can say that a chart's query runs; only a browser shows that the chart is drawn, in
Russian, with Russian number formats. This module drives Debian's chromium (/usr/bin/chromium, never a
browser downloaded by `playwright install`) with Python Playwright and checks:

- the login page is in Russian (it stays English unless the Public role may read the language pack:
  `can_language_pack on Superset`), and logging in through the real form works;
- a dashboard draws: every chart holder leaves its loading state, in every tab (tabs are clicked
  through, nested ones too; a chart in a tab that was never shown has no DOM at all), and each chart
  is classified as drawn, error or empty, with its error message, its visible text and, for Big
  Number charts, the number exactly as displayed;
- how long that takes (seconds from navigation until the charts of the first view are drawn).
Not checked here: whether the values are right (the caller compares them, with parse_number), the
content of an ECharts canvas (only that a canvas was drawn: its visible text is ""), native filters.
A table chart's cells can be read and clicked (a cross filter), and a redraw waited for.

DOM markers, read from Superset 6.1.0's real DOM (the data-test attributes are its own test hooks):
- `[data-test="chart-grid-component"]`: one per chart, with `data-test-chart-id`,
  `data-test-chart-name` and `data-test-viz-type`;
- `[data-test="loading-indicator"]` inside it while the chart waits for its data;
- `[role="alert"]` (an `ant-alert-error`) inside `.dashboard-chart` when the query failed; its
  `.ant-alert-message` stays English ("Data error"), the description holds the database's message;
- `.ant-empty` with "Не было получено данных по этому запросу" when a table or ECharts chart got no
  rows; a Big Number whose value is NULL instead draws `.header-line` "Нет данных" (the aggregate of
  no rows, COUNT(*) = 0, is drawn as "0");
- `.header-line` holds a Big Number's number ("382 545,5" with U+00A0 from D3_FORMAT's thousands,
  "33,7%", negatives with an ASCII hyphen "-5 698"); `.subtitle-line` its subtitle;
- tabs are `[role="tab"]` with id `<TABS id>-tab-<TAB id>` and `aria-selected`; their panels
  `[role="tabpanel"]` with `aria-labelledby` (the grid's own panel has no tab);
- `[data-test="grid-container"]` once the dashboard is laid out; an unknown dashboard is a
  server-rendered `.error-page-content` ("Page not found"); a refused login a
  `[data-test="toast-container"]` ("Неверное имя пользователя или пароль").
Dashboard virtualization (DASHBOARD_VIRTUALIZATION: a row more than one viewport height away keeps
a spinner instead of its chart) is off when `navigator.webdriver` is true, as under Playwright; a chart
whose spinner stays is scrolled into view anyway (verified with virtualization forced on).

Use a fresh, empty profile folder for each browser: FAB's get_locale() writes the default locale into
the session cookie on the first request and reads it from there afterwards, so a reused profile keeps
the language the server had then.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # Playwright is imported lazily: parse_number's unit tests run without it.
    from playwright.sync_api import BrowserContext, Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
VIEWPORT = {"width": 1600, "height": 1000}
LOCALE = "ru-RU"
TIMEZONE = "Europe/Moscow"
# What 6.1.0's Russian login page shows (title "Вход", labels, button "Вход").
RUSSIAN_LOGIN_TEXTS = ("Вход", "Имя пользователя", "Пароль")
ENGLISH_LOGIN_TEXTS = ("Sign in", "Username", "Password")
# A Big Number whose value is NULL draws this instead of a number.
NO_DATA_TEXTS = ("Нет данных", "No data")
POLL_S = 0.1
STABLE_POLLS = 5  # the same all-settled snapshot this many polls in a row ends a wait
SCROLL_AFTER_S = 0.5  # a chart unsettled this long is scrolled into view (if it is not in view)

State = Literal["drawn", "error", "empty"]


class SupersetBrowserError(RuntimeError):
    """Superset did not behave as a logged-in user's browser expects."""


class LoginFailed(SupersetBrowserError):
    """The login form did not let the user in."""


class DashboardTimeout(SupersetBrowserError):
    """Charts were still loading when the time ran out."""


@dataclass(frozen=True)
class ChartReport:
    chart_id: int
    title: str
    viz_type: str
    state: State
    error: str | None  # the alert's text when state == "error"
    text: str  # visible text of the chart body (not its title); "" for a canvas-only ECharts chart
    big_number: str | None  # `.header-line` as displayed, for Big Number charts
    tab: str  # tab labels from the outside in, joined by " / "; "" when in no tab
    seconds: float  # from navigation until this chart was seen settled


@dataclass
class DashboardReport:
    url: str
    seconds: float  # navigation until every chart of the first view was drawn (or failed, or empty)
    seconds_all_tabs: float  # the same, after every tab was shown
    charts: list[ChartReport] = field(default_factory=list)

    def by_title(self, title: str) -> ChartReport:
        return _only([c for c in self.charts if c.title == title], title)

    def by_id(self, chart_id: int) -> ChartReport:
        return _only([c for c in self.charts if c.chart_id == chart_id], str(chart_id))

    def states(self) -> dict[str, State]:
        return {c.title: c.state for c in self.charts}


def _only(found: list[ChartReport], what: str) -> ChartReport:
    if len(found) != 1:
        raise KeyError(f"{len(found)} charts match {what!r}")
    return found[0]


@contextmanager
def browser(profile_dir: Path) -> Iterator[BrowserContext]:
    """Debian's chromium in a persistent context on a fresh profile folder (created if missing)."""
    from playwright.sync_api import sync_playwright

    profile_dir.mkdir(parents=True, exist_ok=True)
    if any(profile_dir.iterdir()):
        raise ValueError(f"{profile_dir} is not empty: use a fresh profile (the session keeps a locale)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile_dir), executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_FLAGS),
            viewport=VIEWPORT, locale=LOCALE, timezone_id=TIMEZONE)
        try:
            yield context
        finally:
            context.close()


def login_page_text(page: Page, base_url: str) -> str:
    """The visible text of the login page once the form is drawn (after the language pack)."""
    page.goto(f"{base_url.rstrip('/')}/login/")
    page.wait_for_selector('[data-test="login-button"]')
    return page.inner_text("body")


def login_page_language(page: Page, base_url: str) -> Literal["ru", "en", "unknown"]:
    text = login_page_text(page, base_url)
    if all(word in text for word in RUSSIAN_LOGIN_TEXTS):
        return "ru"
    return "en" if all(word in text for word in ENGLISH_LOGIN_TEXTS) else "unknown"


def login(page: Page, base_url: str, user: str, password: str, timeout_s: float = 30) -> None:
    """Log in through the real form at /login/; LoginFailed with the page's message otherwise."""
    page.goto(f"{base_url.rstrip('/')}/login/")
    # The form is drawn again once the language pack arrives; typing before that can be lost
    # (seen: a refused login with the right password). Wait for the page to settle, then check.
    page.wait_for_load_state("networkidle")
    fields = {'[data-test="username-input"]': user, '[data-test="password-input"]': password}
    for _ in range(3):
        for selector, value in fields.items():
            page.fill(selector, value)
        page.wait_for_timeout(200)
        if all(page.input_value(selector) == value for selector, value in fields.items()):
            break
    page.click('[data-test="login-button"]')
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "/login" not in page.url:
            return
        toast = page.locator('[data-test="toast-container"]')
        if toast.count():
            raise LoginFailed(f"login as {user!r} refused: {toast.first.inner_text().strip()}")
        page.wait_for_timeout(100)
    raise LoginFailed(f"login as {user!r}: still on {page.url} after {timeout_s} s")


# One snapshot of every chart holder: its ids, whether it is shown, and its state.
_SNAPSHOT_JS = """(noData) => Array.from(document.querySelectorAll('[data-test="chart-grid-component"]')).map(h => {
  const body = h.querySelector('.dashboard-chart') || h;
  const alert = body.querySelector('[role="alert"]');
  const big = body.querySelector('.header-line');
  const slice = body.querySelector('[data-test="slice-container"]');
  let state = 'pending';
  if (body.querySelector('[data-test="loading-indicator"]')) state = 'loading';
  else if (alert) state = 'error';
  else if (body.querySelector('.ant-empty') || (big && noData.includes(big.innerText.trim()))) state = 'empty';
  else if (slice && (slice.querySelector('canvas, svg, table') || slice.innerText.trim())) state = 'drawn';
  const tabs = [];
  for (let p = h.closest('[role="tabpanel"]'); p; p = p.parentElement && p.parentElement.closest('[role="tabpanel"]')) {
    const tab = document.getElementById(p.getAttribute('aria-labelledby'));
    if (tab) tabs.unshift(tab.innerText.trim());  // the grid's own panel has no tab
  }
  return {id: Number(h.dataset.testChartId), title: h.dataset.testChartName || '', viz: h.dataset.testVizType || '',
          shown: h.getClientRects().length > 0, state, error: alert ? alert.innerText.trim() : null,
          text: body.innerText.trim(), big: big ? big.innerText.trim() : null, tab: tabs.join(' / ')};
})"""


def _settle(page: Page, t0: float, deadline: float, seen: dict[int, ChartReport]) -> float:
    """Poll until every shown chart is settled; record each in `seen`; return when the last settled."""
    last_change, stable, signature, shown, pending_since = time.monotonic(), 0, None, [], {}
    while stable < STABLE_POLLS:
        if time.monotonic() > deadline:
            raise DashboardTimeout(f"charts not drawn in time: {[(c['title'], c['state']) for c in _unsettled(shown)]}")
        shown = [c for c in page.evaluate(_SNAPSHOT_JS, list(NO_DATA_TEXTS)) if c["shown"]]
        for chart in shown:
            _record(chart, seen, t0)
        _scroll_stuck(page, shown, pending_since)
        now = [(c["id"], c["state"]) for c in shown]
        if now != signature:
            last_change, signature, stable = time.monotonic(), now, 0
        stable = stable + 1 if not _unsettled(shown) and not _page_loading(page) else 0
        page.wait_for_timeout(POLL_S * 1000)
    return last_change - t0


def _unsettled(shown: list[dict]) -> list[dict]:
    return [c for c in shown if c["state"] in ("loading", "pending")]


def _page_loading(page: Page) -> bool:
    """A loading indicator outside chart holders: the dashboard itself is still loading."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('[data-test="loading-indicator"]'))
        .some(e => !e.closest('[data-test="chart-grid-component"]') && e.getClientRects().length > 0)""")


def _record(chart: dict, seen: dict[int, ChartReport], t0: float) -> None:
    """Keep a chart's latest settled look; its seconds are when it first looked that way."""
    if chart["state"] in ("loading", "pending"):
        return
    report = ChartReport(
        chart_id=chart["id"], title=chart["title"], viz_type=chart["viz"], state=chart["state"],
        error=chart["error"], text=chart["text"], big_number=chart["big"] if "big_number" in chart["viz"] else None,
        tab=chart["tab"], seconds=round(time.monotonic() - t0, 3))
    old = seen.get(chart["id"])
    if old is None or (old.state, old.text, old.error) != (report.state, report.text, report.error):
        seen[chart["id"]] = report


def _scroll_stuck(page: Page, shown: list[dict], pending_since: dict[int, float]) -> None:
    """Scroll to the first chart unsettled for a while: with dashboard virtualization on, a chart
    far below the viewport keeps its spinner until it is near the viewport."""
    now = time.monotonic()
    for chart in shown:
        if chart["state"] not in ("loading", "pending"):
            pending_since.pop(chart["id"], None)
        elif now - pending_since.setdefault(chart["id"], now) > SCROLL_AFTER_S:
            _chart(page, chart["id"]).scroll_into_view_if_needed()
            pending_since.clear()
            return


_TABS_JS = """() => Array.from(document.querySelectorAll('[role="tab"]'))
  .filter(t => t.id.includes('-tab-TAB-') && t.getClientRects().length > 0)
  .map(t => ({id: t.id, selected: t.getAttribute('aria-selected') === 'true'}))"""


def _visit_tabs(page: Page, t0: float, deadline: float, seen: dict[int, ChartReport]) -> None:
    """Show every tab once. Always the last unvisited tab in document order: a tab's own sub-tabs come
    after it, so a subtree is done before a tab that hides it is clicked."""
    visited: set[str] = set()
    while True:
        tabs = page.evaluate(_TABS_JS)
        visited |= {t["id"] for t in tabs if t["selected"]}
        todo = [t["id"] for t in tabs if t["id"] not in visited]
        if not todo:
            return
        visited.add(todo[-1])
        _click_tab(page, todo[-1])
        _settle(page, t0, deadline, seen)


def _click_tab(page: Page, tab_id: str) -> None:
    page.locator(f'[id="{tab_id}"]').click()
    page.wait_for_function("id => document.getElementById(id).getAttribute('aria-selected') === 'true'", arg=tab_id)


def open_dashboard(page: Page, base_url: str, id_or_slug: int | str, timeout_s: float = 90,
                   all_tabs: bool = True) -> DashboardReport:
    """Open a dashboard, wait until each chart is drawn, failed or empty (in every tab unless
    all_tabs=False), and report on each chart. The tabs shown at first are selected again at the end."""
    url = f"{base_url.rstrip('/')}/superset/dashboard/{id_or_slug}/"
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    page.goto(url, wait_until="domcontentloaded")
    _wait_for_grid(page, url, deadline)
    seen: dict[int, ChartReport] = {}
    first_view = _settle(page, t0, deadline, seen)
    if all_tabs:
        initial = [t["id"] for t in page.evaluate(_TABS_JS) if t["selected"]]
        _visit_tabs(page, t0, deadline, seen)
        all_seen = time.monotonic() - t0
        for tab_id in initial:  # outer tabs first: document order
            _click_tab(page, tab_id)
        _settle(page, t0, deadline, seen)
    else:
        all_seen = first_view
    charts = sorted(seen.values(), key=lambda c: c.chart_id)
    return DashboardReport(url=url, seconds=round(first_view, 3), seconds_all_tabs=round(all_seen, 3), charts=charts)


def _wait_for_grid(page: Page, url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if "/login" in page.url:
            raise SupersetBrowserError(f"{url}: redirected to the login page (not logged in?)")
        if page.locator('[data-test="grid-container"]').count():
            return
        problem = page.locator('[data-test="toast-container"], .error-page-content')
        if problem.count():
            raise SupersetBrowserError(f"{url}: {problem.first.inner_text().strip()[:300]}")
        page.wait_for_timeout(POLL_S * 1000)
    raise DashboardTimeout(f"{url}: no dashboard grid; the page shows: {page.inner_text('body')[:300]!r}")


def _chart(page: Page, chart_id: int):
    return page.locator(f'[data-test="chart-grid-component"][data-test-chart-id="{chart_id}"]')


def table_column(page: Page, chart_id: int, column: int = 0) -> list[str]:
    """The cells of one column of a table chart, as displayed (the rows of its current page)."""
    return [text.strip() for text in _chart(page, chart_id).locator("tbody tr").evaluate_all(
        f"rows => rows.map(r => (r.cells[{column}] || {{innerText: ''}}).innerText)")]


def click_cell(page: Page, chart_id: int, text: str, column: int = 0) -> None:
    """Click the cell of a table chart that displays `text` (in a dimension's column: a cross
    filter on that value, when the dashboard's cross filters are on)."""
    cells = _chart(page, chart_id).locator(f"tbody tr td:nth-child({column + 1})")
    cells.filter(has_text=re.compile(f"^{re.escape(text)}$")).first.click()


def wait_for_column(page: Page, chart_id: int, done, timeout_s: float = 30, column: int = 0) -> list[str]:
    """Poll a table chart's column until done(cells) holds on STABLE_POLLS polls in a row (a cross
    filter redraws it: its spinner, then the new rows); returns the cells."""
    deadline, streak, cells = time.monotonic() + timeout_s, 0, []
    while time.monotonic() < deadline:
        loading = _chart(page, chart_id).locator('[data-test="loading-indicator"]').count()
        cells = [] if loading else table_column(page, chart_id, column)
        streak = streak + 1 if cells and done(cells) else 0
        if streak >= STABLE_POLLS:
            return cells
        page.wait_for_timeout(POLL_S * 1000)
    raise DashboardTimeout(f"chart {chart_id}: its table never showed what was awaited; last: {cells[:10]}")


def screenshot(page: Page, path: Path | str, wait_s: float = 1.0) -> Path:
    """A full-page PNG, from the top (else the sticky header is drawn mid-page), after wait_s for
    ECharts' drawing animation to finish."""
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(wait_s * 1000)
    page.screenshot(path=str(path), full_page=True)
    return Path(path)


# parse_number: Russian-formatted numbers as Superset displays them with D3_FORMAT
# {"decimal": ",", "thousands": "\u00a0", ...}.
_SPACES = " \u00a0\u202f\u2009"  # space, no-break space, narrow no-break space, thin space
_SCALES = {"%": Decimal("0.01"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
           "T": Decimal(10) ** 12, "тыс.": Decimal(10) ** 3, "тыс": Decimal(10) ** 3,
           "млн.": Decimal(10) ** 6, "млн": Decimal(10) ** 6, "млрд.": Decimal(10) ** 9,
           "млрд": Decimal(10) ** 9, "трлн.": Decimal(10) ** 12, "трлн": Decimal(10) ** 12}
_NUMBER = re.compile(
    rf"(?P<sign>[-+\u2212])?"
    rf"(?P<int>[0-9]{{1,3}}(?:[{_SPACES}][0-9]{{3}})+|[0-9]+)"
    rf"(?:,(?P<frac>[0-9]+))?"
    rf"(?:[{_SPACES}]?(?P<scale>{'|'.join(re.escape(s) for s in sorted(_SCALES, key=len, reverse=True))}))?"
    rf"(?:[{_SPACES}]?(?P<currency>₽))?")


def parse_number(text: str) -> float:
    """A number as Superset displays it in Russian, as a float.

    Accepted: an optional sign ("-", "+" or the minus sign U+2212); digits, either ungrouped ("1234")
    or in groups of three separated by a space, no-break space (U+00A0), narrow no-break space
    (U+202F) or thin space (U+2009) ("1 234 567"); an optional decimal comma ("1 234,5"); then,
    optionally after one such space, a percent sign (the value is divided by 100: "12,5 %" -> 0.125,
    as d3's "%" formats multiplied it), an SI suffix k/M/G/T ("1,23k") or a Russian abbreviation
    тыс./млн/млрд/трлн with or without the dot ("1,2 тыс." -> 1200); finally an optional "₽".
    Whitespace around the text is ignored.

    Refused with ValueError: an empty text, "Нет данных", a decimal point or a comma as thousands
    separator (English formats such as "1,234.5" or SMART_NUMBER's "1.23k"), malformed groups
    ("12 34"), anything else around the number.
    """
    match = _NUMBER.fullmatch(text.strip(_SPACES + "\t\n"))
    if not match:
        raise ValueError(f"not a Russian-formatted number: {text!r}")
    digits = re.sub(f"[{_SPACES}]", "", match["int"]) + "." + (match["frac"] or "0")
    value = Decimal(digits) * _SCALES.get(match["scale"] or "", Decimal(1))
    return float(-value if match["sign"] in ("-", "\u2212") else value)
