//! Paged history: a device that has nothing pages its inbox back from the node, newest
//! first, in bounded pages — every entry once, none missing — and paging stops cleanly
//! where retention removed the rest.

use anyhow::{bail, ensure};
use quiver_sdk::{Client, ErrorCode, Event, HistoryError, HistoryOf, Seq, UserId};
use quiver_tests::*;
use std::collections::HashSet;
use std::time::Duration;

/// Every page of `of`, newest first, checking each holds at most `limit`; returns the
/// events and how many pages it took.
async fn all_pages(
    client: &Client,
    of: &HistoryOf,
    limit: u32,
) -> anyhow::Result<(Vec<Event>, usize)> {
    let (mut events, mut pages, mut before) = (Vec::new(), 0, None);
    loop {
        let page = client.history(of, before, limit).await?;
        ensure!(
            page.events.len() <= limit as usize,
            "a page of {}",
            page.events.len()
        );
        events.extend(page.events);
        pages += 1;
        ensure!(pages < 1000, "paging does not end");
        match page.next {
            Some(next) => before = Some(next),
            None => return Ok((events, pages)),
        }
    }
}

/// The `seq` of an inbox event.
fn seq_of(event: &Event) -> anyhow::Result<Seq> {
    match event {
        Event::Message(m) => Ok(m.seq),
        other => bail!("not a message: {other:?}"),
    }
}

/// Sends `n` messages from `client` to `to`, pipelined, and waits for every SENT.
async fn send_batch(client: &Client, to: &UserId, texts: &[String]) -> anyhow::Result<Vec<Seq>> {
    let mut pending = Vec::with_capacity(texts.len());
    for text in texts {
        pending.push(client.enqueue(to, text.as_bytes()).await?);
    }
    let mut seqs = Vec::with_capacity(texts.len());
    for p in pending {
        seqs.push(p.await?.seq);
    }
    Ok(seqs)
}

#[tokio::test]
async fn a_fresh_device_pages_10000_entries_back_each_once() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let (alice, bob, carol) = (
        node.user("alice").await?,
        node.user("bob").await?,
        node.user("carol").await?,
    );
    node.befriend(&alice, &bob).await?;
    node.befriend(&carol, &bob).await?;
    let (a, _a_events) = node.connect(&alice).await?;
    let (c, _c_events) = node.connect(&carol).await?;
    // 10,000 from Alice in batches of 200, one from Carol after each batch.
    let mut from_alice = Vec::new();
    let mut from_carol = Vec::new();
    for batch in 0..50 {
        let texts: Vec<String> = (0..200)
            .map(|i| format!("alice {}", batch * 200 + i))
            .collect();
        let seqs = send_batch(&a, &bob.id, &texts).await?;
        from_alice.extend(seqs.into_iter().zip(texts));
        let text = format!("carol {batch}");
        from_carol.push((c.send(&bob.id, text.as_bytes()).await?.seq, text));
    }

    // A device Bob just logged in, whose store is empty: it is pushed nothing of the
    // 10,050 before it, only what comes after; it pages the rest.
    let fresh = bob.new_device(&node).await?;
    let (b, mut b_events) = node.connect(&fresh).await?;
    assert_quiet(&mut b_events, Duration::from_millis(500)).await?;
    let after = a.send(&bob.id, b"after the login").await?;
    let pushed = next_message(&mut b_events).await?;
    ensure!((pushed.seq, pushed.text()) == (after.seq, "after the login".into()));
    from_alice.push((after.seq, "after the login".into()));

    let (events, pages) = all_pages(&b, &HistoryOf::Friend(alice.id.clone()), 500).await?;
    let got: Vec<(Seq, String)> = events
        .iter()
        .map(|e| match e {
            Event::Message(m) if m.from == alice.id => Ok((m.seq, m.text())),
            other => bail!("not a message from alice: {other:?}"),
        })
        .collect::<anyhow::Result<_>>()?;
    let want: Vec<(Seq, String)> = from_alice.iter().rev().cloned().collect();
    ensure!(got.len() == 10_001, "{} of 10,001", got.len());
    ensure!(got == want, "alice's 10,001, newest first, once each");
    // 10,051 entries at most 5,000 looked at per page, 500 returned: 21 pages.
    ensure!((21..=22).contains(&pages), "{pages} pages");

    // The whole inbox: every seq from the newest down to 1, once.
    let (events, _) = all_pages(&b, &HistoryOf::Inbox, 500).await?;
    let seqs = events
        .iter()
        .map(seq_of)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let newest = from_alice.last().unwrap().0;
    ensure!(seqs == (1..=newest.0).rev().map(Seq).collect::<Vec<_>>());

    // Carol's 50 are spread over the inbox: pages may be short, but all 50 come.
    let (events, _) = all_pages(&b, &HistoryOf::Friend(carol.id.clone()), 500).await?;
    let got: Vec<(Seq, String)> = events
        .iter()
        .map(|e| match e {
            Event::Message(m) => Ok((m.seq, m.text())),
            other => bail!("{other:?}"),
        })
        .collect::<anyhow::Result<_>>()?;
    let want: Vec<(Seq, String)> = from_carol.iter().rev().cloned().collect();
    ensure!(got == want);

    // Someone with no inbox entries (Carol: no device of Bob's took hers, so no
    // receipts), and a page below the start: empty, no next.
    let (empty, pages) = all_pages(&c, &HistoryOf::Inbox, 10).await?;
    ensure!(empty.is_empty() && pages == 1);
    let below = b.history(&HistoryOf::Inbox, Some(Seq(1)), 10).await?;
    ensure!(below.events.is_empty() && below.next.is_none());
    Ok(())
}

#[tokio::test]
async fn paging_ends_cleanly_where_retention_removed_entries() -> anyhow::Result<()> {
    let node = TestNode::start_with(|c| {
        c.inbox.retention_secs = 3600;
        c.inbox.segment_bytes = 4096;
    })
    .await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let (a, _a_events) = node.connect(&alice).await?;
    let old: Vec<String> = (0..30).map(|i| format!("old {i:0>300}")).collect();
    send_batch(&a, &bob.id, &old).await?;
    let expired = node
        .node()
        .expire_inbox(std::time::SystemTime::now() + Duration::from_secs(2 * 3600))?;
    ensure!(expired.entries == 30, "{expired:?}");
    let young: Vec<String> = (0..5).map(|i| format!("young {i}")).collect();
    let young_seqs = send_batch(&a, &bob.id, &young).await?;

    let (b, _b_events) = node.connect(&bob).await?;
    let (events, pages) = all_pages(&b, &HistoryOf::Inbox, 2).await?;
    let got = events
        .iter()
        .map(seq_of)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let want: Vec<Seq> = young_seqs.iter().rev().copied().collect();
    ensure!(got == want, "only what retention kept: {got:?}");
    ensure!(pages == 3, "2 + 2 + 1, the last with no next: {pages}");
    // Asking below what is kept: an empty page, not an error.
    let gone = b
        .history(&HistoryOf::Inbox, Some(young_seqs[0]), 10)
        .await?;
    ensure!(gone.events.is_empty() && gone.next.is_none(), "{gone:?}");
    Ok(())
}

/// Pages cost chat tokens: a flood of requests is refused `RateLimited` stream by
/// stream, and the connection, and chat on it, go on.
#[tokio::test]
async fn a_flood_of_history_requests_is_rate_limited_not_fatal() -> anyhow::Result<()> {
    // A low rate, so the flood exceeds it however slowly this machine sends it.
    let node = TestNode::start_with(|c| {
        c.limits.messages_per_sec = 50;
        c.limits.message_burst = 100;
    })
    .await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let (a, _a_events) = node.connect(&alice).await?;
    a.send(&bob.id, b"one").await?;
    let (b, _b_events) = node.connect(&bob).await?;
    let asks = (0..1500).map(|_| {
        let b = b.clone();
        async move { b.history(&HistoryOf::Inbox, None, 1).await }
    });
    let answers = futures_join_all(asks).await;
    let mut limited = 0;
    let mut codes = HashSet::new();
    for answer in answers {
        match answer {
            Ok(page) => ensure!(page.events.len() == 1),
            Err(HistoryError::Refused(ErrorCode::RateLimited)) => limited += 1,
            Err(other) => {
                codes.insert(format!("{other:?}"));
            }
        }
    }
    ensure!(codes.is_empty(), "other failures: {codes:?}");
    ensure!(
        limited > 0,
        "1,500 pages at once exceed a burst of 100 at 50/s"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.send(&alice.id, b"still here").await?;
    let page = b.history(&HistoryOf::Inbox, None, 5).await?;
    ensure!(page.events.len() == 1 && page.next.is_none());
    Ok(())
}
