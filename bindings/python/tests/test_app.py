"""The Python bindings against a real node: accounts, friends, chat, receipts, a file,
the store's history, and an app killed with SIGKILL mid-send."""

import os
import sqlite3
import subprocess
import sys

import pytest

import quiver_ffi
from conftest import Collector, befriend, run


def test_register_befriend_send_receive_and_receipts(new_user):
    alice, bob = new_user("alice"), new_user("bob")
    befriend(alice, bob)
    assert run(alice[1].friends()) == [bob[0]]
    a_events, b_events = Collector(), Collector()
    run(alice[1].connect(a_events))
    run(bob[1].connect(b_events))

    sent = run(alice[1].send(bob[0], "hello from python"))
    assert len(sent.id) == 32 and sent.seq >= 1
    got = b_events.messages(1)[0]
    assert (got.sender, got.text, got.seq) == (alice[0], "hello from python", sent.seq)

    # Typing and presence: datagrams, once both show presence.
    run(alice[1].set_presence("online"))
    run(bob[1].set_presence("online"))
    seen = b_events.wait_for(lambda e: e.is_presence() and e.user == alice[0])
    assert seen.state == "online"
    run(alice[1].typing(bob[0]))
    typing = b_events.wait_for(lambda e: e.is_typing())
    assert (typing.sender, typing.group) == (alice[0], None)

    delivered = a_events.wait_for(lambda e: e.is_receipt())
    assert (delivered.kind, delivered.id, delivered.peer) == ("delivered", sent.id, bob[0])
    bob[1].mark_read(got.seq)
    read = a_events.wait_for(lambda e: e.is_receipt())
    assert (read.kind, read.id) == ("read", sent.id)

    # Both stores keep the conversation.
    [line] = alice[1].conversations()
    assert (line.peer, line.last.text, line.last.state, line.unread) == (
        bob[0], "hello from python", "read", 0)
    [line] = bob[1].conversations()
    assert (line.peer, line.last.text, line.last.outgoing, line.unread) == (
        alice[0], "hello from python", False, 0)
    run(alice[1].close())
    run(bob[1].close())


def test_errors_are_typed(new_user, node):
    alice = new_user("alice")
    with pytest.raises(quiver_ffi.QuiverError.Api) as refused:
        run(alice[1].register(alice[0], "a-long-password"))
    assert refused.value.status == 409
    with pytest.raises(quiver_ffi.QuiverError.NotConnected):
        run(alice[1].send("nobody", "x"))
    run(alice[1].connect(Collector()))
    with pytest.raises(quiver_ffi.QuiverError.Invalid):
        run(alice[1].send("NOT A NAME!", "x"))
    with pytest.raises(quiver_ffi.QuiverError.Send):
        run(alice[1].send("nobody", "x"))  # no key: not a friend
    run(alice[1].close())


def test_a_file(new_user, node, tmp_path):
    alice, bob = new_user("alice"), new_user("bob")
    befriend(alice, bob)
    b_events = Collector()
    run(alice[1].connect(Collector()))
    run(bob[1].connect(b_events))
    source = tmp_path / "notes.txt"
    content = os.urandom(300_000)
    source.write_bytes(content)
    sent = run(alice[1].send_file(bob[0], str(source), "text/plain"))
    got = b_events.messages(1)[0]
    assert (got.seq, got.file_name) == (sent.seq, "notes.txt")
    target = tmp_path / "received.txt"
    size = run(bob[1].download(got.seq, str(target)))
    assert size >= len(content)
    assert target.read_bytes() == content
    run(alice[1].close())
    run(bob[1].close())

    # Started again on the same store, Bob's app shows the file and fetches it again
    # from what the store kept, with no event seen in this run.
    url, ca_pem, _ = node
    again = quiver_ffi.QuiverApp.open(bob[2], url, ca_pem)
    [kept] = again.messages(alice[0], 10)
    assert (kept.file_name, kept.seq) == ("notes.txt", sent.seq)
    run(again.connect(Collector()))
    second = tmp_path / "again.txt"
    run(again.download(kept.seq, str(second)))
    assert second.read_bytes() == content
    [mine] = alice[1].messages(bob[0], 10)
    assert (mine.file_name, mine.outgoing) == ("notes.txt", True)
    run(again.close())


def test_a_group_with_text_and_a_file(new_user, node, tmp_path):
    alice, bob, carol = new_user("alice"), new_user("bob"), new_user("carol")
    befriend(alice, bob)
    group = run(alice[1].create_group("team"))
    # A friend is added at once; anyone else is invited and accepts.
    assert run(alice[1].add_member(group, bob[0])) == "added"
    assert run(alice[1].add_member(group, carol[0])) == "invited"
    [invitation] = run(carol[1].group_invitations())
    assert (invitation.id, invitation.name) == (group, "team")
    run(carol[1].accept_invitation(group))
    [line] = run(bob[1].groups())
    assert (line.id, line.name, sorted(line.members)) == (
        group, "team", sorted([alice[0], bob[0], carol[0]]))
    b_events, c_events = Collector(), Collector()
    run(alice[1].connect(Collector()))
    run(bob[1].connect(b_events))
    run(carol[1].connect(c_events))

    # No key was given to any app: the SDK fetches the group's keys itself.
    sent = run(alice[1].send_group(group, "hello team"))
    for events in (b_events, c_events):
        got = events.wait_for(lambda e: e.is_group_message())
        assert (got.group, got.sender, got.seq, got.text, got.file_name) == (
            group, alice[0], sent.seq, "hello team", None)

    source = tmp_path / "plan.pdf"
    content = os.urandom(150_000)
    source.write_bytes(content)
    sent = run(alice[1].send_group_file(group, str(source), "application/pdf"))
    got = c_events.wait_for(lambda e: e.is_group_message())
    assert (got.seq, got.file_name) == (sent.seq, "plan.pdf")
    target = tmp_path / "carol.pdf"
    run(carol[1].download_group_file(group, got.seq, str(target)))
    assert target.read_bytes() == content

    # Bob is removed before the next file: his app never sees it, so it has nothing to
    # fetch (the node's own refusal is tested in tests/tests/e2e/group_files.rs).
    run(alice[1].remove_member(group, bob[0]))
    later = tmp_path / "later.bin"
    later.write_bytes(os.urandom(1_000))
    after = run(alice[1].send_group_file(group, str(later), "application/octet-stream"))
    got = c_events.wait_for(lambda e: e.is_group_message())
    assert (got.seq, got.file_name) == (after.seq, "later.bin")
    with pytest.raises(quiver_ffi.QuiverError.Invalid):
        run(bob[1].download_group_file(group, after.seq, str(tmp_path / "bob.bin")))
    for app in (alice, bob, carol):
        run(app[1].close())


CHILD = os.path.join(os.path.dirname(__file__), "app_child.py")


def friends_with_bob_listening(new_user):
    """Alice (her key in her store) and Bob, friends; Bob connected and collecting."""
    alice, bob = new_user("alice"), new_user("bob")
    befriend(alice, bob)
    run(alice[1].friends())  # the key into alice's store
    b_events = Collector()
    run(bob[1].connect(b_events))
    return alice, bob, b_events


def queue_and_kill(node, store, peer, count):
    """Runs the app child on `store` to queue `count` messages to `peer`, then SIGKILLs
    it; returns how many are left in the store's outbox."""
    url, ca_pem, ca_path = node
    app = subprocess.Popen(
        [sys.executable, CHILD, "queue", store, url, ca_path, peer, str(count)],
        stdout=subprocess.PIPE, text=True)
    assert app.stdout.readline().strip() == "queued"
    app.kill()  # SIGKILL, with messages still waiting for SENT
    app.wait()
    assert app.returncode == -9
    return quiver_ffi.QuiverApp.open(store, url, ca_pem).outbox_len()


def drain(node, store):
    """Runs the app child again on `store` until its outbox is empty."""
    url, _, ca_path = node
    again = subprocess.run(
        [sys.executable, CHILD, "drain", store, url, ca_path],
        stdout=subprocess.PIPE, text=True, timeout=60)
    assert again.stdout.strip() == "drained", again


def test_an_app_killed_mid_send_sends_each_message_once_in_order(new_user, node):
    alice, bob, b_events = friends_with_bob_listening(new_user)
    left = queue_and_kill(node, alice[2], bob[0], 1000)
    print(f"{left} of 1000 were waiting for SENT at the kill")
    assert left > 0, "the kill came after every SENT: nothing was in flight"

    drain(node, alice[2])
    got = b_events.messages(1000)
    assert [m.text for m in got] == [f"m{i}" for i in range(1000)]
    assert len({m.seq for m in got}) == 1000
    b_events.quiet(1.0)
    # Alice's store: 1000 messages, every one SENT or further, newest first.
    kept = alice[1].messages(bob[0], 5000)
    assert [m.text for m in kept] == [f"m{i}" for i in reversed(range(1000))]
    assert all(m.outgoing and m.state != "pending" for m in kept)
    run(bob[1].close())


def test_messages_queued_offline_survive_a_kill_and_go_out_once_in_order(new_user, node):
    alice, bob, b_events = friends_with_bob_listening(new_user)
    store = alice[2]
    # Out of reach: the store names a node address where nothing listens.
    with sqlite3.connect(store) as db:
        [(real,)] = db.execute("SELECT value FROM meta WHERE key = 'node'").fetchall()
        db.execute("UPDATE meta SET value = '127.0.0.1:9' WHERE key = 'node'")
    assert queue_and_kill(node, store, bob[0], 100) == 100
    b_events.quiet(0.5)

    # Back in reach, started again on the same store.
    with sqlite3.connect(store) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'node'", (real,))
    drain(node, store)
    got = b_events.messages(100)
    assert [m.text for m in got] == [f"m{i}" for i in range(100)]
    b_events.quiet(1.0)
    run(bob[1].close())
