"""The console in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright,
against the app served over real HTTP with a real tiny model and a real database.  A person logs
in, sees their task, tries a text and sees its explanation, corrects a prediction in the review
queue and sees the count change, rolls back a version, and watches a run's progress update
without reloading.  Every request a page makes must stay on this machine: any request to
another host fails the test.

Skipped, with the reason printed, only where no Chromium or no Playwright is installed
(`.ci/run` installs both)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from app.core.config import Settings
from app.db.session import make_engine, make_sessionmaker, transaction
from app.db.tables import ModelVersion, Task, TrainingRun
from app.db.versions import activate, register_version
from app.core.statuses import RunStatus
from support import ADMIN_TOKEN, make_settings
from support.live import serve_in_thread

LABELS = ["billing", "card_lost", "weather"]
SCREENS = ("tasks", "versions", "runs", "review", "try", "clients")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium installed (Debian: apt-get install chromium; .ci/run installs it)")


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    path = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install "
                                                                 "playwright; the test extras include it)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str, tiny_model_dir: Path) -> Settings:
    return make_settings(tmp_path / "data", sqlite_url, tiny_model_dir)


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    with serve_in_thread(settings) as base:
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)
        assert api.post("/v1/tasks", json={"name": "tickets", "labels": LABELS}).status_code == 201
        for text in ("I lost my card", "why was I charged twice", "rain tomorrow?", "my wallet is missing"):
            assert api.post("/v1/tasks/tickets/predict", json={"text": text}).status_code == 200
        yield base


def keep_local(context, server: str) -> list[str]:
    """Refuse every request of the context's pages to a host other than the server's; the list
    fills with the URLs refused."""
    here = urlsplit(server).netloc
    elsewhere: list[str] = []

    def guard(route) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in ("data", "blob") or url.netloc == here:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    return elsewhere


@pytest.fixture
def page(chromium, server: str) -> Iterator[object]:
    """A page whose every request to a host other than this server's is refused and recorded;
    the test fails if there was any."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    elsewhere = keep_local(context, server)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.on("dialog", lambda d: d.accept())  # the console's "are you sure?" before a rollback
    yield pg
    context.close()
    assert elsewhere == [], f"a page tried to reach another host: {elsewhere}"


def log_in(page, server: str) -> None:
    page.goto(f"{server}/ui")
    assert "/ui/login" in page.url
    page.fill("input[name=token]", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}/ui")


def sessions_of(settings: Settings):
    return make_sessionmaker(make_engine(settings.db_url))


def test_log_in_see_the_task_and_try_a_text_with_its_explanation(page, server: str) -> None:
    log_in(page, server)
    card = page.locator("section.task[data-task=tickets]")
    assert card.locator(".active-version").inner_text().startswith("v0")
    assert card.locator(".predictions").inner_text() == "4"
    card.locator("a", has_text="Try it").click()
    page.fill("textarea[name=text]", "I lost my credit card")
    page.click("text=Predict and explain")
    assert page.locator("#answer").inner_text() in LABELS
    marks = page.locator("p.explained mark")
    assert marks.count() >= 3
    assert "".join(page.locator("p.explained").inner_text().split()) == "Ilostmycreditcard"


def test_a_correction_in_the_review_queue_changes_the_count(page, server: str) -> None:
    log_in(page, server)
    page.goto(f"{server}/ui/tasks/tickets/review")
    assert page.locator("#corrections").inner_text() == "0"
    first = page.locator("li.item").first
    shown = first.locator("select[name=answer]").input_value()
    first.locator("select[name=answer]").select_option(next(lab for lab in LABELS if lab != shown))
    first.locator("button", has_text="Save").click()
    page.wait_for_url(re.compile(r"/review\?saved="))
    assert page.locator("#corrections").inner_text() == "1"
    assert page.locator("li.item").count() == 3  # the corrected one has left the queue


def test_rolling_back_a_version_changes_the_active_one(page, server: str, settings: Settings) -> None:
    sessions = sessions_of(settings)
    with transaction(sessions) as s:  # version 1: the same files, trained from v0 and active
        task = s.query(Task).filter_by(name="tickets").one()
        v0 = s.query(ModelVersion).filter_by(task_id=task.id, version=0).one()
        activate(s, version=register_version(s, task=task, path=v0.path, sha256=v0.sha256, version=1,
                                             parent_id=v0.id))
    log_in(page, server)
    page.goto(f"{server}/ui/tasks/tickets")
    assert page.locator("#active-version").inner_text() == "v1"
    page.click("text=Roll back to v0")  # the page asks first; the dialog handler accepts
    page.wait_for_url(re.compile(r"activated=0"))
    assert page.locator("#active-version").inner_text() == "v0"
    page.goto(f"{server}/ui")
    assert page.locator("section.task[data-task=tickets] .active-version").inner_text().startswith("v0")


def test_a_running_runs_progress_updates_without_a_reload(page, server: str, settings: Settings) -> None:
    sessions = sessions_of(settings)
    with transaction(sessions) as s:
        task = s.query(Task).filter_by(name="tickets").one()
        run = TrainingRun(task_id=task.id, status=RunStatus.RUNNING, worker_id="test",
                          progress={"epoch": 1, "epochs": 3, "step": 2, "total_steps": 30, "fraction": 0.07,
                                    "loss": 1.25})
        s.add(run)
        s.flush()
        run_id = run.id
    log_in(page, server)
    page.goto(f"{server}/ui/tasks/tickets/runs")
    row = page.locator(f"#run-{run_id}")
    assert "step 2/30" in row.locator("[data-field=progress]").inner_text()
    marker = page.evaluate("() => (window.__notReloaded = true)")
    with transaction(sessions) as s:
        s.get(TrainingRun, run_id).progress = {"epoch": 2, "epochs": 3, "step": 17, "total_steps": 30,
                                               "fraction": 0.57, "loss": 0.5}
    page.wait_for_function(f"() => document.querySelector('#run-{run_id} [data-field=progress]')"
                           ".textContent.includes('step 17/30')")
    with transaction(sessions) as s:
        done = s.get(TrainingRun, run_id)
        done.status, done.gate = RunStatus.REJECTED, {"verdict": "reject", "reason": "the candidate is worse"}
    page.wait_for_function(f"() => document.querySelector('#run-{run_id} [data-field=status]')"
                           ".textContent === 'rejected'")
    assert "the candidate is worse" in row.locator("[data-field=verdict]").inner_text()
    assert marker is True and page.evaluate("() => window.__notReloaded") is True  # the same page all along


def test_every_page_renders_and_keeps_to_this_machine(page, server: str, request: pytest.FixtureRequest) -> None:
    """Each page loads with its styles and script (all from this server; the fixture fails on any
    other host); with --screenshots DIR, each is saved there as a PNG."""
    log_in(page, server)
    out = request.config.getoption("--screenshots")
    paths = {"tasks": "/ui", "versions": "/ui/tasks/tickets", "runs": "/ui/tasks/tickets/runs",
             "review": "/ui/tasks/tickets/review", "try": "/ui/tasks/tickets/try", "clients": "/ui/clients"}
    for name in SCREENS:
        response = page.goto(f"{server}{paths[name]}")
        assert response.status == 200, name
        assert page.evaluate("() => getComputedStyle(document.querySelector('header.top')).display") == "flex"
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(out) / f"console-{name}.png"), full_page=True)


def test_the_guard_catches_a_request_to_another_host(chromium, server: str) -> None:
    """The check above can fail: a request to elsewhere is caught.  (On the console's own pages
    the Content-Security-Policy stops such a request before it is even made; /healthz has none.)"""
    context = chromium.new_context()
    elsewhere = keep_local(context, server)
    pg = context.new_page()
    pg.goto(f"{server}/healthz")
    pg.evaluate("() => fetch('https://cdn.example.com/x.js').catch(() => null)")
    context.close()
    assert elsewhere == ["https://cdn.example.com/x.js"]


def test_a_newcomer_goes_from_nothing_to_a_rollback_without_curl(page, server: str, settings: Settings) -> None:
    """Create a task, try a text, correct it in review, add examples, retrain (the worker that
    `flywheel serve` runs beside the API, here called in the test), activate the candidate and
    roll back: every step a click in the console."""
    log_in(page, server)
    page.fill("section.new-task input[name=name]", "newcomer")
    page.fill("section.new-task textarea[name=labels]", "billing, card_lost, weather")
    page.click("text=Create task")
    page.wait_for_url(f"{server}/ui/tasks/newcomer/try")
    page.fill("textarea[name=text]", "my card was stolen")
    page.click("text=Predict and explain")
    said = page.locator("#answer").inner_text()
    page.click("nav.tabs >> text=Review")
    item = page.locator("li.item").first
    item.locator("select[name=answer]").select_option("card_lost" if said != "card_lost" else "billing")
    item.locator("button", has_text="Save").click()
    page.wait_for_url(re.compile(r"/review\?saved="))
    assert page.locator("#corrections").inner_text() == "1"
    page.click("nav.tabs >> text=Versions")
    page.fill("textarea[name=csv]", "text,label\n" + "\n".join(
        f"{t},{lab}" for t, lab in [("why was I charged twice", "billing"), ("refund my fee", "billing"),
                                    ("I lost my card", "card_lost"), ("my wallet is gone", "card_lost"),
                                    ("will it rain", "weather"), ("sunny tomorrow", "weather")]))
    page.click("text=Import")
    assert "Imported 6 examples" in page.locator("p.flash").inner_text()
    page.click("nav.tabs >> text=Runs")
    page.click("text=Retrain now")
    page.wait_for_url(re.compile(r"/runs\?queued="))
    from app.process.worker import Worker

    assert Worker(settings).run_once() in ("promoted", "rejected")
    page.click("nav.tabs >> text=Versions")
    if page.locator("#active-version").inner_text() == "v0":  # the gate held v1 back: activate it by hand
        page.click("text=Activate v1")
        page.wait_for_url(re.compile(r"activated=1"))
    assert page.locator("#active-version").inner_text() == "v1"
    page.click("text=Roll back to v0")
    page.wait_for_url(re.compile(r"activated=0"))
    assert page.locator("#active-version").inner_text() == "v0"
