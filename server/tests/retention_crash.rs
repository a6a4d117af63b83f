//! Retention across `kill -9`: the node as its own process removes every entry Bob has
//! (he never connects), is killed with SIGKILL right after, and starts again on the same
//! data. Bob's `seq`s must go on from where they were each time: the floor that says how
//! far his removed entries reached was made durable before their file was deleted.

mod common;

use common::{befriend, connect, register, FAST};
use quiver_bench::stats::metric;
use quiver_bench::NodeProcess;
use quiver_sdk::{Event, Rest, Seq, UserId};
use std::path::Path;
use std::time::Duration;

/// Removal checked every second, entries kept two; small segments.
const CONFIG: &str = "[inbox]\nretention_secs = 2\nexpire_every_secs = 1\nsegment_bytes = 4096\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_go_on_after_retention_removed_everything_and_the_node_was_killed(
) -> anyhow::Result<()> {
    // A hang is a failure, not a stuck CI run.
    tokio::time::timeout(Duration::from_secs(180), expire_kill_restart()).await?
}

async fn expire_kill_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("node");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, CONFIG)?;
    let binary = Path::new(env!("CARGO_BIN_EXE_quiver-server"));
    let mut flags = FAST.to_vec();
    flags.extend(["--config", config.to_str().expect("utf-8 path")]);
    let mut node = NodeProcess::start(binary, &data, "127.0.0.1:0", "127.0.0.1:0", &flags)?;
    let ca = std::fs::read_to_string(data.join("certs/ca.pem"))?;
    let rest = Rest::new(&format!("https://{}", node.http), &ca)?;
    register(&rest, &["alice", "bob"]).await?;
    befriend(&rest, "alice", "bob").await?;
    let bob = UserId::parse("bob")?;

    let mut last = Seq(0);
    for round in 0..3 {
        let rest = Rest::new(&format!("https://{}", node.http), &ca)?;
        let (a, _a_events) = connect(&rest, node.quic, &ca, "alice").await?;
        for i in 0..20 {
            let seq = a
                .send(&bob, format!("round {round} {i:0>200}").as_bytes())
                .await?
                .seq;
            assert_eq!(seq, last.next(), "round {round}: seqs go on, none reused");
            last = seq;
        }
        drop(a);
        // Until everything is removed: the log holds no record but the empty segment
        // begun after the last removal.
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let text = rest.metrics().await?;
            let expired = metric(&text, "quiver_inbox_entries_expired_total").unwrap_or(0.0);
            if expired >= 20.0 && metric(&text, "quiver_inbox_log_bytes") == Some(0.0) {
                break;
            }
        }
        node.kill();
        let (quic, http) = (node.quic.to_string(), node.http.to_string());
        node = NodeProcess::start(binary, &data, &quic, &http, &flags)?;
    }

    // Bob finally connects: nothing is left to push, and his cursor starts at his floor.
    let rest = Rest::new(&format!("https://{}", node.http), &ca)?;
    let (b, mut b_events) = connect(&rest, node.quic, &ca, "bob").await?;
    assert_eq!(b.cursor(), last, "the device starts at the floor");
    let (a, _a_events) = connect(&rest, node.quic, &ca, "alice").await?;
    let after = a.send(&bob, b"after three rounds").await?;
    assert_eq!(after.seq, last.next());
    loop {
        match tokio::time::timeout(Duration::from_secs(20), b_events.recv()).await? {
            Some(Event::Message(m)) => {
                assert_eq!((m.seq, m.text()), (after.seq, "after three rounds".into()));
                break;
            }
            Some(Event::Connection(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    Ok(())
}
