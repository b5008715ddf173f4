"""The playground page in a real headless browser (Debian's chromium, driven by selenium): type
an instruction, pick two adapters, wait for both streamed answers, and check that they are the
answers the API gives. The screenshot goes to the test's folder, and also to the path in
``LLADAPT_PLAYGROUND_SCREENSHOT`` when set (``docs/images/playground.png`` is made that way)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from serve_support import INSTRUCTIONS, running_server

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
TOKENS = 48


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"needs Debian's chromium and its driver: {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,700", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_two_adapters_answer_side_by_side_as_the_api_does(browser, tmp_path_factory, tmp_path):
    import openai
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    server = running_server(tmp_path_factory.getbasetemp() / "serve-runs")
    instruction = INSTRUCTIONS[0]
    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    browser.find_element(By.ID, "instruction").send_keys(instruction)
    tokens = browser.find_element(By.ID, "max_tokens")
    tokens.clear()
    tokens.send_keys(str(TOKENS))
    for column, model in enumerate(("lora", "series", "")):
        Select(browser.find_element(By.ID, f"model-{column}")).select_by_value(model)
    browser.find_element(By.ID, "run").click()
    for column in (0, 1):
        wait.until(lambda b, c=column: b.find_element(By.ID, f"answer-{c}").get_attribute("data-state") == "done")
    shown = [browser.find_element(By.ID, f"answer-{c}").get_property("textContent") for c in (0, 1)]
    assert browser.find_element(By.ID, "answer-2").get_attribute("data-state") == "idle"
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    api = [client.chat.completions.create(model=model, messages=[{"role": "user", "content": instruction}],
                                          max_tokens=TOKENS, temperature=0).choices[0].message.content
           for model in ("lora", "series")]
    assert shown == api and shown[0] != shown[1] and all(shown)
    picture = tmp_path / "playground.png"
    assert browser.save_screenshot(str(picture))
    if os.environ.get("LLADAPT_PLAYGROUND_SCREENSHOT"):
        shutil.copyfile(picture, os.environ["LLADAPT_PLAYGROUND_SCREENSHOT"])
