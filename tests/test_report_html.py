"""finetune-report --html: one self-contained page, checked in a real headless browser (Debian's
chromium and chromedriver, driven through Selenium): it renders, its tables sort, its images load,
its links point at the runs' files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest

from finetune.report import main as report

BROWSER, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


def write_run(directory: Path, method: str, lr: float, seed: int, test: float, status: str = "completed",
              error: str = "") -> None:
    directory.mkdir(parents=True)
    (directory / "finetune.log").write_text("log\n")
    record = {
        "status": status, "error": error, "model": "minilm", "method": method, "dataset": "rt",
        "main_metric": "accuracy", "config": {"train": {"seed": seed, "lr": lr}},
        "metrics": {"validation": {"accuracy": test + 0.01}, "test": {"accuracy": test}} if status == "completed" else {},
        "params": {"trainable": 1000 if method == "lora" else 100000, "total": 100000}, "train_seconds": 10.0 * seed,
        "training": {"validation_curve": [{"epoch": 1, "step": 5, "accuracy": test - 0.05},
                                          {"epoch": 2, "step": 10, "accuracy": test}]},
        "versions": {"torch": "2.13.0"},
        "provenance": {"code": {"version": "0.1.0", "git_commit": "b" * 40, "git_dirty": False},
                       "machine": {"cpu": "AMD EPYC", "usable_cores": 2, "gpus": []}},
    }
    (directory / "results.json").write_text(json.dumps(record))


@pytest.fixture
def study(tmp_path) -> Path:
    root = tmp_path / "study"
    scores = {("full", 1e-4): 0.86, ("full", 1e-3): 0.70, ("lora", 1e-3): 0.84, ("lora", 1e-2): 0.78}
    for index, ((method, lr), score) in enumerate(scores.items()):
        for seed in (1, 2):
            write_run(root / f"{index}{seed}_{method}_lr={lr},seed={seed}", method, lr, seed, score + seed / 100)
    write_run(root / "90_lora_lr=0.1,seed=1", "lora", 0.1, 1, 0.0, status="failed",
              error="RunError: the training loss became NaN or infinite at step 3")
    write_run(root / "91_full_lr=0.1,seed=1", "full", 0.1, 1, 0.0, status="pruned")
    report([str(root), "--html"])
    return root


def test_the_page_is_self_contained_and_lists_every_run_and_why_some_failed(study):
    page = (study / "report.html").read_text()
    assert "src=\"http" not in page and "<link" not in page  # nothing fetched from elsewhere
    assert page.count('src="data:image/png;base64,') >= 3
    assert "RunError: the training loss became NaN or infinite at step 3" in page
    assert "Runs that did not complete (2)" in page and "<b>pruned</b>" in page
    assert "0.1.0 @ bbbbbbbbbb" in page and "AMD EPYC (2 cores), no GPU" in page


@pytest.fixture
def browser():
    if not (BROWSER and DRIVER):
        if os.environ.get("FINETUNE_REQUIRE_BROWSER"):
            pytest.fail("FINETUNE_REQUIRE_BROWSER is set, but chromium and chromedriver are not installed "
                        "(apt-get install chromium chromium-driver)")
        pytest.skip("no headless browser: apt-get install chromium chromium-driver (CI installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def column(browser, table: str, name: str) -> list[str]:
    headers = [cell.text.rstrip(" ▲▼") for cell in browser.find_elements("css selector", f"#{table} th")]
    index = headers.index(name) + 1
    return [cell.get_attribute("data-sort") for cell in browser.find_elements("css selector", f"#{table} tbody td:nth-child({index})")]


def test_in_a_real_browser_the_page_renders_sorts_and_loads_its_images(study, browser, tmp_path):
    browser.get((study / "report.html").as_uri())
    assert browser.title == "finetune-report: study"
    assert len(browser.find_elements("css selector", "#configurations tbody tr")) == 6
    assert len(browser.find_elements("css selector", "#runs tbody tr")) == 10

    header = next(cell for cell in browser.find_elements("css selector", "#configurations th") if cell.text == "test")
    header.click()
    ascending = [float(value) for value in column(browser, "configurations", "test") if value]
    assert ascending == sorted(ascending) and len(ascending) == 4
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    descending = [float(value) for value in column(browser, "configurations", "test") if value]
    assert descending == sorted(ascending, reverse=True)
    assert column(browser, "configurations", "test")[-2:] == ["", ""]  # runs without a score stay last

    images = browser.find_elements("css selector", "img")
    assert images and all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image)
                          for image in images)
    targets = [link.get_attribute("href") for link in browser.find_elements("css selector", "#runs a")
               if link.text == "results.json"]
    assert len(targets) == 10 and all(Path(unquote(target.removeprefix("file://"))).is_file() for target in targets)
    assert browser.save_screenshot(str(tmp_path / "report.png"))
