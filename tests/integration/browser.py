"""A real browser for the UI tests: Debian's chromium, headless, driven through
chromedriver by Selenium. `make install` installs both when they are missing."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)


def _which(names: tuple[str, ...]) -> str | None:
    return next((p for p in map(shutil.which, names) if p), None)


def available() -> str | None:
    """Why no browser can run here, or None when one can."""
    if _which(CHROMIUM) is None:
        return "no chromium on PATH (make install installs Debian's chromium)"
    if _which(DRIVER) is None:
        return "no chromedriver on PATH (make install installs Debian's chromium-driver)"
    return None


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(_which(CHROMIUM))
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(_which(DRIVER))), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, check: Callable[[Any], Any], what: str, timeout_s: float = 45) -> Any:
    """Poll `check(driver)` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check(driver)
        except Exception as exc:  # the page is still rendering
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not shown within {timeout_s:.0f} s (last: {last!r})")


def loaded_images(driver: Any) -> list[tuple[str, int]]:
    """(start of src, natural width) of every image the page has decoded."""
    found: list[list[Any]] = driver.execute_script(
        "return Array.from(document.images)"
        ".filter(i => i.complete && i.naturalWidth > 0)"
        ".map(i => [i.src.slice(0, 30), i.naturalWidth])"
    )
    return [(str(src), int(w)) for src, w in found]


def page_text(driver: Any) -> str:
    return str(driver.execute_script("return document.body.innerText"))


def shoot(driver: Any, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
