//! A burst of logins against the node as its own process (issue 16, item 5): argon2 takes
//! 19 MiB a hash, and on tokio's blocking pool 120 logins at once took the node from 0.8
//! to 2.7 GiB. Now at most one hash per core runs, a short queue waits, the rest are told
//! 503 at once, and the node's memory stays put while the owner still gets in.

use quiver_bench::NodeProcess;
use quiver_sdk::{Rest, RestError};
use std::path::Path;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_logins_is_queued_or_refused_and_memory_stays_bounded() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("node");
    let binary = Path::new(env!("CARGO_BIN_EXE_quiver-server"));
    // Every login comes from 127.0.0.1 here: lift the per-address limits, which would
    // otherwise turn most of the burst away before it reaches argon2.
    let config = dir.path().join("quiver.toml");
    let toml = "[limits]\nlogins_per_minute_per_address = 100000\n\
                [http]\nmax_connections_per_address = 1000\n";
    std::fs::write(&config, toml)?;
    let flags = ["--config", config.to_str().expect("utf-8 path")];
    let node = NodeProcess::start(binary, &data, "127.0.0.1:0", "127.0.0.1:0", &flags)?;
    let ca = std::fs::read_to_string(data.join("certs/ca.pem"))?;
    let url = format!("https://{}", node.http);
    let rest = Rest::new(&url, &ca)?;
    rest.register("owner", "owner-password").await?;
    rest.login("owner", "owner-password", None).await?;
    let before = node.rss_bytes()?;

    let mut burst = Vec::new();
    for i in 0..120 {
        let rest = Rest::new(&url, &ca)?;
        burst.push(tokio::spawn(async move {
            match rest
                .login(&format!("guess{i}"), "wrong-password", None)
                .await
            {
                Err(RestError::Api { status, .. }) => status,
                other => panic!("{other:?}"),
            }
        }));
    }
    let mut peak = before;
    let owner_started = Instant::now();
    let owner = tokio::spawn(async move {
        // The owner's app retries a 503 after a moment, as Retry-After asks.
        loop {
            match rest.login("owner", "owner-password", None).await {
                Err(RestError::Api { status: 503, .. }) => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                other => return other.map(|_| owner_started.elapsed()),
            }
        }
    });
    while !burst.iter().all(|b| b.is_finished()) {
        peak = peak.max(node.rss_bytes()?);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut statuses = Vec::new();
    for b in burst {
        statuses.push(b.await?);
    }
    let owner_took = owner.await??;
    let busy = statuses.iter().filter(|&&s| s == 503).count();
    let wrong = statuses.iter().filter(|&&s| s == 401).count();
    let grew = peak.saturating_sub(before) >> 20;
    eprintln!(
        "RSS before {} MiB, peak {} MiB (+{grew} MiB); {wrong} answered 401, {busy} 503; \
         the owner got in after {owner_took:?}",
        before >> 20,
        peak >> 20
    );
    assert_eq!(busy + wrong, 120, "{statuses:?}");
    assert!(busy > 0, "a queue of 32 cannot hold 120 logins at once");
    assert!(wrong >= 2, "the hashing threads worked through some");
    assert!(
        grew < 200,
        "RSS grew {grew} MiB (120 hashes at once: ~2.3 GiB)"
    );
    assert!(owner_took < Duration::from_secs(15));
    Ok(())
}
