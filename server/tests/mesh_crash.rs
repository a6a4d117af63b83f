//! A mesh of two node processes and a real `redis-server`. Alice (homed on node 1) sends a
//! burst to Carol (homed on node 2) and node 2 is killed with SIGKILL in the middle: while
//! it is down no message gets SENT; once it is back, every message is delivered exactly
//! once, in order, including every one that got SENT before the kill.

mod common;

use common::{befriend, connect, register, FAST};
use quiver_bench::cluster::{node_args, ClusterCa, RedisServer};
use quiver_bench::NodeProcess;
use quiver_sdk::{Event, Rest, Seq};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn start(
    ca: &ClusterCa,
    redis: &RedisServer,
    id: &str,
    data: &Path,
) -> anyhow::Result<NodeProcess> {
    let binary = Path::new(env!("CARGO_BIN_EXE_quiver-server"));
    let mut args = node_args(ca, &redis.url(), id, "127.0.0.1:0".parse()?)?;
    args.extend(FAST.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    NodeProcess::start(binary, data, "127.0.0.1:0", "127.0.0.1:0", &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_home_node_gives_no_sent_and_loses_nothing() -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(120), kill_home_node()).await?
}

async fn kill_home_node() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let redis = RedisServer::start()?;
    let ca = ClusterCa::new("Quiver crash-test CA")?;
    let ca_pem = ca.ca_pem()?;
    let n1 = start(&ca, &redis, "n1", &dir.path().join("n1"))?;
    let n2_data = dir.path().join("n2");
    let n2 = start(&ca, &redis, "n2", &n2_data)?;
    let rest1 = Rest::new(&format!("https://{}", n1.http), &ca_pem)?;
    let rest2 = Rest::new(&format!("https://{}", n2.http), &ca_pem)?;
    register(&rest1, &["alice"]).await?;
    register(&rest2, &["carol"]).await?;
    befriend(&rest1, "alice", "carol").await?;

    let (a, _a_events) = connect(&rest1, n1.quic, &ca_pem, "alice").await?;
    let carol = quiver_sdk::UserId::parse("carol")?;
    let sent: Arc<Mutex<Vec<(String, Seq)>>> = Arc::default();
    let (tasks, per_task) = (10, 30);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (a, carol, sent) = (a.clone(), carol.clone(), sent.clone());
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let text = format!("t{t} {i:03}");
                let seq = a.send(&carol, text.as_bytes()).await?.seq;
                sent.lock().unwrap().push((text, seq));
                // Spread the burst so the kill lands in its middle.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::Ok(())
        }));
    }
    while sent.lock().unwrap().len() < 80 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    n2.kill();
    let sent_before_kill = sent.lock().unwrap().clone();
    // A SENT already on the wire may still land; after that, nothing while node 2 is down.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = sent.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sent.lock().unwrap().len(),
        settled,
        "SENT while the recipient's home node was down"
    );
    assert!(
        settled < tasks * per_task,
        "the kill came too late to test anything"
    );

    let n2 = start(&ca, &redis, "n2", &n2_data)?;
    for handle in handles {
        handle.await??;
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    assert_eq!(sent.len(), tasks * per_task);
    eprintln!(
        "{} SENT before the kill, {} after the restart",
        sent_before_kill.len(),
        sent.len() - settled
    );

    // Carol reads on node 1, through the mesh from her restarted home node.
    let (_c, mut c_events) = connect(&rest1, n1.quic, &ca_pem, "carol").await?;
    let mut got = Vec::new();
    while got.len() < sent.len() {
        match tokio::time::timeout(Duration::from_secs(20), c_events.recv()).await? {
            Some(Event::Message(m)) => got.push((m.text(), m.seq)),
            Some(Event::Connection(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "in seq order");
    for t in 0..tasks {
        let mine: Vec<&String> = got
            .iter()
            .map(|(text, _)| text)
            .filter(|text| text.starts_with(&format!("t{t} ")))
            .collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "task {t} in order");
    }
    let mut expected = sent.clone();
    expected.sort_by_key(|(_, seq)| *seq);
    assert_eq!(
        got, expected,
        "exactly what got SENT, each once, at its seq"
    );
    for item in &sent_before_kill {
        assert!(
            got.contains(item),
            "SENT before the kill, then lost: {item:?}"
        );
    }
    if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(500), c_events.recv()).await
    {
        assert!(
            matches!(event, Event::Connection(_)),
            "nothing more: {event:?}"
        );
    }
    drop(n2);
    Ok(())
}
