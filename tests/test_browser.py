"""The browser harness itself: it renders, and it sees every request a page makes (none of which leaves)."""

import json
import select
import socket
import sys
from pathlib import Path

import pytest
from browser import ENV, chromium, netlog_requests, png_size, render

needs_chromium = pytest.mark.skipif(
    chromium() is None,
    reason="no chromium: install Debian's chromium (apt-get install chromium) to test HTML reports in a browser",
)

SELF_CONTAINED = """<!doctype html>
<html><head><meta charset="utf-8"><title>report</title>
<style>body { margin: 0; font-family: sans-serif; } h1 { color: #036; }</style></head>
<body><h1 id="title">Leakage report</h1>
<svg id="chart" width="200" height="100" viewBox="0 0 200 100"><rect width="120" height="60" fill="#c33"/></svg>
<img alt="inline" src="data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACwAAAAAAQABAAACAkQBADs=">
<script>document.getElementById("title").dataset.ran = "yes";</script>
</body></html>
"""


def _page(tmp_path: Path, html: str) -> Path:
    page = tmp_path / "page.html"
    page.write_text(html, encoding="utf-8")
    return page


@needs_chromium
def test_a_self_contained_page_renders_and_requests_nothing(tmp_path):
    shot = render(_page(tmp_path, SELF_CONTAINED), tmp_path / "out", width=900, height=500)
    assert '<h1 id="title" data-ran="yes">Leakage report</h1>' in shot.dom  # the DOM after scripts ran
    assert '<svg id="chart"' in shot.dom and "<rect" in shot.dom
    assert png_size(shot.screenshot) == (900, 500)
    assert shot.requests == []


@needs_chromium
def test_external_resources_are_reported_and_blocked(tmp_path):
    with socket.socket() as listener:  # a local server the page points at: it must never hear from the browser
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        local = f"http://127.0.0.1:{listener.getsockname()[1]}/beacon.gif"
        html = f"""<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="https://cdn.example.com/a.css">
<script src="https://cdn.example.com/lib.js"></script></head>
<body><h1>x</h1><img src="http://example.invalid/x.png"><img src="{local}"></body></html>"""
        shot = render(_page(tmp_path, html), tmp_path / "out")
        connected, _, _ = select.select([listener], [], [], 0)
    assert set(shot.requests) == {
        "https://cdn.example.com/a.css",
        "https://cdn.example.com/lib.js",
        "http://example.invalid/x.png",
        local,
    }
    assert not connected, "the browser reached a server although the network is off"


@needs_chromium
def test_a_fetch_from_inline_script_is_reported_and_fails(tmp_path):
    html = """<!doctype html><html><body><p id="status">pending</p><script>
fetch("https://api.example.com/collect?q=1", {method: "POST", body: "secret"})
  .then(() => { document.getElementById("status").textContent = "sent"; })
  .catch(() => { document.getElementById("status").textContent = "blocked"; });
</script></body></html>"""
    shot = render(_page(tmp_path, html), tmp_path / "out")
    assert shot.requests == ["https://api.example.com/collect?q=1"]
    assert '<p id="status">blocked</p>' in shot.dom


def _netlog(path: Path, events: list[dict]) -> Path:
    # event numbers unlike any real Chromium's, so that only the log's own constants can decode them
    constants = {
        "logEventTypes": {"REQUEST_ALIVE": 901, "URL_REQUEST_START_JOB": 902, "HTTP_STREAM_JOB_CONTROLLER": 903},
        "logEventPhase": {"PHASE_BEGIN": 7, "PHASE_END": 8, "PHASE_NONE": 9},
        "logSourceType": {"URL_REQUEST": 55, "HTTP_STREAM_JOB_CONTROLLER": 56},
    }
    path.write_text(json.dumps({"constants": constants, "events": events}))
    return path


def test_netlog_parsing_tells_page_requests_from_the_browsers_own(tmp_path):
    def request(id_: int, url: str, initiator: str | None) -> list[dict]:
        start = {"url": url, **({"initiator": initiator} if initiator else {})}
        src = {"id": id_, "type": 55}
        return [
            {"type": 901, "phase": 7, "source": src, "params": {"url": url}},
            {"type": 902, "phase": 7, "source": src, "params": start},
            {"type": 902, "phase": 8, "source": src, "params": {"net_error": -130}},
        ]

    page = "file:///tmp/report.html"
    events = [
        *request(1, "https://accounts.google.com/ListAccounts", "not an origin"),
        *request(2, "https://cdn.example.com/a.css", "null"),
        *request(3, "https://cdn.example.com/a.css", "null"),  # a repeat is listed once
        *request(4, "https://frame.example.com/", "file://"),
        *request(5, page, "null"),
        {"type": 901, "phase": 7, "source": {"id": 6, "type": 55}, "params": {"url": "https://never.started/"}},
        {
            "type": 903,
            "phase": 7,
            "source": {"id": 7, "type": 56},
            "params": {"url": "https://pre/", "is_preconnect": True},
        },
        {
            "type": 903,
            "phase": 7,
            "source": {"id": 8, "type": 56},
            "params": {"url": "https://a/", "is_preconnect": False},
        },
        {"type": 901, "phase": 7, "source": {"id": 9, "type": 55}, "params": {"url": "data:text/plain,x"}},
    ]
    requests, background = netlog_requests(_netlog(tmp_path / "log.json", events), page_url=page)
    assert requests == [
        "https://cdn.example.com/a.css",
        "https://frame.example.com/",
        "https://never.started/",
        "https://pre/",
    ]
    assert background == ["https://accounts.google.com/ListAccounts"]


def test_chromium_honours_the_override(monkeypatch):
    monkeypatch.setenv(ENV, sys.executable)
    assert chromium() == sys.executable
    monkeypatch.setenv(ENV, "/nonexistent/chromium")
    assert chromium() is None
    monkeypatch.setenv(ENV, "")  # set but empty: no browser, the browser tests skip
    assert chromium() is None
