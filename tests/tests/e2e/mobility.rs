//! Mobility in real network namespaces: a receiving phone with two links, `wifi` and
//! `cell`, loses the link it uses in the middle of a stream and later gets it back. The
//! app never calls `rebind()`: the SDK notices the change of path by itself and the node
//! moves the same connection to the new path. Needs root (CI runs as root).

use crate::phone::PhoneScene;
use anyhow::ensure;
use quiver_tests::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiving_phone_follows_wifi_to_cell_and_back_without_rebind() -> anyhow::Result<()> {
    let scene = PhoneScene::new().await?;
    // The figure before the watcher: the same run with the phone not watching (it fails).
    let no_watch = std::env::var_os("QUIVER_MOBILITY_NO_WATCH").is_some();
    let app = scene
        .start_app(if no_watch { &["--no-watch"] } else { &[] })
        .await?;
    let (phone, node, bob) = (&scene.phone, &scene.node, &scene.bob);
    let (a, _a_events) = scene.alice_client().await?;

    // One message every 20 ms: 1 s on wifi, 3 s after wifi goes, 3 s after it comes back.
    // The phone acknowledges each as it takes it, so while messages flow its own packets
    // would find the new path; the switches come after a quiet moment, as in real life.
    let mut sent_at = Vec::new();
    let (mut down_from, mut up_from) = (0, 0);
    let (mut wifi_after_up, mut cell_after_up) = (0, 0);
    let phases = [(50, "wifi"), (150, "down"), (150, "up")];
    for (count, phase) in phases {
        if phase != "wifi" {
            // A quiet moment first: the phone has nothing in flight, so nothing of its own
            // would reveal its new path to the node before its next keep-alive.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        match phase {
            "down" => {
                down_from = sent_at.len();
                phone.link_down("wifi")?;
            }
            "up" => {
                up_from = sent_at.len();
                phone.link_up("wifi")?;
            }
            _ => {}
        }
        for i in 0..count {
            if phase == "up" && i == 50 {
                // From 1 s after wifi came back, the node should send on wifi only.
                wifi_after_up = phone.sent_on(&phone.wifi_host)?;
                cell_after_up = phone.sent_on(&phone.cell_host)?;
            }
            let n = sent_at.len();
            sent_at.push(Instant::now());
            a.send(&bob.id, n.to_string().as_bytes()).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let wifi_sent = phone.sent_on(&phone.wifi_host)? - wifi_after_up;
    let cell_sent = phone.sent_on(&phone.cell_host)? - cell_after_up;

    // Everything arrives once, in order; note when.
    let mut arrived = Vec::new();
    let deadline = Instant::now() + WAIT;
    while arrived.len() < sent_at.len() && Instant::now() < deadline {
        for (at, line) in app.take() {
            if let Some(text) = line.strip_prefix("msg ") {
                arrived.push((at, text.to_owned()));
            } else {
                ensure!(line == "state Online", "the phone reconnected: {line}");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let texts: Vec<String> = arrived.iter().map(|(_, t)| t.clone()).collect();
    let expected: Vec<String> = (0..sent_at.len()).map(|n| n.to_string()).collect();
    ensure!(texts == expected, "once and in order: got {texts:?}");
    let delay = |range: std::ops::Range<usize>| {
        range
            .map(|n| arrived[n].0.saturating_duration_since(sent_at[n]))
            .max()
            .unwrap_or_default()
    };
    let (before, after_down, after_up) = (
        delay(0..down_from),
        delay(down_from..up_from),
        delay(up_from..sent_at.len()),
    );
    eprintln!(
        "worst delay: {before:?} on wifi, {after_down:?} after wifi went, {after_up:?} after \
         it came back; node sent {wifi_sent} packets on wifi and {cell_sent} on cell in the \
         last 2 s"
    );
    ensure!(
        after_down <= Duration::from_secs(1),
        "worst delay after the switch {after_down:?} (the node kept sending to the dead link)"
    );
    ensure!(after_up <= Duration::from_secs(1), "{after_up:?}");
    ensure!(
        node.sessions_opened() == 2,
        "one session per device on the node: {}",
        node.sessions_opened()
    );
    // Back on wifi: the node sends the phone's traffic there, not on cell.
    ensure!(
        wifi_sent >= 50 && cell_sent <= 5,
        "back on wifi: {wifi_sent} packets on wifi, {cell_sent} on cell"
    );
    Ok(())
}
