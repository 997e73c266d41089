"""The documentation: the README stays short and its links resolve, the MkDocs site builds with ``--strict``
(broken links, anchors and pages missing from the nav fail it), every setting and every error code of the
service is documented, and the built site works in a real browser without a network.

A screenshot of the site's home page, of a model card and of the API reference lands in ``build/screenshots/``.
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import os
import re
import socketserver
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
SCREENSHOTS = REPO / "build" / "screenshots"
MKDOCS = Path(sys.executable).with_name("mkdocs")


def markdown_links(text: str) -> list[str]:
    """The targets of a Markdown text's inline links and images, outside code."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_readme_is_short_and_its_links_resolve():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 150
    links = [link for link in markdown_links(readme) if not re.match(r"[a-z]+:", link)]
    assert links, "the README links into the docs"
    for link in links:
        assert (REPO / link.split("#", 1)[0]).is_file(), f"README.md links to {link}, which is not a file"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built as `make docs` builds it (strictly), into a temporary directory."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(out)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr[-5000:]}"
    return out


def test_site_builds_strictly_with_every_page(site):
    config_nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")
                   if not path.relative_to(DOCS).as_posix().startswith(("models/notes/", "hooks/")))
    for page in pages:
        assert page in config_nav, f"docs/{page} is not in mkdocs.yml's nav"
        built = site / (page[:-3] + "/index.html" if not page.endswith("index.md") else page[:-3] + ".html")
        assert built.is_file(), f"docs/{page} was not built ({built})"
    # The API reference's document is the service's own, generated at build time.
    document = json.loads((site / "api" / "openapi.json").read_text(encoding="utf-8"))
    assert document["openapi"].startswith("3.1") and "/v1/models/{name}:tag" in document["paths"]


def test_a_broken_link_fails_the_strict_build(tmp_path):
    """The strict build is what catches a link to a page or an anchor that is not there."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[a section](other.md#no-such-section)\n", encoding="utf-8")
    (docs / "other.md").write_text("# Other\n\n## A section\n", encoding="utf-8")
    (tmp_path / "mkdocs.yml").write_text((REPO / "mkdocs.yml").read_text(encoding="utf-8")
                                         .split("\nhooks:")[0] + "\nnav:\n  - index.md\n  - other.md\n",
                                         encoding="utf-8")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([str(MKDOCS), "build", "--strict"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0 and "no-such-section" in result.stderr


def test_the_built_pages_ask_no_other_host_for_anything(site):
    """No web fonts, scripts or styles from a CDN: the site works offline (the browser test checks it too)."""
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        for tag in re.findall(r"<(?:script|link|img)\b[^>]*>", html):
            assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", tag) or 'rel="canonical"' in tag, \
                f"{page.relative_to(site)}: {tag}"


# --- the settings reference and the error table -------------------------------------------------------------------

def _documented_default(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict) or value == "":
        return '""'
    return str(value)


def _settings_rows() -> dict[str, str]:
    """Variable -> its default cell's first code span, from docs/settings.md's tables."""
    rows = {}
    for line in (DOCS / "settings.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`[A-Z_]+`", cells[0]):
            default = re.match(r"`([^`]*)`", cells[1])
            rows[cells[0].strip("`")] = default.group(1) if default else cells[1]
    return rows


def test_every_setting_is_in_the_settings_reference_with_its_default():
    from service.settings import ENV_PREFIX, ServiceSettings

    rows = _settings_rows()
    for field in dataclasses.fields(ServiceSettings):
        variable = ENV_PREFIX + field.name.upper()
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        assert variable in rows, f"{variable} (service/settings.py) is not in docs/settings.md"
        assert rows[variable] == _documented_default(default), \
            f"docs/settings.md gives {variable} the default {rows[variable]!r}; the code has {default!r}"


def test_every_variable_the_service_reads_is_in_the_settings_reference():
    rows = _settings_rows()
    source = "\n".join(path.read_text(encoding="utf-8") for path in (REPO / "service").rglob("*.py"))
    variables = set(re.findall(r"\bSEQTAG_[A-Z][A-Z_]*[A-Z]\b", source)) - {"SEQTAG_"}
    assert variables, "the service reads SEQTAG_* variables"
    missing = sorted(variables - set(rows))
    assert not missing, f"read by service/ but not in docs/settings.md: {missing}"
    # gunicorn's own settings: the defaults on the page are the ones service/gunicorn_conf.py falls back to.
    conf = (REPO / "service" / "gunicorn_conf.py").read_text(encoding="utf-8")
    for variable, default in re.findall(r"""environ\.get\(["'](SEQTAG_[A-Z_]+|PORT)["'],\s*["']([^"']*)["']\)""", conf):
        assert rows[variable] == (default or '""'), f"docs/settings.md: {variable}'s default is {default!r}"


def _error_codes_in_the_code() -> set[str]:
    codes = set()
    for path in (REPO / "service").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        codes |= set(re.findall(r"APIError\(\s*\d{3},\s*\"([a-z_]+)\"", source))
        codes |= set(re.findall(r"error_response\(\s*\d{3},\s*\"([a-z_]+)\"", source))
        codes |= set(re.findall(r"ModelLookupError\(\s*\"([a-z_]+)\"", source))
    from service.errors import _HTTP_CODES

    return codes | set(_HTTP_CODES.values())


def test_every_error_code_is_in_the_error_table():
    page = (DOCS / "http-api.md").read_text(encoding="utf-8")
    table = page.split("## Errors", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([a-z_]+)`", table))
    codes = _error_codes_in_the_code()
    assert {"invalid_json", "turn_mismatch", "sessions_unavailable"} <= codes  # the scan finds them
    missing = sorted(codes - documented)
    assert not missing, f"error codes answered by service/ but not in docs/http-api.md's table: {missing}"


# --- the built site in a real browser -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site_url(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{server.server_address[1]}"
        server.shutdown()


def test_the_site_in_a_browser_offline(site, site_url):
    from browser import require_chromium, requested_urls, start_chromium

    require_chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser = start_chromium(1280, 900)
    try:
        wait = WebDriverWait(browser, 60)
        browser.get(site_url + "/")
        assert "seqtag" in browser.title
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "Getting started" in body and "dialog-act/3" in body
        browser.save_screenshot(str(SCREENSHOTS / "docs-home.png"))

        # The search works offline (its index is built into the site).
        browser.get(site_url + "/models/pos/")
        assert "0.9598" in browser.find_element(By.TAG_NAME, "body").text
        browser.save_screenshot(str(SCREENSHOTS / "docs-model-card.png"))

        # Swagger UI renders every operation of the service's document, in the page's frame.
        document = json.loads((site / "api" / "openapi.json").read_text(encoding="utf-8"))
        operations = sum(len([m for m in item if m in ("get", "post", "put", "delete", "patch")])
                         for item in document["paths"].values())
        browser.get(site_url + "/api-reference/")
        frame = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "iframe"))[0]
        browser.switch_to.frame(frame)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) == operations)
        browser.switch_to.default_content()
        browser.save_screenshot(str(SCREENSHOTS / "docs-api-reference.png"))

        others = [url for url in requested_urls(browser)
                  if not url.startswith((site_url, "data:", "blob:", "about:"))]
        assert not others, f"the site asked other hosts for: {others[:5]}"
    finally:
        browser.quit()


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_the_model_tables_name_the_serving_versions(page):
    """The README's and the home page's tables are written by hand: they must name the versions that serve,
    with the size their cards give, so a newly shipped version cannot leave them behind."""
    text = (REPO / page).read_text(encoding="utf-8")
    rows = re.findall(r"^\| \[`([a-z-]+)/(\d+)`\]\([^)]*\) \|.*\| ([\d.]+) MB \|$", text, flags=re.M)
    names = sorted(path.name for path in (REPO / "models").iterdir() if path.is_dir())
    assert sorted(name for name, _, _ in rows) == names, f"{page}: one row per shipped model"
    for name, version, size in rows:
        versions = [int(path.name) for path in (REPO / "models" / name).iterdir() if path.name.isdigit()]
        assert int(version) == max(versions), f"{page}: {name}/{version}, but {name}/{max(versions)} serves"
        card = (DOCS / "models" / f"{name}.md").read_text(encoding="utf-8")
        assert f"| {version} | serving |" in card and f"| {size} MB |" in card, f"{page}: {name}'s size is not its card's"
