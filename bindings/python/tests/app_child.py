"""The app the restart tests kill: `queue <store> <url> <ca> <peer> <count>` connects
(or starts offline when the node is out of reach), queues `count` messages m0.. (each
in the store when `enqueue` returns), prints `queued` and waits to be killed;
`drain <store> <url> <ca>` connects and prints `drained` once the store's outbox is
empty."""

import asyncio
import sys
import time

import quiver_ffi


class Ignore(quiver_ffi.EventListener):
    def on_event(self, event):
        pass


async def main(mode, store, url, ca, *rest):
    with open(ca) as f:
        app = quiver_ffi.QuiverApp.open(store, url, f.read())
    assert app.logged_in(), "the store keeps the session"
    app.set_connect_timeout_ms(500)
    await app.connect(Ignore())  # starts offline if the node is out of reach
    if mode == "queue":
        peer, count = rest[0], int(rest[1])
        for i in range(count):
            await app.enqueue(peer, f"m{i}")
        print("queued", flush=True)
        await asyncio.sleep(3600)
    elif mode == "drain":
        deadline = time.monotonic() + 30
        while app.outbox_len() > 0:
            assert time.monotonic() < deadline, "the outbox did not drain"
            await asyncio.sleep(0.05)
        await app.close()
        print("drained", flush=True)


asyncio.run(main(*sys.argv[1:]))
