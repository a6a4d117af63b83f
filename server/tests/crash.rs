//! The node as its own process, killed with SIGKILL in the middle of a burst and started
//! again on the same data folder: every message that got SENT is delivered exactly once,
//! and every message that did not is resent by the SDK and also delivered exactly once.

mod common;

use common::{befriend, connect, register, FAST};
use quiver_bench::NodeProcess;
use quiver_sdk::{Event, Rest, Seq, UserId};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_loses_and_repeats_nothing() -> anyhow::Result<()> {
    // A hang is a failure, not a stuck CI run.
    tokio::time::timeout(Duration::from_secs(120), crash_and_recover()).await?
}

async fn crash_and_recover() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("node");
    let binary = Path::new(env!("CARGO_BIN_EXE_quiver-server"));
    let node = NodeProcess::start(binary, &data, "127.0.0.1:0", "127.0.0.1:0", FAST)?;
    let ca = std::fs::read_to_string(data.join("certs/ca.pem"))?;
    let rest = Rest::new(&format!("https://{}", node.http), &ca)?;
    register(&rest, &["alice", "bob"]).await?;
    befriend(&rest, "alice", "bob").await?;

    let (a, _a_events) = connect(&rest, node.quic, &ca, "alice").await?;
    let bob = UserId::parse("bob")?;
    let sent: Arc<Mutex<Vec<(usize, Seq)>>> = Arc::default();
    let (tasks, per_task) = (10, 200);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (a, bob, sent) = (a.clone(), bob.clone(), sent.clone());
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let seq = a.send(&bob, format!("t{t} {i}").as_bytes()).await?.seq;
                sent.lock().unwrap().push((t * per_task + i, seq));
            }
            anyhow::Ok(())
        }));
    }
    while sent.lock().unwrap().len() < 500 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    node.kill();
    let sent_before_crash: Vec<Seq> = sent.lock().unwrap().iter().map(|(_, seq)| *seq).collect();
    let restarted = Instant::now();
    let (quic, http) = (node.quic.to_string(), node.http.to_string());
    let node = NodeProcess::start(binary, &data, &quic, &http, FAST)?;
    let before = sent.lock().unwrap().len();
    while sent.lock().unwrap().len() == before {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!(
        "killed after {} SENT; first SENT {:?} after the restart began",
        sent_before_crash.len(),
        restarted.elapsed()
    );
    for handle in handles {
        handle.await??;
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    assert_eq!(sent.len(), tasks * per_task);

    let rest = Rest::new(&format!("https://{}", node.http), &ca)?;
    let (_b, mut b_events) = connect(&rest, node.quic, &ca, "bob").await?;
    let mut got = Vec::new();
    while got.len() < sent.len() {
        match tokio::time::timeout(Duration::from_secs(20), b_events.recv()).await? {
            Some(Event::Message(m)) => got.push(m),
            Some(Event::Connection(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let got_seqs: Vec<Seq> = got.iter().map(|m| m.seq).collect();
    assert!(
        got_seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, no repeats"
    );
    let mut sent_seqs: Vec<Seq> = sent.iter().map(|(_, seq)| *seq).collect();
    sent_seqs.sort();
    assert_eq!(got_seqs, sent_seqs, "exactly the SENT messages, each once");
    for seq in &sent_before_crash {
        assert!(
            got_seqs.binary_search(seq).is_ok(),
            "SENT before the crash, then lost: {seq}"
        );
    }
    let mut texts: Vec<String> = got.iter().map(|m| m.text()).collect();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), tasks * per_task, "no message body twice");
    if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(500), b_events.recv()).await
    {
        assert!(
            matches!(event, Event::Connection(_)),
            "nothing more: {event:?}"
        );
    }
    Ok(())
}
