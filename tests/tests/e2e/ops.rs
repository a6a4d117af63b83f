//! What an operator sees: `GET /metrics` counts what happened, by kind and by code.

use quiver_sdk::ReceiptKind;
use quiver_tests::*;

/// The value of the metric line that starts with `name ` (labels included in `name`).
fn metric(text: &str, name: &str) -> f64 {
    quiver_bench::stats::metric(text, name)
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_messages_receipts_flushes_and_errors() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let (alice, bob, eve) = (
        node.user("alice").await?,
        node.user("bob").await?,
        node.user("eve").await?,
    );
    node.befriend(&alice, &bob).await?;
    let before = node.rest().metrics().await?;
    assert_eq!(metric(&before, "quiver_chats_stored_total"), 0.0);

    let (a, mut a_events) = node.connect(&alice).await?;
    let (_b, mut b_events) = node.connect(&bob).await?;
    for i in 0..3 {
        a.send(&bob.id, format!("m{i}").as_bytes()).await?;
    }
    messages(&mut b_events, 3).await?;
    receipts(&mut a_events, ReceiptKind::Delivered, 3).await?;
    // Eve is nobody's friend: her attempt is refused with NotFriends.
    let (e, _e_events) = node.connect(&eve).await?;
    e.set_key(alice.id.clone(), quiver_sdk::FriendKey([7; 32]));
    let refused = e.send(&alice.id, b"hi?").await;
    assert!(refused.is_err(), "{refused:?}");

    let text = node.rest().metrics().await?;
    assert_eq!(metric(&text, "quiver_chats_stored_total"), 3.0);
    assert_eq!(metric(&text, "quiver_receipts_stored_total"), 3.0);
    // The 3 DELIVERED may share an entry (receipt batches): 1 to 3 of them.
    let pushed = metric(&text, "quiver_entries_pushed_total");
    assert!(
        (4.0..=6.0).contains(&pushed),
        "3 chats + their receipts: {pushed}"
    );
    assert!(metric(&text, "quiver_acks_total") >= 4.0);
    assert_eq!(metric(&text, "quiver_sessions_open"), 3.0);
    assert_eq!(metric(&text, "quiver_quic_connections"), 3.0);
    assert!(metric(&text, "quiver_quic_rtt_max_seconds") > 0.0);
    assert!(metric(&text, "quiver_flush_seconds_count") >= 1.0);
    assert!(metric(&text, "quiver_errors_total{code=\"NotFriends\"}") >= 1.0);
    assert_eq!(
        metric(&text, "quiver_errors_total{code=\"Malformed\"}"),
        0.0
    );
    Ok(())
}
