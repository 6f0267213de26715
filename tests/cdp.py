"""A small Chrome DevTools Protocol client over a pipe (``--remote-debugging-pipe``): no websocket, no package.

Chromium reads commands from its file descriptor 3 and writes replies and events to descriptor 4, one JSON
message per NUL-terminated chunk. `Browser` opens one page, records console messages, exceptions and every
network request, and drives real input events (mouse, keyboard, typing) as a person would.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")


class CDPError(RuntimeError):
    pass


class Browser:
    """Headless Chromium with one page; a context manager that always ends the browser."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900, timeout: float = 60.0) -> None:
        self.timeout = timeout
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()

        def fds() -> None:  # in the child: its fd 3 reads our commands, its fd 4 carries its answers
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)  # fresh numbers above 4: dup2 cannot clobber them
            os.dup2(a, 3)  # dup2 makes 3 and 4 inheritable; every other descriptor closes on exec
            os.dup2(b, 4)

        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--mute-audio",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            [str(CHROMIUM), *flags],
            close_fds=False,
            preexec_fn=fds,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._w, self._r = to_chrome_w, from_chrome_r
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        self.console: list[str] = []
        self.requests: list[str] = []
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
            self.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            )
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- the protocol
    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise CDPError("no answer from chromium")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise CDPError("chromium closed its pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def _note(self, ev: dict) -> None:
        self.events.append(ev)
        method, p = ev.get("method"), ev.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.console.append(f"console.{p.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.console.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}")
        elif method == "Log.entryAdded":
            e = p.get("entry", {})
            self.console.append(f"log.{e.get('level')}: {e.get('text')} {e.get('url', '')}")
        elif method == "Network.requestWillBeSent":
            self.requests.append(p.get("request", {}).get("url", ""))

    def call(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            ev = self._read()
            if ev.get("id") == self._id:
                if "error" in ev:
                    raise CDPError(f"{method}: {ev['error']}")
                return ev.get("result", {})
            self._note(ev)

    def wait_event(self, method: str) -> dict:
        for ev in self.events:
            if ev.get("method") == method:
                self.events.remove(ev)
                return ev
        while True:
            ev = self._read()
            self._note(ev)
            if ev.get("method") == method:
                self.events.remove(ev)
                return ev

    # ---------------------------------------------------------------- the page
    def open(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-serialisable), or CDPError with the exception."""
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise CDPError(f"{expression}: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r["result"].get("value")

    def center(self, selector: str) -> tuple[float, float]:
        """The viewport centre of an element, scrolled into view first."""
        box = self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            "e.scrollIntoView({block: 'center', inline: 'center'}); const r = e.getBoundingClientRect();"
            "return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        if box is None:
            raise CDPError(f"no element {selector}")
        return box[0], box[1]

    def mouse(self, kind: str, x: float, y: float, buttons: int = 0) -> None:
        p = {"type": kind, "x": x, "y": y, "buttons": buttons}
        if kind in ("mousePressed", "mouseReleased"):
            p.update(button="left", clickCount=1)
        self.call("Input.dispatchMouseEvent", p)

    def hover(self, selector: str) -> None:
        self.mouse("mouseMoved", *self.center(selector))

    def click(self, selector: str) -> None:
        x, y = self.center(selector)
        self.mouse("mouseMoved", x, y)
        self.mouse("mousePressed", x, y, 1)
        self.mouse("mouseReleased", x, y)

    def drag(self, start: str, end: str) -> None:
        """Press on one element, move over to another with the button held, release there."""
        x0, y0 = self.center(start)
        self.mouse("mouseMoved", x0, y0)
        self.mouse("mousePressed", x0, y0, 1)
        x1, y1 = self.js(
            f"(() => {{ const r = document.querySelector({json.dumps(end)}).getBoundingClientRect();"
            "return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        for f in (0.5, 1.0):
            self.mouse("mouseMoved", x0 + (x1 - x0) * f, y0 + (y1 - y0) * f, 1)
        self.mouse("mouseReleased", x1, y1)

    KEYS = {"ArrowLeft": 37, "ArrowUp": 38, "ArrowRight": 39, "ArrowDown": 40, "Enter": 13, "Escape": 27, "Tab": 9}

    def key(self, key: str, shift: bool = False) -> None:
        code = self.KEYS[key]
        p = {"key": key, "code": key, "windowsVirtualKeyCode": code, "nativeVirtualKeyCode": code}
        if shift:
            p["modifiers"] = 8
        self.call("Input.dispatchKeyEvent", {"type": "rawKeyDown", **p})
        self.call("Input.dispatchKeyEvent", {"type": "keyUp", **p})

    def select_field(self, selector: str) -> None:
        """Focus a text field and select what it holds, so that typing replaces it."""
        self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.focus(); e.select(); }})()")

    def type(self, text: str) -> None:
        self.call("Input.insertText", {"text": text})

    def screenshot(self, path: Path, full_height: int | None = None) -> None:
        params = {"format": "png"}
        if full_height:
            params.update(clip={"x": 0, "y": 0, "width": 1280, "height": full_height, "scale": 1})
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", params)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            os.close(self._w)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        try:
            os.close(self._r)
        except OSError:
            pass

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
