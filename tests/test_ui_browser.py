"""The web interface in a real browser: the system's Chromium, headless,
driven by Selenium, against a daemon filled by a real pip install and a real
twine upload. Screenshots (desktop, phone, dark) are saved in the test's
temporary folder.

Skipped where Chromium, its driver or Selenium is missing (``.ci/run``
installs Chromium; ``pip install -e '.[test]'`` installs Selenium).
"""

import shutil
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from pypicache.web.metrics import Metrics
from tests.clients import pip_install, twine_upload
from tests.daemon import start_world
from tests.packages import build_wheel
from tests.uiwheels import wheel_with_metadata

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="Chromium and chromedriver are not installed "
    "(apt-get install -y chromium chromium-driver)",
)

#: Without these, Chromium on a closed network waits on connections it tries
#: to make for itself.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for the module, with a fresh profile."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (the test extra)"
    )
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tmp_path_factory.mktemp("chromium-profile")
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def in_thread(f, *args):
    """Selenium blocks: drive the browser from a thread while the daemon
    answers on the reactor."""
    return deferToThread(f, *args)


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("the page never got there")
        time.sleep(0.05)


def console_errors(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest_twisted.ensureDeferred
async def test_browsing_filtering_following_and_yanking(browser, tmp_path):
    """In Chromium: the home page shows this server's URL and the copy buttons
    (its script ran); typing into the filter leaves only the matching
    project; the private project's README is rendered; its requires-dist
    link leads to the cached project's page; a yank through the
    confirmation form shows on the page and in /simple/; a release deleted
    through its confirmation form is gone from the page and from /simple/;
    no page logs a console error; it fits a phone's width without
    scrolling sideways."""
    up = tmp_path / "up"
    lib = build_wheel(up, "lib", "1.0")
    app = build_wheel(up, "app", "1.0", requires=["lib"])
    world = await start_world(tmp_path, [app, lib], metrics=Metrics())
    try:
        daemon = world.daemon
        (
            await pip_install(daemon.url + "simple/", ["app"], tmp_path / "t", tmp_path)
        ).check()
        dist = tmp_path / "dist"
        readme = "# Mine\n\nUsed *everywhere*.\n\n```python\nimport mine\n```\n"
        headers = [
            ("Summary", "The team's own helpers"),
            ("Requires-Dist", "app>=1.0"),
            ("Description-Content-Type", "text/markdown"),
            ("License", "MIT"),
        ]
        mine = [
            wheel_with_metadata(dist, "mine", v, headers, readme)
            for v in ("1.0", "2.0rc1")
        ]
        (await twine_upload(daemon.url, mine, tmp_path)).check()
        shots = tmp_path / "screenshots"
        shots.mkdir()
        base = daemon.url.rstrip("/")

        def home(driver):
            from selenium.webdriver.common.by import By

            driver.get(daemon.url)
            shown = {e.text for e in driver.find_elements(By.CLASS_NAME, "base-url")}
            copy = driver.find_element(By.CSS_SELECTOR, "button.copy")
            driver.save_screenshot(str(shots / "home-desktop.png"))
            return shown, copy.is_displayed(), console_errors(driver)

        shown, copy_visible, errors = await in_thread(home, browser)
        assert shown == {base} and copy_visible and errors == []

        def filtering(driver):
            from selenium.webdriver.common.by import By

            driver.get(daemon.url + "+ui/projects/")
            before = [
                e.get_attribute("data-name")
                for e in driver.find_elements(By.CSS_SELECTOR, "#project-list li")
            ]
            driver.find_element(By.ID, "filter").send_keys("min")

            def visible():
                names = [
                    e.get_attribute("data-name")
                    for e in driver.find_elements(By.CSS_SELECTOR, "#project-list li")
                    if e.is_displayed()
                ]
                return names if names == ["mine"] else None

            after = wait_until(visible)
            # The server's answer replaced the list (and the address).
            wait_until(lambda: "q=min" in driver.current_url)
            driver.save_screenshot(str(shots / "projects-filtered.png"))
            return before, after, console_errors(driver)

        before, after, errors = await in_thread(filtering, browser)
        assert before == ["app", "lib", "mine"] and after == ["mine"]
        assert errors == []

        def following(driver):
            from selenium.webdriver.common.by import By

            driver.find_element(By.LINK_TEXT, "mine").click()
            wait_until(lambda: driver.current_url.endswith("/+ui/projects/mine/"))
            heading = driver.find_element(By.CSS_SELECTOR, ".readme h1").text
            emphasis = driver.find_element(By.CSS_SELECTOR, ".readme em").text
            versions = [
                e.text
                for e in driver.find_elements(By.CSS_SELECTOR, "ol.versions li a")
            ]
            driver.save_screenshot(str(shots / "project-desktop.png"))
            driver.set_window_size(390, 844)
            driver.refresh()
            overflow = driver.execute_script(
                "return document.documentElement.scrollWidth > window.innerWidth"
            )
            driver.save_screenshot(str(shots / "project-phone.png"))
            driver.execute_cdp_cmd(
                "Emulation.setEmulatedMedia",
                {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
            )
            driver.save_screenshot(str(shots / "project-phone-dark.png"))
            driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
            driver.set_window_size(1280, 900)
            driver.find_element(By.LINK_TEXT, "app>=1.0").click()
            wait_until(lambda: driver.current_url.endswith("/+ui/projects/app/"))
            title = driver.find_element(By.TAG_NAME, "h1").text
            return heading, emphasis, versions, overflow, title, console_errors(driver)

        heading, emphasis, versions, overflow, title, errors = await in_thread(
            following, browser
        )
        assert (heading, emphasis) == ("Mine", "everywhere")
        assert versions == ["2.0rc1", "1.0"]
        assert not overflow, "the project page scrolls sideways on a phone"
        assert title.startswith("app") and errors == []

        def yanking(driver):
            from selenium.webdriver.common.by import By

            driver.get(daemon.url + "+ui/projects/mine/1.0/")
            driver.find_element(By.LINK_TEXT, "Yank…").click()
            wait_until(lambda: driver.current_url.endswith("/yank"))
            driver.find_element(By.ID, "reason").send_keys("Broken build")
            driver.find_element(By.CSS_SELECTOR, "form.confirm button").click()
            wait_until(lambda: driver.current_url.endswith("/+ui/projects/mine/1.0/"))
            badge = driver.find_element(By.CSS_SELECTOR, "table.files .badge.yanked")
            driver.save_screenshot(str(shots / "yanked.png"))
            return badge.text, console_errors(driver)

        badge, errors = await in_thread(yanking, browser)
        assert badge == "yanked: Broken build" and errors == []
        response = await daemon.get("simple/mine/")
        page = (await response.content()).decode()
        assert 'data-yanked="Broken build"' in page

        def deleting(driver):
            from selenium.webdriver.common.by import By

            driver.get(daemon.url + "+ui/projects/mine/2.0rc1/")
            driver.find_element(By.LINK_TEXT, "Delete release 2.0rc1…").click()
            wait_until(lambda: driver.current_url.endswith("/2.0rc1/delete"))
            doomed = [
                e.text for e in driver.find_elements(By.CSS_SELECTOR, "ul.doomed code")
            ]
            driver.save_screenshot(str(shots / "delete-release.png"))
            driver.find_element(By.CSS_SELECTOR, "form.confirm button").click()
            wait_until(lambda: driver.current_url.endswith("/+ui/projects/mine/"))
            versions = [
                e.text
                for e in driver.find_elements(By.CSS_SELECTOR, "ol.versions li a")
            ]
            return doomed, versions, console_errors(driver)

        doomed, versions, errors = await in_thread(deleting, browser)
        assert doomed == [mine[1].name]
        assert versions == ["1.0"] and errors == []
        response = await daemon.get("simple/mine/")
        page = (await response.content()).decode()
        assert mine[1].name not in page and mine[0].name in page
        assert sorted(p.name for p in shots.iterdir()) == [
            "delete-release.png",
            "home-desktop.png",
            "project-desktop.png",
            "project-phone-dark.png",
            "project-phone.png",
            "projects-filtered.png",
            "yanked.png",
        ]
        assert all(Path(p).stat().st_size > 1000 for p in shots.iterdir())
    finally:
        await world.stop()
