//! The store's unit tests: migrations, the outbox's order, history pages, the list.

use super::messages::Incoming;
use super::outbox::Outgoing;
use super::*;
use quiver_proto::{ClientMsgId, ReceiptKind};

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn send(store: &Store, to: &Conversation, n: u128, at: u64) {
    let body = format!("to {to} {n}");
    store
        .outbox_add(Outgoing {
            conversation: to,
            from: &user("myself"),
            id: ClientMsgId(n),
            sent_at_ms: at,
            body: body.as_bytes(),
            frame: &[n as u8],
            file: None,
            epoch: None,
        })
        .unwrap();
}

fn receive(store: &Store, from: &str, n: u128, seq: u64, at: u64) {
    let from = user(from);
    store
        .save_incoming(
            Incoming {
                conversation: &Conversation::Friend(from.clone()),
                from: &from,
                id: ClientMsgId(n),
                seq: Seq(seq),
                sent_at_ms: at,
                body: format!("from {from} {n}").as_bytes(),
                file: None,
                epoch: None,
            },
            Some(Seq(seq)),
        )
        .unwrap();
}

#[test]
fn a_file_is_migrated_once_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite3");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), schema::CURRENT);
    let session = Session {
        user: user("myself"),
        device: DeviceId(7),
        token: "tk".into(),
    };
    store.save_session(&session).unwrap();
    store
        .save_friend_key(&user("bob"), &FriendKey([3; 32]))
        .unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.session().unwrap(), Some(session));
    assert_eq!(store.friend_keys().unwrap()[&user("bob")].0, [3; 32]);
    store
        .lock()
        .pragma_update(None, "user_version", schema::CURRENT + 1)
        .unwrap();
    drop(store);
    assert!(matches!(Store::open(&path), Err(StoreError::Corrupt(_))));
}

#[test]
fn the_outbox_keeps_send_order_until_each_is_answered() {
    let store = Store::in_memory().unwrap();
    let (bob, carol) = (
        Conversation::Friend(user("bob")),
        Conversation::Friend(user("carol")),
    );
    for n in 1..=6 {
        send(
            &store,
            if n % 2 == 0 { &bob } else { &carol },
            n,
            100 + n as u64,
        );
    }
    send(&store, &bob, 2, 999); // the same id again: nothing new
    let ids = |store: &Store| {
        let waiting = store.outbox().unwrap();
        waiting.iter().map(|w| w.id.0).collect::<Vec<_>>()
    };
    assert_eq!(ids(&store), [1, 2, 3, 4, 5, 6]);
    store
        .outbox_settled(&bob, ClientMsgId(4), Some(Seq(40)))
        .unwrap();
    store.outbox_settled(&carol, ClientMsgId(1), None).unwrap();
    assert_eq!(ids(&store), [2, 3, 5, 6]);
    let page = store.messages(&bob, None, 10).unwrap();
    let states: Vec<_> = page
        .messages
        .iter()
        .map(|m| (m.id.0, m.seq, m.state))
        .collect();
    assert_eq!(
        states,
        [
            (6, None, MessageState::Pending),
            (4, Some(Seq(40)), MessageState::Sent),
            (2, None, MessageState::Pending),
        ]
    );
    // Receipts move a message on, never back.
    store
        .save_receipt(&user("bob"), ClientMsgId(4), ReceiptKind::Read)
        .unwrap();
    store
        .save_receipt(&user("bob"), ClientMsgId(4), ReceiptKind::Delivered)
        .unwrap();
    let page = store.messages(&bob, None, 10).unwrap();
    assert_eq!(page.messages[1].state, MessageState::Read);
}

#[test]
fn history_pages_newest_first_and_the_list_counts_unread() {
    let store = Store::in_memory().unwrap();
    let bob = Conversation::Friend(user("bob"));
    for n in 1..=25u64 {
        receive(&store, "bob", n as u128, n, 1000 + n);
    }
    receive(&store, "bob", 5, 5, 1005); // a redelivery: kept once
    receive(&store, "carol", 100, 26, 500);
    send(&store, &bob, 7, 2000);
    assert_eq!(store.cursor().unwrap(), Seq(26));

    let (mut all, mut before, mut pages) = (Vec::new(), None, 0);
    loop {
        let page = store.messages(&bob, before, 10).unwrap();
        assert!(page.messages.len() <= 10);
        all.extend(page.messages.iter().map(|m| (m.outgoing, m.id.0)));
        pages += 1;
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    let mut want = vec![(true, 7)];
    want.extend((1..=25).rev().map(|n| (false, n)));
    assert_eq!(all, want);
    assert_eq!(pages, 3);

    let list = store.conversations().unwrap();
    let lines: Vec<_> = list
        .iter()
        .map(|c| (c.conversation.clone(), c.last.text(), c.unread))
        .collect();
    assert_eq!(
        lines,
        [
            (bob.clone(), "to bob 7".to_string(), 25),
            (
                Conversation::Friend(user("carol")),
                "from carol 100".into(),
                1
            ),
        ]
    );
    assert_eq!(
        store.inbox_conversation(Seq(20)).unwrap(),
        Some(bob.clone())
    );
    store.mark_read(&bob, Seq(20)).unwrap();
    assert_eq!(store.conversations().unwrap()[0].unread, 5);
}

#[test]
fn a_version_1_file_is_migrated_and_keeps_its_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.sqlite3");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO messages (conversation, sender, id, outgoing, seq, sent_at_ms, body, state)
             VALUES ('u:bob', 'bob', ?1, 0, 3, 10, CAST('old' AS BLOB), 10)",
            [ClientMsgId(9).0.to_be_bytes().as_slice()],
        )
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), schema::CURRENT);
    let bob = Conversation::Friend(user("bob"));
    let page = store.messages(&bob, None, 10).unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(
        (
            page.messages[0].text(),
            page.messages[0].file,
            page.messages[0].epoch
        ),
        ("old".into(), None, None)
    );

    let file = quiver_proto::files::FileRef {
        blob: quiver_proto::files::BlobId([7; 32]),
        size: 99,
    };
    let from = user("bob");
    let message = Incoming {
        conversation: &bob,
        from: &from,
        id: ClientMsgId(10),
        seq: Seq(4),
        sent_at_ms: 20,
        body: b"a description",
        file: Some(file),
        epoch: None,
    };
    store.save_incoming(message, None).unwrap();
    let kept = store.inbox_message(Seq(4)).unwrap().unwrap();
    assert_eq!(kept.file, Some(file));
    assert_eq!(store.inbox_message(Seq(3)).unwrap().unwrap().text(), "old");
}
