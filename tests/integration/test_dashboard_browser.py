"""The admin dashboard in a real browser: Debian's Chromium, driven by Playwright for Python.

Each test serves a real app (``add_gray_routes`` with a ``RolloutController`` whose first layer is
open) with uvicorn on a free loopback port, signs in the way a person would and checks what the
page shows and what its buttons change in the controller and the store. Nothing is mocked; the
only browser is ``/usr/bin/chromium`` (Playwright's own browser download is never used).

Without Chromium or the ``playwright`` package the tests are skipped locally (with the install
hint) and fail in CI (``CI=true``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from _servers import free_port, wait_until
from fastapi import FastAPI
from langchain_core.messages.ai import UsageMetadata
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import RunnableLambda
from prometheus_client import CollectorRegistry

from langchain_graylayer import (
    GraylayerMetrics,
    GrayRouter,
    MemoryStore,
    RolloutController,
    RolloutPlan,
    UserProfile,
)
from langchain_graylayer.errors import StoreError
from langchain_graylayer.plan.gates import DEFAULT_GUARDRAILS, Gates, Guardrail, GuardrailMetric
from langchain_graylayer.serve.app import add_gray_routes
from langchain_graylayer.testing import ScriptedChatModel

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the ``browser`` fixture skips, or fails in CI, with the install hint
    expect = sync_playwright = None

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PLAN_ID = "refund-v2"
TOKEN = "t0ken"
LAYERS = ["early_adopter", "normal", "high_value", "vip"]


def _missing(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI must not skip the dashboard tests)")
    pytest.skip(message)


# --------------------------------------------------------------------------- the served app
def stable_agent(question: str) -> str:
    return f"[v1] {question}: refunds open once the order arrives."


def candidate_agent(question: str) -> str:
    if question.endswith("7"):
        raise RuntimeError("candidate cannot parse this order number")  # stable answers instead
    return f"[v2] {question}: a colleague will approve the refund today."


@dataclass
class Served:
    """A running app: its base URL and the objects behind it."""

    url: str
    router: GrayRouter[str, str]
    controller: RolloutController
    store: MemoryStore

    @property
    def dashboard(self) -> str:
        return f"{self.url}/graylayer/"


@contextlib.contextmanager
def serving(
    plan: RolloutPlan, stable: Any = None, candidate: Any = None, **router_options: Any
) -> Iterator[Served]:
    """The app of ``plan``'s router (by default over the two agents above) under a real uvicorn
    server on loopback, its first layer open at its first step."""
    store = MemoryStore()
    metrics = GraylayerMetrics(registry=CollectorRegistry())
    router: GrayRouter[str, str] = GrayRouter(
        stable=stable or RunnableLambda(stable_agent),
        candidate=candidate or RunnableLambda(candidate_agent),
        plan=plan,
        store=store,
        metrics=metrics,
        **router_options,
    )
    controller = RolloutController(plan=plan, store=store)
    controller.step()
    app = FastAPI()
    add_gray_routes(
        app, router, path="/agent", controller=controller, admin_token=TOKEN,
        feedback_secret=b"x" * 32,
    )  # fmt: skip
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="dashboard-uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 10.0, "uvicorn")
        assert server.started, f"uvicorn exited before serving on port {port}"
        yield Served(f"http://127.0.0.1:{port}", router, controller, store)
    finally:
        server.should_exit = True
        thread.join(10.0)


@pytest.fixture
def served() -> Iterator[Served]:
    """The default plan's app, the first layer open at 1%."""
    with serving(RolloutPlan.default(PLAN_ID)) as app:
        yield app


def early_adopter_traffic(router: GrayRouter[str, str], users: int = 600) -> None:
    """Requests from users whose profile puts them in early_adopter (1% get the candidate)."""
    profile = UserProfile(last_use_time=datetime.now(timezone.utc), use_count=50, accept_score=10)
    for i in range(users):
        user = f"user-{i}"
        router.store.put_profile(user, profile)
        router.invoke(f"refund order {i}", {"configurable": {"user_id": user}})


# --------------------------------------------------------------------------- the browser
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        _missing(f"{CHROMIUM} not found; install it with: apt-get install -y chromium")
    if sync_playwright is None:
        _missing("playwright not installed: pip install playwright (never `playwright install`)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Tab:
    """A page that records console errors, page errors and dialogs, and answers the dialogs."""

    page: Any
    errors: list[str] = field(default_factory=list)
    dialogs: list[tuple[str, str]] = field(default_factory=list)
    accept_confirm: bool = False
    prompt_answer: str | None = None
    """``None`` dismisses prompts."""

    def on_dialog(self, dialog: Any) -> None:
        self.dialogs.append((dialog.type, dialog.message))
        if dialog.type == "confirm" and self.accept_confirm:
            dialog.accept()
        elif dialog.type == "prompt" and self.prompt_answer is not None:
            dialog.accept(self.prompt_answer)
        else:
            dialog.dismiss()

    def sign_in(self, served: Served, token: str = TOKEN, operator: str = "alice") -> None:
        self.page.goto(served.dashboard)
        self.page.fill("#token", token)
        self.page.fill("#operator", operator)
        self.page.click("#signin")

    def audit_rows(self) -> Any:
        return self.page.locator("#audit tbody tr")


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(5_000)
    tab = Tab(page)
    page.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: tab.errors.append(f"page error: {exc}"))
    page.on("dialog", tab.on_dialog)
    yield tab
    context.close()


# --------------------------------------------------------------------------- tests
def test_signed_in_page_shows_the_rollout_without_errors(served: Served, tab: Tab) -> None:
    tab.page.goto(served.dashboard)
    expect(tab.page.locator("#app")).to_be_hidden()  # no data before signing in
    tab.sign_in(served)

    page = tab.page
    expect(page.locator("#status")).to_have_text("running")
    expect(page.locator("#signin-form")).to_be_hidden()
    expect(page.locator("#plan")).to_have_text(PLAN_ID)
    expect(page.locator("#layers tbody tr")).to_have_count(4)
    for row, name in zip(page.locator("#layers tbody tr").all(), LAYERS, strict=True):
        expect(row.locator("td").first).to_have_text(name)
    expect(page.get_by_test_id("ratio-early_adopter")).to_have_text("1%")
    for name in LAYERS[1:]:
        expect(page.get_by_test_id(f"ratio-{name}")).to_have_text("0%")
    steps = len(served.controller.plan.layer("early_adopter").steps)
    expect(page.get_by_test_id("layer-early_adopter")).to_contain_text(f"step 1 of {steps}")
    expect(page.get_by_test_id("layer-early_adopter")).to_contain_text("1% · 10% · 50% · 100%")
    expect(page.get_by_test_id("layer-normal")).to_contain_text("not started")
    expect(tab.audit_rows()).to_have_count(1)
    expect(tab.audit_rows().first).to_contain_text("start_layer")
    expect(tab.audit_rows().first).to_contain_text("0% → 1%")
    expect(tab.audit_rows().first).to_contain_text("first layer")
    assert tab.errors == []


def test_latest_verdict_shows_both_arms_per_guardrail(
    served: Served, tab: Tab, tmp_path: Path
) -> None:
    early_adopter_traffic(served.router)
    [hold] = served.controller.step()
    verdict = hold.verdict
    assert verdict is not None
    assert verdict["n_candidate"] > 0
    tab.sign_in(served)

    card = tab.page.get_by_test_id("verdict-early_adopter")
    expect(card).to_contain_text(verdict["action"])
    expect(card).to_contain_text(verdict["reason"])
    expect(card).to_contain_text(f"{verdict['n_candidate']} candidate / {verdict['n_stable']}")
    expect(tab.page.get_by_test_id("qos-early_adopter")).to_contain_text("candidate 0.")
    error_rate = next(g for g in verdict["guardrails"] if g["metric"] == "error_rate")
    row = tab.page.get_by_test_id("guardrail-early_adopter-error_rate")
    expect(row).to_contain_text(f"{round(error_rate['candidate_rate'] * 100, 2):g}%")
    expect(row).to_contain_text(f"{error_rate['n_candidate']} / {error_rate['n_stable']}")
    expect(row).to_contain_text(error_rate["note"])
    expect(card.locator("tbody tr")).to_have_count(len(verdict["guardrails"]))
    expect(tab.page.get_by_test_id("layer-early_adopter")).to_contain_text(verdict["reason"])
    screenshot = Path(os.environ.get("GRAYLAYER_SCREENSHOT", tmp_path / "dashboard.png"))
    tab.page.screenshot(path=str(screenshot), full_page=True)
    assert tab.errors == []


def replying(answer: str, usage: UsageMetadata) -> Any:
    """An agent of one model call: the scripted model (it reports ``gpt-4o-mini``) answers."""
    model = ScriptedChatModel(
        script=lambda messages, tools: answer, usage=usage, model_name="gpt-4o-mini"
    )
    return model | StrOutputParser()


def test_a_cost_guardrail_row_shows_cost_per_request_and_its_budget(tab: Tab) -> None:
    cost = Guardrail(metric=GuardrailMetric.COST_PER_REQUEST, margin=0.2)
    plan = RolloutPlan.default(
        PLAN_ID,
        gates=Gates(guardrails=(*DEFAULT_GUARDRAILS, cost)),
        pricing={"models": {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}},
    )
    stable = replying("[v1] shipped.", UsageMetadata(input_tokens=1000, output_tokens=200,
                                                      total_tokens=1200))  # fmt: skip
    candidate = replying("[v2] shipped.", UsageMetadata(input_tokens=1500, output_tokens=300,
                                                         total_tokens=1800))  # fmt: skip
    with serving(plan, stable, candidate) as served:
        early_adopter_traffic(served.router)  # 1 % of 600 users get the candidate
        [verdict] = [e.verdict for e in served.controller.step() if e.verdict]
        row_of = {g["metric"]: g for g in verdict["guardrails"]}["cost_per_request"]
        assert row_of["unit"] == "money"
        tab.sign_in(served)
        row = tab.page.get_by_test_id("guardrail-early_adopter-cost_per_request")
        expect(row).to_contain_text("0.000405/req")  # 1 500 × 0.15 + 300 × 0.6 per million
        expect(row).to_contain_text("0.00027/req")
        expect(row).to_contain_text("+20% budget")
        expect(row).to_contain_text(row_of["note"])
        if row_of["estimate"] is not None:
            expect(row).to_contain_text(f"+{round(row_of['estimate'] * 100, 2):g} %")
    assert tab.errors == []


def test_roll_back_button_rolls_the_plan_back(served: Served, tab: Tab) -> None:
    tab.sign_in(served)
    expect(tab.page.locator("#status")).to_have_text("running")

    tab.page.click("#btn-rollback")  # the confirm is dismissed: nothing happens
    assert tab.dialogs == [("confirm", tab.dialogs[0][1])]
    expect(tab.audit_rows()).to_have_count(1)
    assert served.controller.status()["status"] == "running"

    tab.accept_confirm, tab.prompt_answer = True, "refund answers look wrong"
    tab.page.click("#btn-rollback")

    expect(tab.page.locator("#status")).to_have_text("rolled_back")
    assert [kind for kind, _ in tab.dialogs] == ["confirm", "confirm", "prompt"]
    assert served.controller.status()["status"] == "rolled_back"
    assert served.store.get_ratios(PLAN_ID) == dict.fromkeys(LAYERS, 0.0)
    rollback = next(e for e in reversed(served.controller.audit()) if e.action == "rollback")
    assert (rollback.operator, rollback.reason) == ("alice", "refund answers look wrong")
    expect(tab.page.locator("#message")).to_have_text("rolled back by alice")
    expect(tab.page.get_by_test_id("ratio-early_adopter")).to_have_text("0%")
    expect(tab.page.locator("#btn-rollback")).to_be_disabled()
    expect(tab.page.get_by_test_id("promote-early_adopter")).to_be_disabled()
    assert tab.errors == []


def test_pause_resume_and_promote_buttons(served: Served, tab: Tab) -> None:
    tab.sign_in(served)
    page = tab.page
    page.fill("#reason", "checking the dashboard")
    page.click("#btn-pause")
    expect(page.locator("#status")).to_have_text("paused")
    expect(tab.audit_rows().first).to_contain_text("checking the dashboard")
    expect(tab.audit_rows().first).to_contain_text("alice")
    assert served.controller.status()["status"] == "paused"

    page.click("#btn-resume")
    expect(page.locator("#status")).to_have_text("running")

    tab.accept_confirm = True
    page.get_by_test_id("promote-early_adopter").click()
    expect(page.get_by_test_id("ratio-early_adopter")).to_have_text("10%")
    expect(page.get_by_test_id("layer-early_adopter")).to_contain_text("manual")
    assert served.store.get_ratio(PLAN_ID, "early_adopter") == 0.1
    assert tab.dialogs[-1] == ("confirm", "Promote early_adopter from 1% to 10%?")
    assert tab.errors == []


def test_refreshes_every_5_s_and_shows_api_errors(served: Served, tab: Tab) -> None:
    tab.page.clock.install()  # the page's timers run only when the test moves its clock
    tab.sign_in(served)
    expect(tab.page.locator("#status")).to_have_text("running")

    served.controller.pause(operator="bob", reason="maintenance window")
    tab.page.clock.run_for(4_000)
    expect(tab.page.locator("#status")).to_have_text("running")
    tab.page.clock.run_for(1_100)
    expect(tab.page.locator("#status")).to_have_text("paused")
    expect(tab.audit_rows().first).to_contain_text("maintenance window")

    served.controller.resume(operator="bob")  # the page still offers Resume: the API answers 409
    tab.page.click("#btn-resume")
    expect(tab.page.locator("#message")).to_contain_text("is running, not paused")
    expect(tab.page.locator("#status")).to_have_text("running")  # refreshed after the action


def test_wrong_token_shows_no_data(served: Served, tab: Tab) -> None:
    tab.sign_in(served, token="not-the-token")

    expect(tab.page.locator("#message")).to_have_text("wrong token")
    expect(tab.page.locator("#app")).to_be_hidden()
    expect(tab.page.locator("#signin-form")).to_be_visible()
    expect(tab.page.locator("#layers tbody tr")).to_have_count(0)
    assert "early_adopter" not in tab.page.locator("body").inner_text()
    assert tab.page.evaluate("sessionStorage.getItem('graylayer.token')") is None


def test_sign_out_forgets_the_token(served: Served, tab: Tab) -> None:
    tab.sign_in(served)
    expect(tab.page.locator("#layers tbody tr")).to_have_count(4)

    tab.page.click("#signout")

    expect(tab.page.locator("#app")).to_be_hidden()
    assert tab.page.evaluate("sessionStorage.getItem('graylayer.token')") is None
    tab.page.reload()
    expect(tab.page.locator("#signin-form")).to_be_visible()
    expect(tab.page.locator("#operator")).to_have_value("alice")
    assert "early_adopter" not in tab.page.locator("body").inner_text()


def test_text_from_the_api_is_escaped(served: Served, tab: Tab) -> None:
    served.controller.pause(operator="<img src=x onerror=alert(1)>", reason="<b>x</b>")
    tab.sign_in(served)

    newest = tab.audit_rows().first
    expect(newest.locator("td").nth(1)).to_have_text("<img src=x onerror=alert(1)>")
    expect(newest.locator("td").nth(5)).to_have_text("<b>x</b>")
    assert tab.page.locator("#audit img, #audit b").count() == 0
    tab.page.wait_for_timeout(200)  # an injected onerror would have fired by now
    assert tab.dialogs == []
    assert tab.errors == []


def test_the_page_says_what_is_compared_and_who_acts(served: Served, tab: Tab) -> None:
    tab.sign_in(served)
    page = tab.page
    plan = served.controller.plan
    expect(page.get_by_test_id("version-stable")).to_contain_text(plan.stable.code)
    expect(page.get_by_test_id("version-candidate")).to_contain_text(plan.candidate.code)
    expect(page.locator("#leader")).to_have_text(served.controller.holder)
    expect(tab.audit_rows().first).to_contain_text(f"on {served.controller.holder}")
    served.router.invoke("hi", {"configurable": {"user_id": "u1"}})
    served.router.invoke("hi", {})  # no user id: unrouted
    tab.page.reload()  # still signed in (the token is in the session's storage)
    expect(page.locator("#health")).to_contain_text("last 5 min: requests 2 · unrouted 1")
    assert tab.errors == []


def test_promote_only_the_active_layer_set_a_ratio_and_restart(served: Served, tab: Tab) -> None:
    tab.sign_in(served)
    page = tab.page
    expect(page.get_by_test_id("promote-early_adopter")).to_be_enabled()
    for name in LAYERS[1:]:  # pending: layers open in order
        expect(page.get_by_test_id(f"promote-{name}")).to_be_disabled()
    expect(page.locator("#btn-restart")).to_be_disabled()  # a running plan

    tab.accept_confirm = True
    page.get_by_test_id("ratio-input-vip").fill("25")
    page.get_by_test_id("set-ratio-vip").click()
    expect(page.get_by_test_id("ratio-vip")).to_have_text("25%")
    assert tab.dialogs[-1][1].startswith("Set vip from 0% to 25%?")
    latest = served.controller.audit()[-1]
    assert (latest.action, latest.operator, latest.old_ratio, latest.new_ratio) == (
        "set_ratio", "alice", 0.0, 0.25,
    )  # fmt: skip

    tab.prompt_answer = "a wrong refund rule"
    page.click("#btn-rollback")
    expect(page.locator("#status")).to_have_text("rolled_back")
    expect(page.get_by_test_id("set-ratio-vip")).to_be_disabled()
    expect(page.locator("#btn-restart")).to_be_enabled()
    tab.prompt_answer = "v2.1 fixes the rule"
    page.click("#btn-restart")
    expect(page.locator("#status")).to_have_text("running")
    restart = served.controller.audit()[-1]
    assert (restart.action, restart.reason) == ("restart", "v2.1 fixes the rule")
    assert tab.errors == []


def test_a_store_outage_shows_degraded_and_when_the_data_was_fresh(
    served: Served, tab: Tab
) -> None:
    tab.page.clock.install()
    tab.sign_in(served)
    expect(tab.page.locator("#status")).to_have_text("running")
    expect(tab.page.locator("#refreshed")).to_contain_text("updated")

    def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("redis: connection refused")

    served.store.get_plan_state = down  # type: ignore[method-assign]
    tab.page.clock.run_for(5_100)
    expect(tab.page.locator("#status")).to_have_text("degraded")
    expect(tab.page.locator("#refreshed")).to_contain_text("data last fresh at")
    expect(tab.page.locator("#message")).to_contain_text("the store is unavailable")
    expect(tab.page.locator("#btn-rollback")).to_be_disabled()
    expect(tab.page.get_by_test_id("ratio-early_adopter")).to_have_text("1%")  # still shown


def test_shows_what_is_served_a_ratio_moved_outside_and_a_lost_state(
    served: Served, tab: Tab
) -> None:
    tab.page.clock.install()
    tab.sign_in(served)
    expect(tab.page.get_by_test_id("ratio-vip")).to_have_text("0%")
    expect(tab.page.get_by_test_id("alert")).to_be_hidden()

    served.store.set_ratio(PLAN_ID, "vip", 0.25)  # behind the controller's back
    tab.page.clock.run_for(5_100)
    expect(tab.page.get_by_test_id("ratio-vip")).to_have_text("25%")  # what routers serve
    expect(tab.page.get_by_test_id("moved-vip")).to_contain_text("controller: 0%")
    assert [e.action.value for e in served.controller.step()] == ["revert"]
    tab.page.clock.run_for(5_100)
    expect(tab.page.get_by_test_id("ratio-vip")).to_have_text("0%")
    expect(tab.page.get_by_test_id("moved-vip")).to_have_count(0)
    expect(tab.page.locator("#audit tbody tr").first).to_contain_text("revert")

    served.store.get_plan_state = lambda plan_id: None  # type: ignore[method-assign]
    tab.page.clock.run_for(5_100)
    expect(tab.page.get_by_test_id("alert")).to_contain_text("lost this plan's state")
    expect(tab.page.locator("#status")).to_have_text("paused")  # held, as it will be written
    assert tab.errors == []


def test_the_page_says_an_evaluator_is_paused_by_its_spend_cap(tab: Tab) -> None:
    judge = RunnableLambda(lambda d: str(d["output"])) | ScriptedChatModel(
        script=lambda messages, tools: "pass", model_name="judge-mini"
    )  # 15 tokens a call: the cap is reached at the first evaluation
    evaluator = {"name": "polite", "kind": "runnable", "max_tokens_per_hour": 15}
    plan = RolloutPlan.default(PLAN_ID, evaluators=[evaluator])
    with serving(plan, evaluators={"polite": judge}) as app:
        early_adopter_traffic(app.router, users=3)
        evaluations = app.router.evaluations
        assert evaluations is not None
        assert evaluations.drain(10.0)
        tab.sign_in(app)
        expect(tab.page.locator("#health")).to_contain_text(
            "evaluators paused by their spend cap: polite"
        )
        assert tab.errors == []
