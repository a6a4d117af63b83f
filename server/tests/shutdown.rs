//! SIGTERM stops a node in order: connections are closed with `ShuttingDown` (clients
//! learn at once and reconnect later), storage is flushed, the process exits 0, and what
//! got SENT is there when the node comes back.

mod common;

use common::{befriend, connect, register, FAST};
use quiver_bench::NodeProcess;
use quiver_sdk::{Event, Rest, UserId};
use std::path::Path;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_connections_with_a_code_flushes_and_exits() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("node");
    let binary = Path::new(env!("CARGO_BIN_EXE_quiver-server"));
    let node = NodeProcess::start(binary, &data, "127.0.0.1:0", "127.0.0.1:0", FAST)?;
    let ca = std::fs::read_to_string(data.join("certs/ca.pem"))?;
    let rest = Rest::new(&format!("https://{}", node.http), &ca)?;
    register(&rest, &["alice", "bob"]).await?;
    befriend(&rest, "alice", "bob").await?;
    let (a, a_events) = connect(&rest, node.quic, &ca, "alice").await?;
    let sent = a.send(&UserId::parse("bob")?, b"before the stop").await?;
    let conn = a.connection().expect("connected");

    let status = node.terminate(Duration::from_secs(10))?;
    assert!(status.success(), "exit status {status}");
    // The client was told why, by code, not left to time out.
    let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await?;
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let code = quiver_sdk::ErrorCode::ShuttingDown.to_u32();
            assert_eq!(close.error_code.into_inner(), u64::from(code));
        }
        other => panic!("closed without the node's code: {other:?}"),
    }
    drop((a, a_events));

    // Back on the same data: the SENT message waits for Bob.
    let node = NodeProcess::start(binary, &data, "127.0.0.1:0", "127.0.0.1:0", FAST)?;
    let rest = Rest::new(&format!("https://{}", node.http), &ca)?;
    let (_b, mut b_events) = connect(&rest, node.quic, &ca, "bob").await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(15), b_events.recv()).await? {
            Some(Event::Message(m)) => {
                assert_eq!((m.seq, m.text()), (sent.seq, "before the stop".into()));
                break;
            }
            Some(Event::Connection(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    Ok(())
}
