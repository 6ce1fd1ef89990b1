"""The report's taxonomy editor in a real headless Chromium: a person edits a discovered
taxonomy in report.html (opened from the file, no server), exports edits.json, and
`failtax assign --edits` turns it into a new run whose taxonomy and report show them.

Needs chromium + chromedriver (scripts/setup_browser.sh installs Debian's) and
selenium (the `dev` extra). Without them the test skips with the reason, unless
FAILTAX_REQUIRE_BROWSER=1 (scripts/test.sh sets it where the browser could be
installed), where it fails. FAILTAX_SCREENSHOT_DIR=docs saves the screenshots of
docs/BROWSER.md.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from common import stable_hash
from failtax.cli import main
from failtax.run_folder import read_assignments, read_taxonomy
from failtax.types import OUTLIER

WAIT_S = 20.0


def _unavailable(reason: str) -> None:
    if os.environ.get("FAILTAX_REQUIRE_BROWSER") == "1":
        pytest.fail(f"FAILTAX_REQUIRE_BROWSER=1 but the browser test cannot run: {reason}")
    pytest.skip(f"headless Chromium unavailable: {reason} (bash scripts/setup_browser.sh installs it)")


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium (selenium) that saves downloads to tmp_path/downloads."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[dev]')")
    binary = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                  None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        _unavailable(f"browser {binary or 'not found'}, chromedriver {driver_path or 'not found'}")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1100,1400"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    try:
        driver = webdriver.Chrome(options=options, service=Service(driver_path))
    except WebDriverException as e:
        _unavailable(f"chromedriver did not start: {e.msg}")
    driver.downloads = downloads
    yield driver
    driver.quit()


def _wait(predicate, what: str):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _card(driver, name: str):
    from selenium.webdriver.common.by import By

    for card in driver.find_elements(By.CSS_SELECTOR, "#edit-modes .edit-mode"):
        if card.get_attribute("data-mode") == name:
            return card
    raise AssertionError(f"no editor card for {name!r}")


def _open(driver, name: str):
    from selenium.webdriver.common.by import By

    card = _card(driver, name)
    if card.find_element(By.TAG_NAME, "details").get_attribute("open") is None:
        card.find_element(By.TAG_NAME, "summary").click()
    return _card(driver, name)


def _tick(driver, mode: str, episode: str) -> None:
    from selenium.webdriver.common.by import By

    for box in _open(driver, mode).find_elements(By.CSS_SELECTOR, "input.ep-pick"):
        if box.get_attribute("value") == episode:
            box.click()
            return
    raise AssertionError(f"{episode} not listed under {mode!r}")


def _count(driver) -> int:
    from selenium.webdriver.common.by import By

    return int(driver.find_element(By.ID, "edit-count").text)


def _shot(driver, tmp_path: Path, name: str) -> Path:
    """A screenshot (palette PNG, small), also into FAILTAX_SCREENSHOT_DIR when set."""
    from PIL import Image

    path = tmp_path / name
    driver.save_screenshot(str(path))
    Image.open(path).convert("RGB").quantize(colors=64).save(path, optimize=True)
    target = os.environ.get("FAILTAX_SCREENSHOT_DIR")
    if target:
        shutil.copy(path, Path(target) / name)
    return path


@pytest.fixture
def discovered_run(tmp_path, episode_factory):
    """A real run: 12 episodes → facts explanations → cluster-then-name → assign → report."""
    episodes = tmp_path / "episodes"
    episodes.mkdir()
    for i, hazard in enumerate(["glass_door", "pole", "box"] * 4):
        episode_factory(episodes, f"ep-{i:03d}", hazard=hazard, seed=i, n_steps=10 + i)
    run = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "discover", str(episodes), "--run-dir", str(run), "--quiet",
        "--set", "discovery.embedding.kind=hashing", "--set", "assignment.embedding.kind=hashing",
        "--set", "discovery.use_model_names=false", "--set", "discovery.min_modes=2"])
    assert result.exit_code == 0, result.output
    return run


def test_edit_export_apply_in_headless_chromium(browser, discovered_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    run = discovered_run
    source = read_taxonomy(run)
    members = {m.name: sorted(a.episode_id for a in read_assignments(run) if m.name in a.modes)
               for m in source.modes}
    by_size = sorted(source.names, key=lambda n: (-len(members[n]), n))
    assert len(by_size) >= 4 and len(members[by_size[0]]) >= 2, members
    big, merge_a, merge_b, other = by_size[0], by_size[1], by_size[2], by_size[3]
    before = {p.name: stable_hash(p.read_bytes()) for p in run.iterdir()}

    browser.get((run / "report.html").as_uri())
    editor = browser.find_element(By.ID, "editor")
    assert not editor.is_displayed()
    browser.find_element(By.ID, "edit-toggle").click()
    assert editor.is_displayed() and _count(browser) == 0

    # rename the largest mode
    card = _card(browser, big)
    card.find_element(By.CSS_SELECTOR, "input.rename-name").send_keys("low obstacles")
    card.find_element(By.CSS_SELECTOR, "button.rename-btn").click()
    assert _count(browser) == 1
    # a split with nothing ticked is refused on the page, with the reason
    _open(browser, "low obstacles").find_element(By.CSS_SELECTOR, "button.split-btn").click()
    assert "tick the episodes" in browser.find_element(By.ID, "edit-error").text and _count(browser) == 1
    # split one picked episode off into a new mode
    split_off = members[big][0]
    _tick(browser, "low obstacles", split_off)
    card = _open(browser, "low obstacles")
    card.find_element(By.CSS_SELECTOR, "input.split-name").send_keys("low, to review")
    card.find_element(By.CSS_SELECTOR, "button.split-btn").click()
    assert _count(browser) == 2 and browser.find_element(By.ID, "edit-error").text == ""
    # merge two modes
    for name in (merge_a, merge_b):
        _card(browser, name).find_element(By.CSS_SELECTOR, "input.merge-pick").click()
    browser.find_element(By.ID, "merge-name").send_keys("head-on collisions")
    browser.find_element(By.ID, "merge-btn").click()
    assert _count(browser) == 3
    # move one episode of the merged mode to the outliers
    moved = members[merge_a][0]
    _tick(browser, "head-on collisions", moved)
    card = _open(browser, "head-on collisions")
    Select(card.find_element(By.CSS_SELECTOR, "select.move-to")).select_by_value(OUTLIER)
    card.find_element(By.CSS_SELECTOR, "button.move-btn").click()
    assert _count(browser) == 4 and _card(browser, OUTLIER)
    # a mistaken edit, undone
    card = _card(browser, other)
    card.find_element(By.CSS_SELECTOR, "input.rename-name").send_keys("oops")
    card.find_element(By.CSS_SELECTOR, "button.rename-btn").click()
    assert _count(browser) == 5
    browser.find_element(By.ID, "undo-btn").click()
    assert _count(browser) == 4
    # the last mode is not a failure
    card = _card(browser, other)
    card.find_element(By.CSS_SELECTOR, "input.naf-reason").send_keys("docking contact, not a crash")
    card.find_element(By.CSS_SELECTOR, "button.naf-btn").click()
    assert _count(browser) == 5
    names_on_page = [c.get_attribute("data-mode") for c in browser.find_elements(By.CSS_SELECTOR, ".edit-mode")]
    assert sorted(names_on_page) == sorted(["low obstacles", "low, to review", "head-on collisions", OUTLIER])
    assert names_on_page.index("low, to review") == names_on_page.index("low obstacles") + 1  # beside its source
    browser.set_window_size(1100, 1900)
    browser.execute_script("document.getElementById('editor').scrollIntoView()")
    _shot(browser, tmp_path, "browser_editor.png")
    browser.set_window_size(1100, 1400)

    # a reload keeps the edits (this browser's storage); then export
    browser.refresh()
    browser.find_element(By.ID, "edit-toggle").click()
    assert _count(browser) == 5
    shown = json.loads(browser.find_element(By.ID, "edits-json").get_attribute("value"))
    browser.find_element(By.ID, "export-btn").click()
    exported = _wait(lambda: next(iter(browser.downloads.glob("edits*.json")), None), "edits.json download")
    _wait(lambda: exported.stat().st_size > 0 and not list(browser.downloads.glob("*.crdownload")), "download end")
    edits = json.loads(exported.read_text())
    assert edits == shown
    assert [e["op"] for e in edits["edits"]] == ["rename", "split", "merge", "move", "not_a_failure"]
    assert edits["source_run"] == "run" and edits["source_fingerprint"]

    # apply: a new run folder with the edited taxonomy; the source run unchanged
    out = tmp_path / "run-edited"
    result = CliRunner().invoke(main, ["assign", str(run), "--edits", str(exported), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name: stable_hash(p.read_bytes()) for p in run.iterdir()} == before
    edited = read_taxonomy(out)
    assert edited.names == names_on_page[:-1]  # the page and the applied file agree, in order
    counts = {m.name: m.count for m in edited.modes}
    assert counts == {"low obstacles": len(members[big]) - 1, "low, to review": 1,
                      "head-on collisions": len(members[merge_a]) + len(members[merge_b]) - 1}
    assignments = {a.episode_id: a for a in read_assignments(out)}
    assert assignments[split_off].modes == ["low, to review"] and assignments[split_off].method == "person (split)"
    assert assignments[moved].modes == [OUTLIER] and edited.outlier_count == 1
    assert not set(members[other]) & set(assignments)  # not failures: out of the counts
    provenance = edited.notes["edits"]
    assert set(provenance["modes"]) == {"low obstacles", "low, to review", "head-on collisions"}
    assert all(v["edited_by"] == "person" for v in provenance["modes"].values())
    assert provenance["not_a_failure"][0]["reason"] == "docking contact, not a crash"

    # the new run's report shows the edits, and its editor starts afresh on the new taxonomy
    browser.get((out / "report.html").as_uri())
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
    assert "Edits by a person" in headings
    items = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "ol.edit-list li")]
    assert len(items) == 5 and items[0] == f"renamed '{big}' to 'low obstacles'"
    assert "docking contact, not a crash" in browser.page_source
    browser.find_element(By.ID, "edit-toggle").click()
    assert _count(browser) == 0
    assert [c.get_attribute("data-mode") for c in browser.find_elements(By.CSS_SELECTOR, ".edit-mode")] == (
        names_on_page)
    browser.find_element(By.ID, "edit-toggle").click()
    browser.execute_script("window.scrollTo(0, 0)")
    _shot(browser, tmp_path, "browser_edited_report.png")
