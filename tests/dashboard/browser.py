"""A real headless Chromium (Debian's ``chromium`` + ``chromedriver``) driven by Selenium.

Selenium blocks, so every step runs in a worker thread (``await browser.do(...)``) while
the server under test keeps its event loop. Screenshots land in ``artifacts/dashboard``
(kept as test artifacts; ``DASHBOARD_ARTIFACTS`` moves them).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("DASHBOARD_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts" / "dashboard"))


def need_browser() -> None:
    """Skip without a browser, unless CI (REQUIRE_BROWSER=1 or REQUIRE_POSTGRES=1) says it must be there."""
    if CHROMIUM and CHROMEDRIVER:
        return
    message = "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
    if os.environ.get("REQUIRE_BROWSER") == "1" or os.environ.get("REQUIRE_POSTGRES") == "1":
        pytest.fail(message)
    pytest.skip(message)


class Browser:
    """One headless Chromium window; ``do`` runs a blocking step off the event loop."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def do(self, step: Callable[[Any], T]) -> T:
        return await asyncio.to_thread(step, self.driver)

    async def get(self, url: str) -> None:
        await self.do(lambda d: d.get(url))

    async def text(self, css: str) -> str:
        from selenium.webdriver.common.by import By

        return await self.do(lambda d: d.find_element(By.CSS_SELECTOR, css).text)

    async def count(self, css: str) -> int:
        from selenium.webdriver.common.by import By

        return await self.do(lambda d: len(d.find_elements(By.CSS_SELECTOR, css)))

    async def wait_for(self, css: str, *, timeout: float = 15, at_least: int = 1) -> int:
        """Wait until ``at_least`` elements match ``css``; returns how many did."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            n = await self.count(css)
            if n >= at_least:
                return n
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{css!r}: {n} element(s) after {timeout} s, wanted {at_least}")
            await asyncio.sleep(0.2)

    async def screenshot(self, name: str, *, width: int = 1280, height: int | None = None) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"

        def shoot(d: Any) -> None:
            full = height or d.execute_script("return Math.max(document.body.scrollHeight, 600)")
            d.set_window_size(width, min(int(full) + 120, 4000))
            d.save_screenshot(str(path))

        await self.do(shoot)
        return path


@contextmanager
def chromium() -> Iterator[Browser]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield Browser(driver)
    finally:
        driver.quit()
