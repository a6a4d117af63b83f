"""Shared fixtures of the binding tests.

The Rust test `bindings/tests/python.rs` starts a real node, generates the bindings
(`quiver_ffi.py` next to `libquiver_ffi.so`) and runs pytest with:
- QUIVER_URL: the node's REST address (https://127.0.0.1:port),
- QUIVER_CA: the path of the node's CA certificate,
- PYTHONPATH: the folder of the generated module.
"""

import asyncio
import itertools
import os
import queue
import time

import pytest

import quiver_ffi

_names = itertools.count()


class Collector(quiver_ffi.EventListener):
    """Keeps every event the library gives, for the test to wait on."""

    def __init__(self):
        self.events = queue.Queue()

    def on_event(self, event):
        self.events.put(event)

    def wait_for(self, accept, timeout=20.0):
        """The first event `accept` takes; events before it are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no such event in time")
            event = self.events.get(timeout=left)
            if accept(event):
                return event

    def messages(self, count, timeout=30.0):
        """The next `count` messages, in arrival order."""
        out = []
        while len(out) < count:
            out.append(self.wait_for(lambda e: e.is_message(), timeout))
        return out

    def quiet(self, seconds):
        """Asserts no message arrives for `seconds`."""
        try:
            self.wait_for(lambda e: e.is_message(), seconds)
        except (queue.Empty, AssertionError):
            return
        raise AssertionError("an unexpected message arrived")


@pytest.fixture
def node():
    """Where the node is: (REST URL, CA PEM, CA path)."""
    ca_path = os.environ["QUIVER_CA"]
    with open(ca_path) as f:
        ca_pem = f.read()
    return os.environ["QUIVER_URL"], ca_pem, ca_path


@pytest.fixture
def new_user(node, tmp_path):
    """Makes a registered, logged-in user with their own store: (name, app, store path)."""
    url, ca_pem, _ = node

    def make(prefix):
        name = f"{prefix}{os.getpid()}x{next(_names)}"
        path = str(tmp_path / f"{name}.sqlite3")
        app = quiver_ffi.QuiverApp.open(path, url, ca_pem)
        run(app.register(name, "a-long-password"))
        run(app.login(name, "a-long-password"))
        return name, app, path

    return make


def run(coroutine):
    """Runs one call of the library to its end."""
    return asyncio.run(coroutine)


def befriend(a, b):
    """Makes the users (name, app, path) `a` and `b` friends."""
    assert run(a[1].request_friend(b[0])) == "pending"
    assert run(b[1].accept_friend(a[0])) == "friends"
