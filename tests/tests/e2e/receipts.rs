//! DELIVERED receipts in batches: many acknowledgements between the same two users become
//! a few entries in the sender's inbox, and every message still gets its receipt once.
//! A node set to accept protocol version 1 clients writes one entry per receipt.

use crate::raw::{hello_as, Via};
use quiver_proto::{ControlResponse, ErrorCode, PROTOCOL_VERSION};
use quiver_sdk::{Event, HistoryOf, ReceiptKind};
use quiver_tests::*;
use std::collections::BTreeSet;
use std::time::Duration;

fn metric(text: &str, name: &str) -> f64 {
    quiver_bench::stats::metric(text, name)
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

/// Alice sends `n` messages while Bob is away; Bob comes back and takes them all. Returns
/// how many receipt entries Alice's device was pushed for the `n` DELIVERED it got (each
/// message once).
async fn backlog_then_receipts(node: &TestNode, n: usize) -> anyhow::Result<f64> {
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let (a, mut a_events) = node.connect(&alice).await?;
    let mut sent = BTreeSet::new();
    for i in 0..n {
        sent.insert(a.send(&bob.id, format!("m{i}").as_bytes()).await?.id);
    }
    let (_b, mut b_events) = node.connect(&bob).await?;
    messages(&mut b_events, n).await?;
    let delivered = receipts(&mut a_events, ReceiptKind::Delivered, n).await?;
    let ids: BTreeSet<_> = delivered.iter().map(|r| r.id).collect();
    assert_eq!(ids, sent, "one DELIVERED for each message");
    assert!(delivered.iter().all(|r| r.peer == bob.id));
    assert_quiet(&mut a_events, Duration::from_millis(300)).await?;
    // Paging back shows the same receipts, newest first, each once.
    let page = a.history(&HistoryOf::Inbox, None, 500).await?;
    let paged: Vec<_> = page
        .events
        .iter()
        .map(|event| match event {
            Event::Receipt(r) if r.kind == ReceiptKind::Delivered => Ok(r.id),
            other => Err(anyhow::anyhow!("not a DELIVERED: {other:?}")),
        })
        .collect::<Result<_, _>>()?;
    let mut newest_first: Vec<_> = delivered.iter().map(|r| r.id).collect();
    newest_first.reverse();
    assert_eq!(paged, newest_first);
    let text = node.rest().metrics().await?;
    assert_eq!(metric(&text, "quiver_receipts_stored_total"), n as f64);
    // Bob's device was pushed the n chats; the rest went to Alice's.
    Ok(metric(&text, "quiver_entries_pushed_total") - n as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_s_receipts_come_in_a_few_entries_each_message_once() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let entries = backlog_then_receipts(&node, 300).await?;
    // 300 acknowledgements in a burst: the first receipt goes alone, the rest gather
    // while it commits. One entry each would be 300.
    assert!(
        entries <= 150.0,
        "{entries} receipt entries for 300 receipts"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_accepting_v1_clients_writes_a_receipt_per_entry() -> anyhow::Result<()> {
    let strict = TestNode::start().await?;
    let carol = strict.user("carol").await?;
    let (_, _, _, answer) = hello_as(Via::Udp, &strict, &carol.login.token, 1).await?;
    assert!(
        matches!(
            answer,
            ControlResponse::Error {
                code: ErrorCode::VersionMismatch,
                ..
            }
        ),
        "{answer:?}"
    );
    strict.shutdown().await;

    let lenient = TestNode::start_with(|c| c.accept_v1_clients = true).await?;
    let carol = lenient.user("carol").await?;
    for version in [1, PROTOCOL_VERSION] {
        let (_, _, _, answer) = hello_as(Via::Udp, &lenient, &carol.login.token, version).await?;
        assert!(
            matches!(answer, ControlResponse::Welcome { .. }),
            "{answer:?}"
        );
    }
    let entries = backlog_then_receipts(&lenient, 60).await?;
    assert_eq!(
        entries, 60.0,
        "one entry per receipt, as version 1 reads them"
    );
    lenient.shutdown().await;
    Ok(())
}
