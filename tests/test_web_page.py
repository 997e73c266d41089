"""The web page and the API docs pages in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium) against a real gunicorn serving the shipped models, with the
network blocked (every host name but 127.0.0.1 fails to resolve), as on a machine without internet.

The page tags a sentence, marks a span model's spans in the text, holds a two-turn dialog (each turn's act with its
name) and a turn with its slots, resets a dialog; what it shows is what the API answers; a screenshot (spans and
slots on it) lands in ``build/screenshots/web-page.png``. Its service lists come from ``GET /v1/services``; a schema
pasted in "Register a service" is registered (and chosen), a bad one shows the API's field path
(``build/screenshots/web-page-services.png``). The server keeps its registrations in a directory of the test's own
(``SEQTAG_SERVICES_DIR``), never the user's home. ``/docs/`` (Swagger UI),
``/docs/redoc/`` and ``/docs/scalar/`` each render every operation of the API document; every request the
browser made went to the server itself (Chromium's network log), and nothing was refused by the pages'
Content-Security-Policy (its console)."""

from __future__ import annotations

import json
import shutil

import pytest

from browser import require_chromium, requested_urls, start_chromium
from test_gunicorn import REPO, call, serve_shipped_models

require_chromium()
SCREENSHOT = REPO / "build" / "screenshots" / "web-page.png"


def run_server(tmp, **extra_env):
    # Registered services in the test's directory: the default is the user's ~/.local/state/seqtag/services.
    extra_env.setdefault("SEQTAG_SERVICES_DIR", str(tmp / "services"))
    for base, port, _ in serve_shipped_models(tmp, **extra_env):
        yield base, port


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # The page offers the services GET /v1/services knows: the shipped schema-guided span model ships SGD's
    # training services (Restaurants_1, whose spans the page shows, among them). Only the serving versions load.
    yield from run_server(tmp_path_factory.mktemp("web"), SEQTAG_KEEP_VERSIONS="1",
                          SEQTAG_KEEP_DIALOG_VERSIONS="1")


API_KEY = "page-test-key-0123456789"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory, random_tagger_dir):
    """The service with API keys on: the page needs the key typed in before its API calls succeed. (A tiny
    tagger: this test is about the key, and the tiny model loads in a fraction of the shipped ones' time.)"""
    tmp = tmp_path_factory.mktemp("web-keyed")
    shutil.copytree(random_tagger_dir, tmp / "models" / "pos" / "1")
    yield from run_server(tmp, SEQTAG_API_KEYS=f"page:{API_KEY}", SEQTAG_MODELS_DIR=str(tmp / "models"))


@pytest.fixture(scope="module")
def browser():
    driver = start_chromium()
    yield driver
    driver.quit()


def test_tag_a_sentence_and_hold_a_dialog(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    base, port = server
    wait = WebDriverWait(browser, 60)
    browser.get(base + "/")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")

    # Tagging: the page shows the API's tokens and tags, one colour per tag.
    sentence = "I don't like green eggs and ham."
    text_box = browser.find_element(By.ID, "tag-text")
    text_box.clear()
    text_box.send_keys(sentence)
    browser.find_element(By.ID, "tag-button").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#tag-result .token"))
    chips = browser.find_elements(By.CSS_SELECTOR, "#tag-result .token")
    shown = [(c.find_element(By.CLASS_NAME, "text").text, c.find_element(By.CLASS_NAME, "tag").text) for c in chips]
    status, answer = call(port, "/v1/models/pos:tag", {"texts": [sentence]})
    assert status == 200
    assert shown == list(zip(answer["results"][0]["tokens"], answer["results"][0]["tags"]))
    assert [t for t, _ in shown][:3] == ["I", "do", "n't"]
    colours = {}
    for chip, (_, tag) in zip(chips, shown):
        colours.setdefault(tag, set()).add(chip.value_of_css_property("background-color"))
    assert all(len(c) == 1 for c in colours.values())  # one colour per tag ...
    assert len({next(iter(c)) for c in colours.values()}) == len(colours)  # ... and a different one for each

    # A dialog: each turn appears with the act the API gives for the same conversation.
    Select(browser.find_element(By.ID, "dialog-model")).select_by_value("dialog-act")
    turns = [("A", "Do you have any pets?"), ("B", "Yes, we have a dog.")]
    for speaker, text in turns:
        speaker_box = browser.find_element(By.ID, "turn-speaker")
        speaker_box.clear()
        speaker_box.send_keys(speaker)
        browser.find_element(By.ID, "turn-text").send_keys(text)
        browser.find_element(By.ID, "turn-button").click()
        count = len(browser.find_elements(By.CSS_SELECTOR, "#dialog-log .turn"))
        wait.until(lambda d, n=count: len(d.find_elements(By.CSS_SELECTOR, "#dialog-log .turn")) >= n and
                   d.find_element(By.ID, "turn-text").get_attribute("value") == "")
    items = browser.find_elements(By.CSS_SELECTOR, "#dialog-log .turn")
    shown_labels = [item.find_element(By.CLASS_NAME, "label").text for item in items]
    shown_names = [item.find_element(By.CLASS_NAME, "label-name").text for item in items]
    status, created = call(port, "/v1/dialogs", {"model": "dialog-act"})
    answers = [call(port, f"/v1/dialogs/{created['session_id']}/turns", {"text": t, "speaker": s})[1] for s, t in turns]
    expected = [answer["label"] for answer in answers]
    assert shown_labels == expected
    # Each act shows with its name (SwDA's label_map.txt, in the model's metadata), as the API gives it.
    assert shown_names == [answer["label_name"] for answer in answers] and all(shown_names)
    assert "turn 2" in browser.find_element(By.ID, "dialog-status").text
    assert not browser.find_element(By.ID, "error").is_displayed()

    # Spans: a span model's answer is shown as displaCy's entity view, each span marked in the text with its label.
    Select(browser.find_element(By.ID, "tag-model")).select_by_value("slots")
    wait.until(lambda d: d.find_element(By.ID, "tag-service").is_displayed())  # span models take a service
    request = "I need a table for 4 people in San Jose at half past 7 tonight."
    text_box.clear()
    text_box.send_keys(request)
    Select(browser.find_element(By.ID, "tag-service")).select_by_value("Restaurants_1")  # from GET /v1/services
    browser.find_element(By.ID, "tag-button").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#tag-result mark.entity"))
    marks = browser.find_elements(By.CSS_SELECTOR, "#tag-result mark.entity")
    status, answer = call(port, "/v1/models/slots:tag", {"texts": [request], "service": "Restaurants_1"})
    spans = answer["results"][0]["spans"]
    # a mark holds the span's text, then its label (as displaCy draws it)
    shown = [(m.get_attribute("data-label"), browser.execute_script("return arguments[0].firstChild.textContent", m),
              m.find_element(By.CLASS_NAME, "entity-label").get_attribute("textContent")) for m in marks]
    assert shown == [(s["label"], s["text"], s["label"]) for s in spans]
    assert any(s["text"] == "San Jose" for s in spans)  # the shipped model finds the city here
    assert browser.find_element(By.CSS_SELECTOR, "#tag-result .entities").text.replace("\n", " ").startswith("I need")

    # A chat turn with its slots: a dialog-action session that names the span model answers both in one call.
    Select(browser.find_element(By.ID, "dialog-model")).select_by_value("dialog-action")
    Select(browser.find_element(By.ID, "dialog-slots")).select_by_value("slots")
    wait.until(lambda d: d.find_element(By.ID, "turn-service").is_displayed())
    Select(browser.find_element(By.ID, "turn-service")).select_by_value("Restaurants_1")
    speaker_box = browser.find_element(By.ID, "turn-speaker")
    speaker_box.clear()
    speaker_box.send_keys("USER")
    browser.find_element(By.ID, "turn-text").send_keys(request)
    browser.find_element(By.ID, "turn-button").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#dialog-log .turn .slot"))
    shown_slots = [(c.get_attribute("data-label"), c.text) for c in
                   browser.find_elements(By.CSS_SELECTOR, "#dialog-log .turn .slot")]
    assert shown_slots == [(s["label"], f"{s['label']}: {s['text']}") for s in spans]
    assert not browser.find_element(By.ID, "error").is_displayed()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT)) and SCREENSHOT.stat().st_size > 10_000

    # Back to the dialog-act session for the reset below.
    Select(browser.find_element(By.ID, "dialog-model")).select_by_value("dialog-act")
    Select(browser.find_element(By.ID, "dialog-slots")).select_by_value("")

    # Reset: the log empties and the conversation starts again at turn 1.
    browser.find_element(By.ID, "dialog-reset").click()
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#dialog-log .turn"))
    assert "turn 0" in browser.find_element(By.ID, "dialog-status").text
    browser.find_element(By.ID, "turn-text").send_keys(turns[0][1])
    browser.find_element(By.ID, "turn-speaker").clear()
    browser.find_element(By.ID, "turn-speaker").send_keys("A")
    browser.find_element(By.ID, "turn-button").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#dialog-log .turn"))
    assert browser.find_element(By.CSS_SELECTOR, "#dialog-log .turn .label").text == expected[0]
    assert "turn 1" in browser.find_element(By.ID, "dialog-status").text


def test_api_errors_show_on_the_page(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, _ = server
    browser.get(base + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    text_box = browser.find_element(By.ID, "tag-text")
    text_box.clear()
    text_box.send_keys("x" * 6000)  # over the service's text limit: a 400 with the error shape
    browser.find_element(By.ID, "tag-button").click()
    wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert browser.find_element(By.ID, "error").text.startswith("text_too_long")


# A made-up service: no model was trained on it, and its schema says all a schema-guided model needs.
POTTERY = {
    "service_name": "Pottery_1", "description": "Book time in a pottery studio",
    "slots": [{"name": "kiln_temperature", "description": "How hot the kiln fires, in degrees",
               "is_categorical": False, "possible_values": []},
              {"name": "glaze_color", "description": "The color of the glaze", "is_categorical": False,
               "possible_values": []}],
    "intents": [{"name": "BookFiring", "description": "Reserve a kiln firing", "is_transactional": True,
                 "required_slots": ["kiln_temperature", "glaze_color"]}],
}


def test_register_a_service_on_the_page(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from selenium.common.exceptions import StaleElementReferenceException

    base, port = server
    browser.get(base + "/")
    # The page rebuilds a service list's options when the services change: an option read while that happens is
    # stale, and the wait reads the list again
    wait = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    Select(browser.find_element(By.ID, "dialog-slots")).select_by_value("slots")  # the dialog's service list shows
    service = Select(browser.find_element(By.ID, "turn-service"))
    assert service.options[0].get_attribute("value") == "" and service.options[0].text == "no service"
    listed = [s["service_name"] for s in call(port, "/v1/services")[1]["services"]]
    assert [o.get_attribute("value") for o in service.options[1:]] == listed and "Pottery_1" not in listed
    browser.find_element(By.CSS_SELECTOR, "#schema-register-panel summary").click()
    box, status = browser.find_element(By.ID, "schema-json"), browser.find_element(By.ID, "schema-status")

    def register(text):  # pasted: the whole text at once (typing it key by key takes a second)
        browser.execute_script("arguments[0].value = arguments[1];"
                               "arguments[0].dispatchEvent(new Event('input', {bubbles: true}))", box, text)
        browser.find_element(By.ID, "schema-register").click()

    # Not JSON: said on the page, and nothing sent (the list stays as it was).
    register('{"service_name": "Pottery_1",')
    wait.until(lambda d: status.text.startswith("not JSON"))
    assert call(port, "/v1/services/Pottery_1")[0] == 404

    # A schema: registered, then offered in both service lists and chosen in the dialog's.
    register(json.dumps(POTTERY, indent=1))
    wait.until(lambda d: status.text.startswith("registered "))
    assert status.text == "registered Pottery_1 (2 slots)"
    wait.until(lambda d: Select(d.find_element(By.ID, "turn-service")).first_selected_option.get_attribute("value")
               == "Pottery_1")
    wait.until(lambda d: "Pottery_1" in [o.get_attribute("value")
                                         for o in Select(d.find_element(By.ID, "tag-service")).options])
    status_code, shown = call(port, "/v1/services/Pottery_1")
    assert status_code == 200 and shown["source"] == "registered"
    assert [s["name"] for s in shown["slots"]] == ["kiln_temperature", "glaze_color"]

    # A slot without its description: the API's message, verbatim, with the field's path.
    broken = json.loads(json.dumps(POTTERY))
    del broken["slots"][1]["description"]
    register(json.dumps(broken))
    wait.until(lambda d: "field required" in status.text)
    assert status.text == call(port, "/v1/services/Pottery_1", broken, method="PUT")[1]["error"]["message"]
    assert status.text.startswith("slots[1].description")
    assert "bad" in status.get_attribute("class").split()
    chosen = Select(browser.find_element(By.ID, "turn-service")).first_selected_option
    assert chosen.get_attribute("value") == "Pottery_1"  # nothing changed
    assert not browser.find_element(By.ID, "error").is_displayed()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT.with_name("web-page-services.png")
    assert browser.save_screenshot(str(path)) and path.stat().st_size > 10_000


def test_the_page_sends_the_key_it_is_given(keyed_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    base, _ = keyed_server
    browser.get(base + "/")  # the page itself is open; its API calls are not
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert browser.find_element(By.ID, "error").text.startswith("unauthorized")
    browser.find_element(By.ID, "api-key").send_keys(API_KEY, Keys.TAB)  # "change": the models load with the key
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    assert not browser.find_element(By.ID, "error").is_displayed()
    browser.find_element(By.ID, "tag-button").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#tag-result .token"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#tag-result .token")) > 3


def refused(browser) -> list[str]:
    """Console messages since the last call that say the Content-Security-Policy refused something."""
    return [entry["message"] for entry in browser.get_log("browser") if "Content Security Policy" in entry["message"]]


def test_docs_pages_render_every_operation_offline(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, port = server
    status, document = call(port, "/openapi.json")
    assert status == 200
    operations = [(method, path, operation["summary"]) for path, methods in document["paths"].items()
                  for method, operation in methods.items()]
    assert len(operations) >= 12
    wait = WebDriverWait(browser, 60)
    requested_urls(browser), refused(browser)  # start from here

    # Swagger UI (/docs/ redirects to it): one block per operation, with its method and path.
    browser.get(base + "/docs/")
    assert browser.current_url == base + "/docs/swagger/"
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= len(operations))
    shown = {(block.find_element(By.CLASS_NAME, "opblock-summary-method").text.lower(),
              block.find_element(By.CLASS_NAME, "opblock-summary-path").get_attribute("data-path"))
             for block in browser.find_elements(By.CSS_SELECTOR, ".opblock")}
    assert shown == {(method, path) for method, path, _ in operations}
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT.with_name("docs-swagger.png")))

    # Redoc and Scalar: every operation's summary is on the page.
    summaries = [summary.split("``")[0].strip() for _, _, summary in operations]

    def all_shown(driver) -> bool:  # the page's text read once a poll: each read lays out the whole page
        text = driver.find_element(By.TAG_NAME, "body").text
        return all(summary in text for summary in summaries)

    for ui in ("redoc", "scalar"):
        browser.get(f"{base}/docs/{ui}/")
        wait.until(all_shown)
        browser.save_screenshot(str(SCREENSHOT.with_name(f"docs-{ui}.png")))

    urls = requested_urls(browser)
    assert any(url.endswith("/swagger-ui-bundle.js") for url in urls)  # the log does see the assets
    outside = [url for url in urls if not url.startswith((base + "/", "data:", "blob:", "about:"))]
    assert not outside, f"the docs pages asked for assets from elsewhere: {outside}"
    assert not refused(browser)
