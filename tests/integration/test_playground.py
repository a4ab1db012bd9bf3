"""The playground (/playground/) and the status page (/playground/status.html) in a real browser.

Debian's headless chromium, driven by selenium through chromedriver, loads the
pages from the project's own nginx site (servers.py) in front of llmcgi serving
the shipped model with [auth] on: it picks the model, streams an answer, stops
one mid-stream (and /health counts it cancelled), shows a wrong key's 401 in
plain words, and the status page lists the model and draws its chart. One test
goes through Apache. Each state's screenshot is kept as a test artefact in
tests/integration/playground-shots/ under the build directory.
"""

import hashlib
import json

import pytest

from servers import (BUILDDIR, SRCDIR, Apache, Llmcgi, Nginx, make_tmpdir, remove_tmpdir, request, require,
                     require_module, wait_for)

MODEL = SRCDIR / "models" / "llmcgi-tiny"
SHOTS = BUILDDIR / "tests" / "integration" / "playground-shots"
USER_KEY = "pg-user-key-1"
OPS_KEY = "pg-ops-key-1"
WAIT = 60      # seconds: generous, for a loaded machine; never an assertion about speed


@pytest.fixture(scope="module")
def site():
    """llmcgi with the shipped model and a keys file, behind nginx; Apache started on demand."""
    d = make_tmpdir("llmcgi-playground-")
    sock = d / "llmcgi.sock"
    keys = d / "keys"
    keys.write_text(f"{hashlib.sha256(USER_KEY.encode()).hexdigest()} user\n"
                    f"{hashlib.sha256(OPS_KEY.encode()).hexdigest()} operator ops\n")
    llmcgi = Llmcgi(sock, dir=d, extra=f"default_model = llmcgi-tiny\n\n[auth]\nkeys_file = {keys}\n\n"
                                        f"[model llmcgi-tiny]\npath = {MODEL}\ndevice = cpu\n").start()
    nginx = Nginx(sock).start()
    servers = {"nginx": nginx, "sock": sock, "llmcgi": llmcgi}
    try:
        wait_for(lambda: request(nginx.port, "GET", "/health").status == 200, "llmcgi-tiny to load", timeout=WAIT)
        yield servers
    finally:
        if "apache" in servers:
            servers["apache"].stop()
        nginx.stop()
        report = llmcgi.cleanup()
        remove_tmpdir(d)
    assert not report, report


@pytest.fixture(scope="module")
def browser():
    webdriver = require_module("selenium.webdriver", "selenium")
    chromium = require("chromium", "chromium")
    driver_bin = require("chromedriver", "chromium-driver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,900", "--no-first-run", "--disable-extensions",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        opts.add_argument(a)
    profile = make_tmpdir("chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        remove_tmpdir(profile)


# ---------------------------------------------------------------- helpers

def until(driver, what, predicate, timeout=WAIT):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: predicate(d), message=what)


def by_id(driver, i):
    return driver.find_element("id", i)


def shot(driver, name):
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def console_errors(driver, allow=()):
    """The browser console's errors since the last call, less the allowed ones (substrings).
    /favicon.ico is left out: chromium asks for it after open_playground's visit to a CSS
    file (the pages themselves name a data: icon, so they never ask)."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "/favicon.ico " not in e["message"]
            and not any(a in e["message"] for a in allow)]


def open_playground(driver, port, key=USER_KEY, size=(1280, 900), models=True):
    """Loads the playground with `key` stored (as a typed key would be); waits for the model list."""
    driver.set_window_size(*size)
    driver.get(f"http://127.0.0.1:{port}/playground/playground.css")    # the origin, no API call
    driver.execute_script("localStorage.setItem('llmcgi.apiKey', arguments[0]);", key)
    console_errors(driver)                                               # earlier tests' lines
    driver.get(f"http://127.0.0.1:{port}/playground/")
    if models:
        # the values read in the page in one step: the list may be re-rendered between a
        # find_elements and a read of each element (a stale element, seen under load)
        until(driver, "the model list", lambda d: "llmcgi-tiny" in d.execute_script(
            "return Array.from(document.querySelectorAll('#model option'), o => o.value);"))


def record_chunks(driver, stop_at=None):
    """Records #output's text after each streamed chunk; with stop_at, clicks #stop
    (its real click handler) as soon as that many chunks are shown."""
    driver.execute_script("""
        const stopAt = arguments[0];
        window.seen = [];
        window.playgroundHooks = { onChunk(n) {
            window.seen.push(document.getElementById('output').textContent);
            if (n === stopAt) document.getElementById('stop').click();
        } };""", stop_at)


def set_field(driver, i, value):
    e = by_id(driver, i)
    e.clear()
    if value != "":
        e.send_keys(str(value))


def answer_done(driver):
    return by_id(driver, "send").is_enabled() and not by_id(driver, "stop").is_enabled()


def stat(driver, name):
    return driver.find_element("css selector", f"#stats [data-stat={name}]").text


def health_model(port):
    r = request(port, "GET", "/health")
    assert r.status == 200, r.body
    return r.json()["local_models"]["llmcgi-tiny"]


def stream_and_check(driver, port):
    """Sends a prompt by keyboard (Enter in #prompt) and checks that the answer came in pieces."""
    from selenium.webdriver.common.keys import Keys
    Select = require_module("selenium.webdriver.support.select", "selenium").Select
    Select(by_id(driver, "model")).select_by_value("llmcgi-tiny")
    set_field(driver, "max_tokens", 24)
    record_chunks(driver)
    prompt = by_id(driver, "prompt")
    prompt.send_keys("In the beginning")
    prompt.send_keys(Keys.ENTER)
    until(driver, "the answer to finish", lambda d: d.execute_script("return window.seen.length") > 0 and answer_done(d))
    seen = driver.execute_script("return window.seen")
    out = by_id(driver, "output")
    assert int(out.get_attribute("data-chunks")) >= 2, seen
    assert int(out.get_attribute("data-reads")) >= 2, "the whole answer came in one network read: not streamed"
    grown = [t for a, t in zip(seen, seen[1:]) if t != a]
    assert len(set(seen)) >= 2 and len(grown) >= 1, seen
    for a, b in zip(seen, seen[1:]):
        assert b.startswith(a), (a, b)          # each piece adds to what was shown
    return seen


# ---------------------------------------------------------------- the playground

def test_chat_streams_with_stats(site, browser):
    port = site["nginx"].port
    open_playground(browser, port)
    seen = stream_and_check(browser, port)
    assert by_id(browser, "error").get_attribute("hidden") is not None
    assert "In the beginning" in seen[-1]
    assert stat(browser, "ttft").endswith(" ms")
    assert float(stat(browser, "tps").replace(",", "")) > 0
    assert int(stat(browser, "prompt_tokens")) > 0
    assert 1 <= int(stat(browser, "completion_tokens")) <= 24
    assert stat(browser, "finish_reason") in ("length", "stop")
    # the request carried the key as a bearer token: the key's name ends the access-log line
    lines = [l for l in site["llmcgi"].access_log().splitlines() if '"POST /v1/chat/completions"' in l]
    assert lines and lines[-1].split()[-1] == "user", lines
    # every file the page loaded came from this server
    origins = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
    assert set(origins) == {f"http://127.0.0.1:{port}"}, origins
    shot(browser, "1-chat-streamed")
    assert console_errors(browser) == []


def test_completion_with_logprobs_shades_tokens(site, browser):
    port = site["nginx"].port
    open_playground(browser, port)
    by_id(browser, "mode-completion").click()
    by_id(browser, "logprobs").click()
    set_field(browser, "temperature", 0)
    set_field(browser, "max_tokens", 16)
    by_id(browser, "prompt").send_keys("In the beginning")
    by_id(browser, "send").click()
    until(browser, "shaded tokens", lambda d: answer_done(d) and d.find_elements("css selector", "#output .tok"))
    toks = browser.find_elements("css selector", "#output .tok")
    ps = [float(t.get_attribute("data-p")) for t in toks]
    assert all(0 < p <= 1 for p in ps) and len(set(ps)) > 1, ps
    # hovering a token shows its alternatives
    from selenium.webdriver.common.action_chains import ActionChains
    ActionChains(browser).move_to_element(toks[1]).perform()
    until(browser, "the tooltip", lambda d: by_id(d, "tip").is_displayed())
    tip = by_id(browser, "tip").text
    assert tip.count("%") >= 3, tip
    assert stat(browser, "finish_reason") == "length" and stat(browser, "completion_tokens") == "16"
    shot(browser, "2-logprobs-hover")
    assert console_errors(browser) == []


def test_stop_cancels_on_the_server(site, browser):
    port = site["nginx"].port
    before = health_model(port)["cancelled"]
    open_playground(browser, port)
    by_id(browser, "mode-completion").click()
    set_field(browser, "temperature", 0)          # greedy: 250 tokens with no end of text for this prompt
    set_field(browser, "max_tokens", 250)
    record_chunks(browser, stop_at=3)             # Stop is clicked while the answer streams
    by_id(browser, "prompt").send_keys("In the beginning")
    by_id(browser, "send").click()
    until(browser, "the page to confirm the cancellation",
          lambda d: by_id(d, "cancel-note").get_attribute("data-cancelled"))
    after = health_model(port)
    assert after["cancelled"] >= before + 1, (before, after)
    assert int(by_id(browser, "cancel-note").get_attribute("data-cancelled")) == after["cancelled"]
    assert "cancelled" in by_id(browser, "cancel-note").text
    assert "[stopped]" in by_id(browser, "output").text
    assert stat(browser, "finish_reason") == "stopped"
    assert by_id(browser, "send").is_enabled() and not by_id(browser, "stop").is_enabled()
    wait_for(lambda: health_model(port)["running"] == 0, "the slot to be free", timeout=WAIT)
    shot(browser, "3-stopped")
    assert console_errors(browser) == []


def test_wrong_key_is_a_401_in_plain_words(site, browser):
    port = site["nginx"].port
    open_playground(browser, port, key="not-a-key", models=False)
    until(browser, "the error", lambda d: by_id(d, "error").is_displayed())
    msg = by_id(browser, "error").text
    assert "401" in msg and "API key" in msg, msg
    key = by_id(browser, "key")
    assert key.is_displayed() and key.get_attribute("value") == "not-a-key"    # the key field is opened
    shot(browser, "4-wrong-key")
    # a right key typed into #key reads the models again, and is kept
    key.clear()
    key.send_keys(USER_KEY)
    until(browser, "the model list", lambda d: "llmcgi-tiny" in d.find_element("id", "model").text)
    until(browser, "the error to go", lambda d: not by_id(d, "error").is_displayed())
    assert browser.execute_script("return localStorage.getItem('llmcgi.apiKey')") == USER_KEY
    # the only console errors: the browser's own line for each 401 answer
    assert console_errors(browser, allow=("status of 401",)) == []


def test_phone_width_and_keyboard_only(site, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    port = site["nginx"].port
    open_playground(browser, port, size=(375, 812))
    width = browser.execute_script("return document.documentElement.clientWidth")
    assert width <= 375
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width, "scrolls sideways"
    for i in ("model", "prompt", "send", "stop", "output", "stats"):
        r = browser.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.left, r.right, r.width]",
                                   by_id(browser, i))
        assert r[0] >= 0 and r[1] <= width + 0.5 and r[2] > 0, (i, r)
    # keyboard alone: Tab from the top reaches the model picker and then the prompt; Enter sends
    order = []
    for _ in range(40):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        active = browser.execute_script("return document.activeElement.id")
        order.append(active)
        if active == "prompt":
            break
    assert "model" in order and order[-1] == "prompt", order
    record_chunks(browser)
    ActionChains(browser).send_keys("Hello").perform()
    ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
    assert "\n" in by_id(browser, "prompt").get_attribute("value")     # Shift+Enter: a new line, not sent
    assert browser.execute_script("return window.seen.length") == 0
    ActionChains(browser).send_keys("there").send_keys(Keys.ENTER).perform()
    until(browser, "the answer", lambda d: d.execute_script("return window.seen.length") > 0 and answer_done(d))
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width, "scrolls sideways"
    shot(browser, "5-phone")
    assert console_errors(browser) == []


# ---------------------------------------------------------------- the status page

def test_status_page_lists_the_model_and_draws_the_chart(site, browser):
    port = site["nginx"].port
    browser.set_window_size(1280, 1000)
    open_playground(browser, port, key=OPS_KEY)
    console_errors(browser)
    browser.get(f"http://127.0.0.1:{port}/playground/status.html?every=1")
    row = "#models tr[data-model='llmcgi-tiny']"
    until(browser, "the model's row", lambda d: d.find_elements("css selector", row))
    # read in the page in one step: the page re-renders the table every second
    cells = browser.execute_script("return Array.from(document.querySelectorAll(arguments[0]), c => c.innerText);",
                                   row + " td")
    assert cells[0] == "ready" and cells[1] == "cpu" and cells[3] in ("F16", "F32", "BF16"), cells
    until(browser, "two samples", lambda d: int(by_id(d, "chart").get_attribute("data-points") or 0) >= 1)
    # generation while the page watches: its tokens/s line rises above zero
    body = {"model": "llmcgi-tiny", "prompt": "In the beginning", "max_tokens": 64, "temperature": 0}
    r = request(port, "POST", "/v1/completions", json.dumps(body),
                {"Content-Type": "application/json", "Authorization": f"Bearer {USER_KEY}"})
    assert r.status == 200, r.body
    until(browser, "tokens/s above zero", lambda d: float(by_id(d, "chart").get_attribute("data-max-tps") or 0) > 0)
    # the canvas holds the tokens/s line's colour (#2563eb), not just a blank or a grid
    blue = browser.execute_script("""
        const c = document.getElementById('chart'), g = c.getContext('2d');
        const px = g.getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < px.length; i += 4)
            if (Math.abs(px[i] - 0x25) < 40 && Math.abs(px[i+1] - 0x63) < 40 && px[i+2] > 0xb0) n++;
        return n;""")
    assert blue > 50, blue
    assert "ops key" not in by_id(browser, "error").text
    assert browser.find_elements("css selector", "#summary dd")
    shot(browser, "6-status")
    assert console_errors(browser) == []


def test_status_page_without_an_ops_key_says_so(site, browser):
    port = site["nginx"].port
    open_playground(browser, port, key=USER_KEY)
    console_errors(browser)
    browser.get(f"http://127.0.0.1:{port}/playground/status.html?every=1")
    until(browser, "the note", lambda d: "ops key" in by_id(d, "error").text)
    # /health needs no key: the model is listed all the same
    assert browser.find_elements("css selector", "#models tr[data-model='llmcgi-tiny']")
    assert console_errors(browser, allow=("status of 403",)) == []


# ---------------------------------------------------------------- Apache

def test_apache_serves_the_playground_and_streams(site, browser):
    apache = site.get("apache") or Apache(site["sock"]).start()
    site["apache"] = apache
    for path, ctype in (("/playground/", "text/html"), ("/playground/js/playground.js", "text/javascript"),
                        ("/playground/playground.css", "text/css")):
        for port in (site["nginx"].port, apache.port):
            r = request(port, "GET", path)
            assert r.status == 200 and (r.header("content-type") or "").startswith(ctype), (port, path, r.headers)
            assert "default-src 'self'" in (r.header("content-security-policy") or "")
    # the sites' own errors stay JSON beside the playground
    for port in (site["nginx"].port, apache.port):
        r = request(port, "GET", "/playground/no-such-file")
        assert r.status == 404 and r.json()["error"], r.body
        r = request(port, "GET", "/playground")
        assert r.status == 301 and r.header("location").endswith("/playground/"), r.headers
    open_playground(browser, apache.port)
    stream_and_check(browser, apache.port)
    shot(browser, "7-apache")
    assert console_errors(browser) == []


# ---------------------------------------------------------------- llmcgi down, and the other errors' words

def test_llmcgi_down_the_page_loads_and_says_when_to_retry(browser):
    """The web server serves the pages by itself: with no llmcgi behind it, the playground
    loads and shows the site's JSON 502 in plain words with its Retry-After."""
    d = make_tmpdir("llmcgi-none-")
    nginx = Nginx(d / "nobody.sock").start()
    try:
        open_playground(browser, nginx.port, key="", models=False)
        until(browser, "the error", lambda d: by_id(d, "error").is_displayed())
        msg = by_id(browser, "error").text
        assert "502" in msg and "Try again in 5 seconds" in msg, msg
        assert console_errors(browser, allow=("status of 502",)) == []
    finally:
        nginx.stop()
        remove_tmpdir(d)


def test_error_words_for_429_and_503(site, browser):
    """What the page says for answers this set-up cannot provoke without disturbing the
    other tests (a full queue, a model that failed): api.js's plainWords in the page."""
    open_playground(browser, site["nginx"].port)
    words = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import('./js/api.js').then(({ ApiError, plainWords }) => done([
            plainWords(new ApiError(429, 'Rate limit reached', { retryAfter: 7 })),
            plainWords(new ApiError(503, 'model llmcgi-tiny failed to load', { retryAfter: 1 })),
            plainWords(new ApiError(503, 'unavailable')),
        ]));""")
    assert words[0] == "Too many requests (429): Rate limit reached. Try again in 7 seconds.", words
    assert words[1].startswith("The service or model is unavailable right now (503): model llmcgi-tiny failed")
    assert words[1].endswith("Try again in 1 second.") and words[2].endswith("(503): unavailable."), words
    assert console_errors(browser) == []
