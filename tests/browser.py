"""Render a self-contained HTML page in headless Chromium with the network off.

`render` loads a local file once and returns its DOM after load (`--dump-dom`), a screenshot
(`--screenshot`) and every URL the page made the browser request, read from Chromium's NetLog
(`--log-net-log`). Nothing can leave: every host name, the proxy's included, resolves to nothing
(`--host-resolver-rules`), and all traffic, loopback too, is sent to that dead proxy. The attempts
still reach the NetLog, so a test can tell that a page tried.

Set `LORALEAK_CHROMIUM` to the browser to use (a path or a command name); set it empty to use none.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV = "LORALEAK_CHROMIUM"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The network off. A host-resolver MAP applies to IP literals too, so even the proxy (127.0.0.1:9) is
# unreachable and no socket is ever connected; the proxy catches URLs with IP addresses, loopback
# included (`<-loopback>` drops the implicit bypass); WebRTC may use no UDP but the proxy's.
NETWORK_OFF = (
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--disable-quic",
)
# Chromium's own background traffic, as far as switches turn it off. What they cannot (the sign-in
# ListAccounts call, on-demand component updates) is told apart in the NetLog: it has no initiator.
QUIET = (
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate",
)
# Headless as root (no sandbox) in a container (small /dev/shm), no GPU, deterministic pixels.
HEADLESS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--force-device-scale-factor=1",
)
FLAGS = HEADLESS + QUIET + NETWORK_OFF


class BrowserError(RuntimeError):
    """Chromium failed, timed out, or left no usable output."""


@dataclass(frozen=True)
class Rendered:
    dom: str  # the serialized DOM after load
    screenshot: Path  # a PNG of the viewport
    requests: list[str]  # URLs the page made the browser request (and connections it preconnected)
    background: list[str]  # Chromium's own requests, with no initiator (nothing to do with the page)
    netlog: Path


def chromium() -> str | None:
    """The browser to render with: `$LORALEAK_CHROMIUM` when set, else the first candidate on PATH."""
    override = os.environ.get(ENV)
    if override is not None:
        return shutil.which(override) if override else None
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG; BrowserError when the file is not one."""
    head = path.read_bytes()[:24]
    if len(head) < 24 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise BrowserError(f"{path} is not a PNG ({path.stat().st_size} bytes)")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def render(
    page: Path, out_dir: Path, *, width: int = 1280, height: int = 800, budget_ms: int = 2000, timeout: float = 60
) -> Rendered:
    """Load `page` (a local file) in headless Chromium with the network off; see the module's doc.

    `budget_ms` of virtual time let scripts and timers run after load before the DOM and the
    screenshot are taken; the run itself is killed after `timeout` seconds of real time.
    """
    exe = chromium()
    if exe is None:
        raise BrowserError(f"no chromium found (looked for {', '.join(CANDIDATES)}; set {ENV} to choose one)")
    url = page.resolve().as_uri()
    out_dir.mkdir(parents=True, exist_ok=True)
    screenshot, netlog = out_dir / "screenshot.png", out_dir / "netlog.json"
    for stale in (screenshot, netlog):
        stale.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="loraleak-chromium-") as tmp:
        profile = Path(tmp)
        # the profile, caches and crash reports all in the temporary directory, none in the user's home
        env = {**os.environ, "XDG_CONFIG_HOME": str(profile / "config"), "XDG_CACHE_HOME": str(profile / "cache")}
        args = [
            exe,
            *FLAGS,
            f"--user-data-dir={profile / 'profile'}",
            f"--window-size={width},{height}",
            f"--virtual-time-budget={budget_ms}",
            f"--log-net-log={netlog}",
            f"--screenshot={screenshot}",
            "--dump-dom",
            url,
        ]
        dom = _run(args, env, timeout)
    if not screenshot.is_file() or screenshot.stat().st_size == 0:
        raise BrowserError(f"chromium wrote no screenshot for {url}")
    png_size(screenshot)
    if not dom.strip():
        raise BrowserError(f"chromium dumped no DOM for {url}")
    requests, background = netlog_requests(netlog, page_url=url)
    return Rendered(dom=dom, screenshot=screenshot, requests=requests, background=background, netlog=netlog)


def _run(args: list[str], env: dict[str, str], timeout: float) -> str:
    """Chromium's stdout; BrowserError with the tail of its stderr when it fails or overruns."""
    # its own session, so that a timeout kills the browser's whole process group, helpers included
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise BrowserError(f"chromium ran past {timeout:g} s:\n{_tail(err)}") from None
    if proc.returncode != 0:
        raise BrowserError(f"chromium exited with {proc.returncode}:\n{_tail(err)}")
    return out.decode("utf-8", "replace")


def _tail(err: bytes, lines: int = 20) -> str:
    return "\n".join(err.decode("utf-8", "replace").splitlines()[-lines:])


def netlog_requests(netlog: Path, *, page_url: str = "") -> tuple[list[str], list[str]]:
    """(requests made for the page, Chromium's own requests) in a NetLog, in order, without repeats.

    A URL_REQUEST source's URL is in its REQUEST_ALIVE begin event (every request has one, even one
    refused before it starts) and its initiator in URL_REQUEST_START_JOB; one that starts with no
    initiator is the browser's own. A preconnect (HTTP_STREAM_JOB_CONTROLLER with is_preconnect) has
    no URL_REQUEST and counts for the page. Event and phase numbers come from the log's constants.
    The page's own URL, data: and about: URLs are left out (file:// loads never reach the NetLog).
    """
    try:
        log: dict[str, Any] = json.loads(netlog.read_text(encoding="utf-8"))
        constants = log["constants"]
        events: list[dict[str, Any]] = log["events"]
        kind = constants["logEventTypes"]
        begin = constants["logEventPhase"]["PHASE_BEGIN"]
        url_request = constants["logSourceType"]["URL_REQUEST"]
        alive, start, stream = (
            kind["REQUEST_ALIVE"],
            kind["URL_REQUEST_START_JOB"],
            kind["HTTP_STREAM_JOB_CONTROLLER"],
        )
    except (OSError, ValueError, KeyError) as e:
        raise BrowserError(f"unreadable NetLog {netlog}: {e!r}") from e
    urls: dict[int, list[str]] = {}  # URL_REQUEST source id -> its URLs (more than one if redirected)
    browser_own: set[int] = set()
    preconnects: list[str] = []
    for event in events:
        params = event.get("params") or {}
        if event.get("phase") != begin or "url" not in params:
            continue
        source = event["source"]
        if event["type"] in (alive, start) and source["type"] == url_request:
            urls.setdefault(source["id"], []).append(params["url"])
            if event["type"] == start and params.get("initiator") in (None, "not an origin"):
                browser_own.add(source["id"])
        elif event["type"] == stream and params.get("is_preconnect"):
            preconnects.append(params["url"])
    page = [u for i, found in urls.items() if i not in browser_own for u in found] + preconnects
    own = [u for i, found in urls.items() if i in browser_own for u in found]

    def keep(found: list[str]) -> list[str]:
        return [u for u in dict.fromkeys(found) if u != page_url and not u.startswith(("data:", "about:"))]

    return keep(page), keep(own)
