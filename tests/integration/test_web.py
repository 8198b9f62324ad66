"""The web page in a real headless Chromium (Debian's chromium + chromedriver) against a real server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localgpt.testing import png_bytes
from tests.helpers import FakeWorld, Served, missing, serve

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")) or not Path(DRIVER).exists():
        missing("Debian chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_script_timeout(20)
    yield driver
    driver.quit()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[FakeWorld, Served]]:
    world = FakeWorld(tmp_path, options={"draw-fake": {"sleep": 1.5}})  # slow enough to watch it run
    served = serve(world)
    yield world, served
    served.stop()


def wait(driver: Any, condition: Any, timeout: float = 20) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def test_page_chat_with_plan_graph_and_media(browser: Any, server: tuple[FakeWorld, Served], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    world, served = server
    browser.get(served.url + "/")
    wait(browser, lambda d: d.find_element(By.ID, "health").get_attribute("data-state") == "ok")

    photo = tmp_path / "holiday.png"
    photo.write_bytes(png_bytes("holiday photo"))
    browser.find_element(By.ID, "attach").send_keys(str(photo))
    assert "holiday.png" in browser.find_element(By.ID, "attachments").text
    browser.find_element(By.ID, "prompt").send_keys("caption this photo and draw the caption")
    browser.find_element(By.ID, "send").click()

    # live: the drawing task shows as running while the caption is already done and no answer has come
    running = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'g.node[data-id="1"][data-status="running"]'))
    assert browser.find_element(By.CSS_SELECTOR, 'g.node[data-id="0"]').get_attribute("data-status") == "done"
    assert browser.find_element(By.CLASS_NAME, "answer").text == ""
    assert "draw-fake" in running.text

    turn = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, '.msg.assistant[data-finished="true"]'))
    errors = turn.find_elements(By.CLASS_NAME, "error")
    assert not errors, errors[0].text
    # the plan graph: two nodes, laid out by depth (the drawing comes after the caption), all done
    nodes = turn.find_elements(By.CSS_SELECTOR, "svg.plan-graph g.node")
    assert [n.get_attribute("data-id") for n in nodes] == ["0", "1"]
    assert [n.get_attribute("data-status") for n in nodes] == ["done", "done"]
    x = [float(n.get_attribute("transform").split("(")[1].split(",")[0]) for n in nodes]
    assert x[1] > x[0]
    assert "image-to-text" in nodes[0].text and "caption-fake" in nodes[0].text
    assert len(turn.find_elements(By.CSS_SELECTOR, "svg.plan-graph path.edge")) == 1
    # the planner's steps, in plain words, above the graph
    steps = [li.text for li in turn.find_elements(By.CSS_SELECTOR, "ol.plan-steps li")]
    assert steps == ["Step 1: run image-to-text", "Step 2: run text-to-image"]
    # the uploaded photo reached the captioning expert
    assert world.recorder.runs[0]["read"]["image"] == photo.read_bytes()
    # the streamed answer, and the produced image shown
    assert turn.find_element(By.CLASS_NAME, "answer").text.startswith("The models finished the work.")
    image = wait(browser, lambda d: turn.find_element(By.CSS_SELECTOR, ".outputs img"))
    wait(browser, lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 1)
    assert image.get_attribute("data-file-id").startswith("r-")

    # a second turn in the same conversation produces audio, playable in an <audio> element
    browser.find_element(By.ID, "prompt").send_keys("say hello")
    browser.find_element(By.ID, "send").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, '.msg.assistant[data-finished="true"]')) == 2)
    second = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")[1]
    audio = wait(browser, lambda d: second.find_element(By.CSS_SELECTOR, ".outputs audio"))
    assert audio.get_attribute("controls") is not None
    history = world.planner_prompts[-1]
    assert any("caption this photo" in m["content"] for m in history[:-1])  # the page sent the history
    browser.save_screenshot(str(tmp_path / "web-page.png"))
    assert (tmp_path / "web-page.png").stat().st_size > 1000
