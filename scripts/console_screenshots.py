"""Screenshots of every console page for the README (docs/console/*.png), from a real server
with the real default model (all-MiniLM-L6-v2): a "tickets" task, a few labelled examples, some
predictions and feedback, one training run judged by the gate, then each page in headless
Chromium (Playwright).  Every request the pages make is checked to stay on this machine.

    .venv/bin/python scripts/console_screenshots.py [--out docs/console] [--chromium /usr/bin/chromium]

Takes 1-2 minutes on 2 cores (the training run is most of it)."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from app.core.config import Settings
from app.process.launch import serve_in_thread
from app.main import create_app
from app.process.worker import Worker

TOKEN = "demo-admin-token-0123456789abcdef"  # 32 or more characters, as every admin token
LABELS = ["billing", "card_lost", "weather"]
DESCRIPTIONS = {"billing": "a question about a charge, a bill or a refund",
                "card_lost": "the customer lost their bank card or it was stolen",
                "weather": "a question about the weather forecast"}
EXAMPLES = [
    ("why was I charged twice this month", "billing"), ("I want a refund for the fee", "billing"),
    ("my invoice shows the wrong amount", "billing"), ("what is this payment on my statement", "billing"),
    ("can you explain the charge from yesterday", "billing"), ("the bill is higher than usual", "billing"),
    ("I lost my credit card", "card_lost"), ("my wallet was stolen with my cards", "card_lost"),
    ("I can't find my debit card anywhere", "card_lost"), ("someone took my card at the station", "card_lost"),
    ("please block my missing card", "card_lost"), ("my card is gone, what do I do", "card_lost"),
    ("will it rain tomorrow", "weather"), ("is it going to be sunny this weekend", "weather"),
    ("how cold will it be tonight", "weather"), ("what's the forecast for Friday", "weather"),
    ("do I need an umbrella today", "weather"), ("is snow expected next week", "weather"),
]
TRAFFIC = [
    "I was billed for something I never bought", "where did my card go, I had it this morning",
    "is there a storm coming", "the refund never arrived", "my purse was stolen on the bus",
    "will the wind pick up later", "why is there a fee on my account", "hot or cold tomorrow?",
    "I think I dropped my card in a taxi", "the charge appears twice", "sunny spells this afternoon?",
    "my card might be in the other jacket", "can I pay my bill later", "is it freezing outside",
]


def seed(api: httpx.Client, settings: Settings) -> None:
    """The task, its examples, traffic with feedback, and one training run through the worker."""
    api.post("/v1/tasks", json={"name": "tickets", "labels": LABELS, "descriptions": DESCRIPTIONS,
                                "policy": {"min_new_signals": 1_000_000}}).raise_for_status()
    api.post("/v1/tasks/tickets/examples", json={"examples": [{"text": t, "label": lab} for t, lab in EXAMPLES]}
             ).raise_for_status()
    shown = api.post("/v1/tasks/tickets/predict", json={"texts": TRAFFIC}).json()["predictions"]
    for i, p in enumerate(shown[:8]):
        signal = 1 if i % 3 == 0 else -1
        body = {"signal": signal}
        if signal == -1 and i % 2 == 0:
            body["correction"] = next(lab for lab in LABELS if lab != p["label"])
        api.post(f"/v1/predictions/{p['id']}/feedback", json=body).raise_for_status()
    api.post("/v1/tasks/tickets/retrain").raise_for_status()
    worker = Worker(settings)
    worker.beat()  # the Tasks page shows whether a worker is alive
    print("training run:", worker.run_once(), flush=True)
    api.post("/v1/clients", json={"name": "support-app", "tasks": ["tickets"]}).raise_for_status()
    more = api.post("/v1/tasks/tickets/predict", json={"texts": TRAFFIC[::-1]}).json()["predictions"]
    for p in more[:3]:
        api.post(f"/v1/predictions/{p['id']}/feedback", json={"signal": -1}).raise_for_status()


def shoot(base: str, out: Path, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    here = urlsplit(base).netloc
    elsewhere: list[str] = []

    def guard(route) -> None:
        if urlsplit(route.request.url).netloc == here or route.request.url.startswith("data:"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        context.route("**/*", guard)
        page = context.new_page()
        page.goto(f"{base}/ui")
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/ui")
        for name, path in (("tasks", "/ui"), ("versions", "/ui/tasks/tickets"), ("runs", "/ui/tasks/tickets/runs"),
                           ("review", "/ui/tasks/tickets/review"), ("clients", "/ui/clients")):
            page.goto(f"{base}{path}")
            page.screenshot(path=str(out / f"console-{name}.png"), full_page=name != "review")
            print("saved", out / f"console-{name}.png", flush=True)
        page.goto(f"{base}/ui/tasks/tickets/try")
        page.fill("textarea[name=text]", "I think somebody stole my card at the airport")
        page.click("text=Predict and explain")
        page.wait_for_selector("p.explained")
        page.screenshot(path=str(out / "console-try.png"), full_page=True)
        print("saved", out / "console-try.png", flush=True)
        browser.close()
    if elsewhere:
        raise SystemExit(f"a page tried to reach another host: {elsewhere}")
    print("no page request left this machine", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/console"))
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = ap.parse_args()
    if not args.chromium:
        raise SystemExit("no Chromium found: apt-get install chromium, or pass --chromium PATH")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), admin_token=TOKEN, embedded_worker=False)
        with serve_in_thread(create_app(settings)) as base:
            api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300)
            seed(api, settings)
            shoot(base, args.out, args.chromium)
    print(f"done in {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
