"""The web page at `/`, in a real headless browser (Debian's chromium, driven by
Playwright) against the Serve app on the session's local Ray cluster.

Screenshots are written to test-artifacts/ (README: "Web page"). The page's Content
Security Policy forbids eval, so waits poll from Python instead of wait_for_function.
"""

import json
import shutil
from pathlib import Path

import httpx
import pytest

from tests.raycluster import wait_for

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(executable).exists(), "chromium is missing; scripts/test installs Debian's package"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A browser tab on the API's page that records console errors and uncaught exceptions."""

    def __init__(self, browser, url: str, width: int = 1280, token: str | None = None):
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        if token:  # signed in before the page loads, as a returning user in the same tab is
            self.context.add_init_script(f"sessionStorage.setItem('gpuq-token', {json.dumps(token)})")
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.url = url
        self.page.goto(url + "/")

    def text(self, selector: str) -> str:
        return self.page.locator(selector).inner_text().strip()

    def sign_in(self, token: str) -> None:
        self.page.fill("#token", token)
        self.page.click("#signin button")
        self.page.wait_for_selector("#who:not([hidden])")

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser, api, orch):
    """The page, signed in as alice (reads need a token)."""
    page = Page(browser, api, token="alice-token")
    yield page
    page.close()


def status(api) -> dict:
    return httpx.get(
        f"{api}/orchestrator/status", timeout=30, headers={"Authorization": "Bearer reader-token"}
    ).json()


def test_the_page_shows_the_numbers_status_gives(tab, api, orch):
    running = orch.submit("sleep 300", gpus=4, run_id="shown-running")
    waiting = orch.submit("sleep 300", gpus=16, run_id="shown-waiting")
    orch.wait_state(running, "running")
    job = orch.job(running)
    # Nothing moves now (one job runs, one waits for all 16 GPUs): the page, polling every
    # 2 s, must come to show exactly what the status endpoint says.
    s = status(api)
    r, q = s["resource_summary"], s["queue_summary"]
    assert (r["total_gpus"], r["available_gpus"], r["allocated_gpus"], q["queued"], q["running"]) == (
        16,
        12,
        4,
        1,
        1,
    )
    expected = {
        "total_gpus": r["total_gpus"],
        "available_gpus": r["available_gpus"],
        "allocated_gpus": r["allocated_gpus"],
        "utilization": "25%",
        **{k: q[k] for k in ("queued", "running", "completed", "failed")},
    }
    shown = lambda: {k: tab.text(f'[data-stat="{k}"]') for k in expected}
    wait_for(
        lambda: shown() == {k: str(v) for k, v in expected.items()},
        30,
        what=f"the page to show {expected} (it shows {shown()})",
    )

    cells = tab.page.locator("#grid .gpu")
    assert cells.count() == 16
    assert tab.page.locator('#grid .gpu[data-run="shown-running"]').count() == 4
    row = tab.page.locator(f'#active tr[data-job="{running}"]')
    assert row.locator("td").nth(3).inner_text() == job["placement"]
    assert tab.page.locator(f'#line tr[data-job="{waiting}"]').count() == 1
    wait_for(
        lambda: tab.page.locator("#util-chart circle.line-alloc").count() == 1,
        30,
        what="the utilization chart",
    )
    tab.screenshot("dashboard-1280.png")
    assert not tab.errors
    outside = [u for u in tab.requests if not u.startswith(api + "/") and not u.startswith("data:")]
    assert not outside, f"the page fetched from elsewhere: {outside}"


def test_a_job_submitted_through_the_form_queues_runs_and_is_cancelled(tab, api, orch):
    blocker = orch.submit("sleep 300", gpus=16, run_id="blocker")
    orch.wait_state(blocker, "running")
    assert tab.text("#who-name") == "alice"

    tab.page.click('nav a[href="#/submit"]')
    form = tab.page.locator("#submit-form")
    form.locator('[name="run_id"]').fill("from-the-form")
    form.locator('[name="command"]').fill("echo hello from the page; sleep 300")
    form.locator('[name="gpu_count"]').fill("2")
    form.locator('[name="priority"]').select_option("HIGH")
    form.locator('[name="time_limit"]').fill("1h")
    form.locator("button[type=submit]").click()
    result = tab.page.wait_for_selector("#submit-result.ok")
    assert "queue position 1" in result.inner_text()
    job_id = tab.page.locator("#submitted-job").get_attribute("href").rsplit("/", 1)[1]
    assert orch.job(job_id)["spec"]["time_limit"] == 3600 and orch.job(job_id)["priority_name"] == "HIGH"

    tab.page.click("header h1 a")
    tab.page.wait_for_selector(f'#line tr[data-job="{job_id}"]')  # in the queue ...
    orch.call("cancel", blocker)
    tab.page.wait_for_selector('#grid .gpu[data-run="from-the-form"]')  # ... then on the GPUs
    assert tab.page.locator('#grid .gpu[data-run="from-the-form"]').count() == 2

    tab.page.goto(f"{api}/#/job/{job_id}")
    wait_for(
        lambda: "hello from the page" in tab.page.locator("#log").text_content(), 30, what="the log tail"
    )
    tab.screenshot("job-page.png")
    tab.page.click('#view-job [data-action="cancel"]')
    wait_for(
        lambda: tab.text('[data-field="State"] dd') == "cancelled", 30, what="the page to show it cancelled"
    )
    assert orch.job(job_id)["state"] == "cancelled"
    assert not tab.errors


def test_someone_elses_job_shows_no_buttons(tab, api, orch):
    theirs = orch.submit("sleep 300", gpus=1, user="bob", run_id="bobs")
    orch.wait_state(theirs, "running")
    tab.page.goto(f"{api}/#/job/{theirs}")
    wait_for(
        lambda: (
            tab.page.locator('[data-field="User"] dd').count() and tab.text('[data-field="User"] dd') == "bob"
        ),
        30,
        what="bob's job page",
    )
    assert tab.page.locator("#view-job [data-action]:visible").count() == 0
    assert tab.text('[data-field="Runtime env"] dd') == "(visible to its owner and admins)"
    assert not tab.errors


def test_a_jobs_page_shows_its_runtime_env(tab, api, orch):
    job_id = orch.submit(
        "sleep 300", run_id="with-env", runtime_env={"env_vars": {"SEED": "7"}, "excludes": ["data/"]}
    )
    tab.page.goto(f"{api}/#/job/{job_id}")
    wait_for(
        lambda: (
            tab.page.locator('[data-field="Runtime env"] dd').count()
            and "SEED" in tab.text('[data-field="Runtime env"] dd')
        ),
        30,
        what="the job's runtime env on its page",
    )
    assert json.loads(tab.text('[data-field="Runtime env"] dd')) == {
        "env_vars": {"SEED": "7"},
        "excludes": ["data/"],
    }
    assert not tab.errors


def test_the_page_fits_768_pixels_and_works_from_the_keyboard(browser, api, orch):
    tab = Page(browser, api, width=768)
    try:
        orch.wait_state(orch.submit("sleep 300", gpus=2, run_id="narrow"), "running")
        # Sign in without a mouse: Tab to the token field, type, Enter.
        tab.page.wait_for_selector("#banner:not([hidden])")
        for _ in range(12):
            tab.page.keyboard.press("Tab")
            if tab.page.evaluate("document.activeElement.id") == "token":
                break
        assert tab.page.evaluate("document.activeElement.id") == "token"
        tab.page.keyboard.type("alice-token")
        tab.page.keyboard.press("Enter")
        tab.page.wait_for_selector("#who:not([hidden])")

        tab.page.wait_for_selector('#grid .gpu[data-run="narrow"]')
        overflow = tab.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page is {overflow} px wider than a 768 px window"
        tab.screenshot("dashboard-768.png")
        # A GPU cell is a button: focusing it tells its job and user.
        tab.page.focus('#grid .gpu[data-run="narrow"]')
        assert "job narrow of alice" in tab.text("#gpu-detail")
        # The only errors are the browser's own notes of the refused reads before sign-in.
        assert all("401" in e for e in tab.errors), tab.errors
    finally:
        tab.close()


def test_the_grid_colours_idle_and_unhealthy_gpus(browser, api, ray_cluster, tmp_path):
    from tests.orchestration import Harness

    watched = Harness(tmp_path, telemetry_interval_s=0.5, idle_window_s=2.0)
    tab = Page(browser, api, token="alice-token")
    try:
        job = watched.submit("sleep 300", gpus=1, run_id="dozing")
        watched.wait_state(job, "running")
        cell = watched.job(job)["placement"].replace(":[", ":").rstrip("]")
        watched.call("inject", "gmi-node-2", "xid", 7, 79)
        tab.page.wait_for_selector(f'#grid .gpu.idle[data-gpu="{cell}"]')
        tab.page.wait_for_selector('#grid .gpu.unhealthy[data-gpu="gmi-node-2:7"]')
        assert "XID 79" in tab.page.locator('[data-gpu="gmi-node-2:7"]').get_attribute("title")
        assert tab.page.locator("#grid .gpu.unhealthy").count() == 1
        tab.screenshot("dashboard-health.png")
        assert not tab.errors
    finally:
        tab.close()
        watched.teardown()


def test_the_page_asks_for_a_token_and_shows_nothing_until_then(browser, private_api, orch):
    orch.wait_state(orch.submit("sleep 300", gpus=3, run_id="private"), "running")
    assert httpx.get(f"{private_api}orchestrator/status", timeout=30).status_code == 401
    tab = Page(browser, private_api.rstrip("/"))
    tab.page.goto(private_api)
    try:
        tab.page.wait_for_selector("#banner:not([hidden])")
        assert "Sign in" in tab.text("#banner")
        assert tab.text('[data-stat="total_gpus"]') == "–"
        tab.sign_in("alice-token")
        wait_for(
            lambda: tab.text('[data-stat="allocated_gpus"]') == "3", 30, what="the numbers after signing in"
        )
        # The banner goes when a whole refresh has succeeded (a read sent before sign-in may
        # still answer 401 in between): within one refresh.
        wait_for(
            lambda: tab.page.locator("#banner").is_hidden(),
            10,
            what=f"the sign-in banner to go (it says {tab.text('#banner')!r})",
        )
        # The only errors are the browser's own notes of the refused reads before sign-in.
        assert all("401" in e for e in tab.errors), tab.errors
    finally:
        tab.close()


def test_the_api_docs_work_offline_under_the_pages_policy(browser, private_api):
    """/docs loads Swagger UI from this server (no CDN) under the page's
    Content-Security-Policy, and lists every operation, behind a path prefix too."""
    tab = Page(browser, private_api.rstrip("/"))
    tab.page.goto(f"{private_api}docs")
    tab.errors.clear()  # the dashboard's reads, refused without a token, before it navigated
    tab.requests.clear()
    tab.page.reload()
    try:
        tab.page.wait_for_selector(".opblock")
        shown = tab.page.locator(".opblock").count()
        assert shown == sum(
            len(ops) for ops in httpx.get(f"{private_api}openapi.json").json()["paths"].values()
        )
        assert all(u.startswith(private_api.split("/private")[0]) for u in tab.requests), tab.requests
        assert "default-src 'self'" in httpx.get(f"{private_api}docs").headers["content-security-policy"]
        assert not tab.errors, tab.errors
    finally:
        tab.close()
