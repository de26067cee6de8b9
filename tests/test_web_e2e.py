"""The web client in a real headless Chromium against a real `livemart serve`.

A host runs the host console; two viewers watch the room page. Everything a viewer
sees arrives over the page's own WebSocket and HTTP calls, the way a person would get
it. Screenshots of the three pages are saved under test-artifacts/web-e2e/, also when
the test fails (that is when they help most).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from playwright.async_api import Browser, Page, ViewportSize, expect

from tests.browser import chromium
from tests.processes import TEST_SECRET, LivemartProcess, ProcessGroup, token

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web-e2e"

# Each payload would set window.__pwned to say where it got through, if it ever ran.
XSS_NAME = "<img src=x onerror=\"window.__pwned='name'\">Vic"
XSS_COMMENT = "<img src=x onerror=\"window.__pwned='comment'\"><script>window.__pwned='script'</script>"
XSS_TITLE = "Jasmine tea <svg onload=\"window.__pwned='title'\"></svg>"

ROOM_TITLE = "Tea tasting live"
PLAIN_COMMENT = "hello from Vic"

PHONE = ViewportSize(width=390, height=844)
"""Viewers watch on phones first; the host console is a desk job."""
DESK = ViewportSize(width=1280, height=1000)

INJECTED = "img[src='x'], body script, svg"
"""Elements that exist only if some user text was parsed as markup."""


@dataclass
class Person:
    """One signed-in person with a browser context (storage) and a tab of their own."""

    label: str
    page: Page
    errors: list[str] = field(default_factory=list)


async def open_as(
    browser: Browser, server: LivemartProcess, label: str, user_token: str, route: str
) -> Person:
    """Sign in the documented way (`/?token=…`, kept in localStorage) and open `route`."""
    viewport = DESK if label == "host" else PHONE
    context = await browser.new_context(viewport=viewport, locale="en-US", timezone_id="UTC")
    person = Person(label, await context.new_page())
    person.page.on("pageerror", lambda error: person.errors.append(str(error)))
    await person.page.goto(f"{server.url}/?token={user_token}{route}")
    await expect(person.page.locator("#session-name")).to_have_text(decoded_name(user_token))
    return person


def decoded_name(user_token: str) -> str:
    name: str = jwt.decode(user_token, TEST_SECRET, algorithms=["HS256"])["name"]
    return name


async def nothing_injected(person: Person) -> None:
    pwned = await person.page.evaluate("() => window.__pwned")
    assert pwned is None, f"{person.label}: injected code ran (from the {pwned})"
    assert await person.page.locator(INJECTED).count() == 0, f"{person.label}: user text became markup"


async def orders_of(server: LivemartProcess, user_token: str) -> Any:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/api/orders", headers={"authorization": f"Bearer {user_token}"})
    assert response.status_code == 200, response.text
    return response.json()


async def save_screenshots(people: list[Person]) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for person in people:
        # Clicks scroll the page; from the top, the sticky header sits where it belongs.
        await person.page.evaluate("() => window.scrollTo(0, 0)")
        await person.page.screenshot(path=ARTIFACTS / f"{person.label}.png", full_page=True)


async def test_host_and_two_viewers_comment_pin_and_buy(livemart: ProcessGroup) -> None:
    server = livemart.start()
    host_token = token("e2e-host", "Hana", TEST_SECRET)
    vic_token = token("e2e-vic", XSS_NAME, TEST_SECRET)
    wen_token = token("e2e-wen", "Wen", TEST_SECRET)
    people: list[Person] = []
    async with chromium() as browser:
        try:
            await _run(browser, server, people, host_token, vic_token, wen_token)
        except BaseException:
            print(f"server log tail:\n{server.log_tail()}")
            raise
        finally:
            await save_screenshots(people)
    for person in people:
        assert person.errors == [], f"uncaught errors on the {person.label} page: {person.errors}"


async def _run(
    browser: Browser,
    server: LivemartProcess,
    people: list[Person],
    host_token: str,
    vic_token: str,
    wen_token: str,
) -> None:
    # -- the host creates a room and a product in the console ------------------------
    host = await open_as(browser, server, "host", host_token, "#/host")
    people.append(host)
    console = host.page
    await console.fill("#room-title-input", ROOM_TITLE)
    await console.click("#create-room-button")
    await expect(console.locator("#host-room-title")).to_have_text(ROOM_TITLE)
    room_id = (await console.evaluate("() => location.hash")).removeprefix("#/host/")
    assert room_id and "/" not in room_id

    await console.fill("#product-title-input", XSS_TITLE)
    await console.fill("#product-price-input", "12.50")
    await console.click("#create-product-button")
    product = console.locator("#product-list li.product-item")
    await expect(product).to_have_count(1)
    await expect(product.locator("strong")).to_have_text(XSS_TITLE)

    # -- two viewers open the room: nothing pinned, nothing on sale yet ----------------
    vic = await open_as(browser, server, "viewer1", vic_token, f"#/room/{room_id}")
    wen = await open_as(browser, server, "viewer2", wen_token, f"#/room/{room_id}")
    people += [vic, wen]
    viewers = [vic, wen]
    for viewer in viewers:
        await expect(viewer.page.locator("#conn-status")).to_have_attribute("data-state", "open")
        await expect(viewer.page.locator("#room-title")).to_have_text(ROOM_TITLE)
        await expect(viewer.page.locator("#pinned-card")).to_be_hidden()

    # Each page holds one subscribed socket: the host's console and the two viewers.
    for viewer in viewers:
        await expect(viewer.page.locator("#viewer-count")).to_have_attribute("data-value", "3")
    await expect(console.locator("#stat-viewers-now")).to_have_attribute("data-value", "3")

    # -- a comment typed by one viewer appears on the other's page (and the host's) ----
    await vic.page.fill("#comment-input", PLAIN_COMMENT)
    await vic.page.press("#comment-input", "Enter")
    seen = wen.page.locator("#comment-list li.comment").filter(has_text=PLAIN_COMMENT)
    await expect(seen).to_have_count(1)
    await expect(seen.locator(".comment-name")).to_have_text(XSS_NAME)
    await expect(console.locator("#host-comment-list li").filter(has_text=PLAIN_COMMENT)).to_have_count(1)
    await expect(vic.page.locator("#comment-input")).to_have_value("")

    # Markup in a comment is shown as the characters typed.
    await vic.page.fill("#comment-input", XSS_COMMENT)
    await vic.page.click("#comment-send")
    for page in (wen.page, vic.page, console):
        last = page.locator("li.comment .comment-text").last
        await expect(last).to_have_text(XSS_COMMENT)

    # Likes are batched by the page; the other viewer sees the running total.
    for _ in range(3):
        await wen.page.click("#like-button")
    await expect(vic.page.locator("#like-total")).to_have_attribute("data-value", "3")
    await expect(console.locator("#stat-likes-now")).to_have_attribute("data-value", "3")

    # -- the host pins the product: both viewers see the card ---------------------------
    await product.locator(".pin-button").click()
    await expect(product.locator(".unpin-button")).to_be_visible()
    for viewer in viewers:
        card = viewer.page.locator("#pinned-card")
        await expect(card).to_be_visible()
        await expect(card.locator("#pinned-title")).to_have_text(XSS_TITLE)
        await expect(card.locator("#pinned-price")).to_have_text("$12.50")
        await expect(card.locator("#buy-button")).to_have_text("Not on sale")

    # -- then starts a flash sale of 5 at 9.90 from the product's sale form -------------
    await product.locator("details.sale-form summary").click()
    await product.locator("input[name=stock]").fill("5")
    await product.locator("input[name=price]").fill("9.90")
    await product.locator(".start-sale-button").click()
    await expect(console.locator("#sale-list li.sale-item .sale-remaining")).to_have_text("5")
    sale_id = await console.locator("#sale-list li.sale-item").get_attribute("data-sale-id")
    started = product.locator(".inline-message")
    await expect(started).to_have_text(f"Sale {sale_id} started.")
    for viewer in viewers:
        await expect(viewer.page.locator("#pinned-stock")).to_have_attribute("data-value", "5")
        await expect(viewer.page.locator("#pinned-price")).to_have_text("$9.90")
        await expect(viewer.page.locator("#pinned-list-price")).to_have_text("$12.50")
        await expect(viewer.page.locator("#buy-button")).to_have_text("Buy now")

    # -- viewer 1 buys one: stock drops on both pages, viewer 2 sees who bought ---------
    # The toast shows for a few seconds only: watch for it from before the click.
    toast = wen.page.locator("#toast")
    toast_seen = asyncio.create_task(expect(toast).to_have_text(f"{XSS_NAME} just bought {XSS_TITLE}"))
    await vic.page.click("#buy-button")
    await expect(vic.page.locator("#buy-status")).to_have_text(
        f"Order placed: 1 \N{MULTIPLICATION SIGN} {XSS_TITLE}"
    )
    for viewer in viewers:
        await expect(viewer.page.locator("#pinned-stock")).to_have_attribute("data-value", "4")
        await expect(viewer.page.locator("#pinned-stock")).to_have_text("4 left")
    await toast_seen
    await expect(console.locator("#sale-list li.sale-item .sale-remaining")).to_have_text("4")
    # Stock events redraw the sale list, not the products with their forms and messages.
    await expect(started).to_have_text(f"Sale {sale_id} started.")

    orders = await orders_of(server, vic_token)
    assert [order["quantity"] for order in orders["orders"]] == [1]

    for person in people:
        await nothing_injected(person)
