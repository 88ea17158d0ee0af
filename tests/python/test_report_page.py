"""The report page in a real browser (Debian's chromium, driven through its chromedriver by
Selenium): every chart renders with no console errors, each chart's data equals its report view's
rows fetched over Flight SQL with ADBC, filters narrow the charts the way the Parquet files (read
with pyarrow) say they should, a tenant user sees only their tenant, and a bad filter shows a
message instead of a trace."""

import base64
import datetime as dt
import json
import math
import os
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from conftest import Server, adbc_connect

CHARTS = [
    "cost-per-outcome",
    "first-try-curve",
    "retry-tail",
    "context-growth",
    "routing-candidates",
    "bpo-comparison",
    "marginal-utility",
    "waste",
    "cache-and-tiers",
    "allocation",
]


def page_url(query: str = "") -> str:
    port = int(os.environ["TOKENLEDGER_HTTP_PORT"])
    return f"http://127.0.0.1:{port}/{query}"


def tenant_user():
    name, password, tenant = os.environ["TOKENLEDGER_PAGE_TENANT_USER"].split(":")
    return name, password, tenant


def credentials(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Browser:
    """Headless chromium signed in as one user (an Authorization header on every request)."""

    def __init__(self, user: str, password: str):
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for argument in [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
            f"--user-data-dir={self.profile}",
        ]:
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": credentials(user, password)}}
        )

    def open(self, query: str = ""):
        self.driver.get(page_url(query))
        return self

    def sections(self):
        """Each chart: its id, report, rows (the embedded chart data) and how much it drew."""
        return self.driver.execute_script(
            """
            return Array.from(document.querySelectorAll('section.chart')).map(s => ({
                id: s.id,
                report: s.dataset.report,
                rows: JSON.parse(s.querySelector('script.chart-data').textContent),
                shapes: s.querySelectorAll('figure svg rect, figure svg polyline, figure svg path, figure svg circle').length,
                sql: s.querySelector('a.sql').href,
            }));
            """
        )

    def chart(self, chart_id: str):
        return next(s for s in self.sections() if s["id"] == chart_id)

    def console_errors(self):
        return [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def close(self):
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def admin(server: Server):
    browser = Browser(server.user, server.password)
    yield browser
    browser.close()


def view_rows(server: Server, sql: str, user=None):
    """Rows of `sql` over Flight SQL (ADBC), as the server's administrator or `user`."""
    if user:
        server = Server(**{**server.__dict__, "user": user[0], "password": user[1]})
    with adbc_connect(server) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table().to_pylist()


def same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)
    return a == b


def sort_key(row):
    return json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}, sort_keys=True)


def assert_same_rows(page_rows, flight_rows, what):
    assert len(page_rows) == len(flight_rows), f"{what}: {len(page_rows)} rows on the page, {len(flight_rows)} over Flight"
    for mine, theirs in zip(sorted(page_rows, key=sort_key), sorted(flight_rows, key=sort_key)):
        assert sorted(mine) == sorted(theirs), what
        for column in mine:
            assert same(mine[column], theirs[column]), f"{what}.{column}: page {mine[column]!r}, Flight {theirs[column]!r}"


def test_every_chart_renders_with_no_console_errors(admin):
    admin.open()
    sections = admin.sections()
    assert [s["id"] for s in sections] == CHARTS
    for section in sections:
        assert section["rows"], f"{section['id']} has no rows"
        # Axes, bars or lines: a drawn chart has many shapes; an empty one has none.
        assert section["shapes"] > 10, f"{section['id']} drew {section['shapes']} shapes"
    assert admin.console_errors() == []
    assert admin.driver.find_elements(By.ID, "error") == []
    timing = admin.driver.execute_script(
        "const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime;"
    )
    print(f"report page loaded in {timing:.0f} ms (debug build)")
    artefacts = pathlib.Path(os.environ.get("TOKENLEDGER_ARTEFACTS", tempfile.gettempdir()))
    artefacts.mkdir(parents=True, exist_ok=True)
    height = admin.driver.execute_script("return document.documentElement.scrollHeight")
    admin.driver.set_window_size(1400, height + 40)
    assert admin.driver.save_screenshot(str(artefacts / "report-page.png"))


def test_each_charts_data_equals_its_report_views_rows_over_flight(admin, server):
    admin.open()
    for section in admin.sections():
        assert_same_rows(section["rows"], view_rows(server, f"SELECT * FROM {section['report']}"), section["id"])


def outcomes_per_workflow(server: Server, mask=None):
    """{workflow: work items} from the outcomes Parquet files (pyarrow), under `mask`."""
    outcomes = ds.dataset(server.data / "outcomes", format="parquet").to_table()
    if mask is not None:
        outcomes = outcomes.filter(mask(outcomes))
    counts = outcomes.group_by("workflow").aggregate([("work_item_id", "count")]).to_pylist()
    return {r["workflow"]: r["work_item_id_count"] for r in counts}


def work_items_per_workflow(section):
    return {r["workflow"]: r["work_items"] for r in section["rows"] if r["all_tenants"]}


def test_a_day_range_counts_the_work_items_closed_in_it(admin, server):
    admin.open("?from=2026-02-01&to=2026-02-28")
    start = dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc)
    end = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    expected = outcomes_per_workflow(
        server,
        lambda t: pc.and_(pc.greater_equal(t["closed_at"], start), pc.less(t["closed_at"], end)),
    )
    assert expected and sum(expected.values()) < sum(outcomes_per_workflow(server).values())
    assert work_items_per_workflow(admin.chart("cost-per-outcome")) == expected
    assert admin.console_errors() == []


def test_each_charts_sql_link_gives_its_rows_over_flight(admin, server):
    """The link under a filtered chart is SQL an analyst can run as it is in a BI tool."""
    admin.open("?from=2026-02-01&to=2026-03-15&workflow=insurance_claim")
    for section in admin.sections():
        request = urllib.request.Request(section["sql"], headers={"Authorization": credentials(server.user, server.password)})
        sql = urllib.request.urlopen(request).read().decode()
        assert "WHERE start_time >= TIMESTAMP '2026-02-01T00:00:00Z'" in sql, sql[:400]
        assert_same_rows(section["rows"], view_rows(server, sql), section["id"])


def test_a_workflow_filter_keeps_that_workflows_figures(admin):
    all_rows = [r for r in admin.open().chart("cost-per-outcome")["rows"] if r["workflow"] == "invoice"]
    filtered = admin.open("?workflow=invoice").chart("cost-per-outcome")["rows"]
    assert {r["workflow"] for r in filtered} == {"invoice"}
    assert_same_rows(filtered, all_rows, "invoice")


def test_a_tenant_user_sees_only_their_tenant(server):
    name, password, tenant = tenant_user()
    browser = Browser(name, password)
    try:
        browser.open()
        menu = browser.driver.find_elements(By.CSS_SELECTOR, "select[name=tenant] option")
        assert [o.text for o in menu] == ["all", tenant]
        for section in browser.sections():
            tenants = {r.get("tenant") for r in section["rows"]} - {None}
            assert tenants <= {tenant}, f"{section['id']} shows {tenants}"
            assert_same_rows(
                section["rows"],
                view_rows(server, f"SELECT * FROM {section['report']}", user=(name, password)),
                section["id"],
            )
        expected = outcomes_per_workflow(server, lambda t: pc.equal(t["tenant"], tenant))
        assert work_items_per_workflow(browser.chart("cost-per-outcome")) == expected
        assert browser.console_errors() == []
        # Asking for another tenant's rows is refused on the page (403).
        browser.open("?tenant=globex-insurance")
        error = browser.driver.find_element(By.ID, "error").text
        assert "is not one of yours" in error and browser.sections() == []
    finally:
        browser.close()


@pytest.mark.parametrize(
    "query, message",
    [
        ("?from=2026-13-01", 'from "2026-13-01" is not a date: use YYYY-MM-DD'),
        ("?from=2026-03-01&to=2026-02-01", "the range ends (2026-02-01) before it starts (2026-03-01)"),
        ("?colour=red", 'unknown parameter "colour"'),
    ],
)
def test_a_bad_filter_shows_a_message_not_a_trace(admin, query, message):
    admin.open(query)
    error = admin.driver.find_element(By.ID, "error").text
    assert message in error
    body = admin.driver.find_element(By.TAG_NAME, "body").text
    assert "panicked" not in body and "backtrace" not in body
    # The form is still there to correct it.
    assert admin.driver.find_elements(By.CSS_SELECTOR, "form.filters input[name=from]")


def test_the_page_asks_for_credentials_and_refuses_wrong_ones(server):
    for headers in [{}, {"Authorization": credentials(server.user, "wrong")}, {"Authorization": "Basic !!"}]:
        request = urllib.request.Request(page_url(), headers=headers)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request)
        assert refused.value.code == 401
        assert refused.value.headers["WWW-Authenticate"].startswith("Basic")
