"""The HTML report: one self-contained page with the table, the plots and the timelines,
checked in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from ftlab import explore
from ftlab.explore.store import Store
from ftlab.report.html import render_html


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    d = tmp_path_factory.mktemp("html")
    db = str(d / "r.sqlite")
    # the whole catalog, one policy; a short shrink (issue 13: it halves the fixture)
    result = explore(budget=20, db=db, version="3.14", shrink_runs=40)
    store = Store.open(db, create=False)
    try:
        text = render_html(store, result.id)
    finally:
        store.close()
    path = d / "report.html"
    path.write_text(text, encoding="utf-8")
    return result, path, text


def test_page_is_self_contained(page):
    result, path, text = page
    assert not re.search(r"""(src|href)=["'](https?:|//|file:)""", text)
    assert text.count('src="data:image/png;base64,') == 2
    assert "<style>" in text


def test_page_has_the_table_and_every_counterexample(page):
    result, path, text = page
    assert text.count("<tr><td>") >= len(result.rows)
    for r in result.rows:
        if r.violation is not None:
            assert f'id="violation-{r.violation["id"]}"' in text
            assert "invariant broken" in text


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def test_page_renders_in_headless_chromium(page, tmp_path):
    found = _chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are needed under CI (scripts/test.sh installs them)")
        pytest.skip("chromium/chromedriver not installed (apt-get install chromium chromium-driver)")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    result, path, _ = page
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1600",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    try:
        driver.get(path.as_uri())
        rows = driver.find_elements(By.CSS_SELECTOR, "table#campaign tbody tr")
        assert len(rows) == len(result.rows)
        assert rows[0].is_displayed() and rows[0].size["height"] > 0
        assert "clean" in driver.find_element(By.ID, "campaign").text
        plots = driver.find_elements(By.CSS_SELECTOR, "img.plot")
        assert len(plots) == 2
        for img in plots:
            loaded = driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth > 0", img)
            assert loaded, img.get_attribute("id")
            assert img.size["width"] > 200 and img.size["height"] > 100
        timelines = driver.find_elements(By.CSS_SELECTOR, "table.timeline")
        assert len(timelines) == sum(1 for r in result.rows if r.violation is not None)
        driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()


def test_timeline_html_shows_the_block_story_beside_the_invariant():
    # issue 16: the block's history in words closes the HTML timeline as it does the text one
    from ftlab.report.html import _timeline
    from ftlab.sim import Random
    from ftlab import Config, run
    from ftlab.scenarios import get
    scenario = get("tryincref-zero")
    config = Config(mutations=frozenset(["tryincref-accepts-zero"]))
    r = next(r for r in (run(scenario, config, Random(1), execution=i) for i in range(200))
             if r.violations)
    text = _timeline({"schedule": r.schedule, "scenario": "tryincref-zero",
                      "version": config.version, "mutations": ["tryincref-accepts-zero"]})
    assert '<p class="story">The block was allocated by a:owner as a 48-byte OldItem object' in text
    # the calls' results on the group lines, also inside the folded runs (issue 16)
    assert "<b>▸ _Py_qsbr_shared_current -&gt; 1</b>" in text
