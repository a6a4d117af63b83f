//! The phone of the mobility and carrier tests, run inside its network namespace:
//! `phone_child <addr> <ca.pem> <token> <friend> <key-hex> [options]` connects with the
//! SDK's defaults (15 s keep-alive, network watching, TCP fallback), prints `online`,
//! then one line per event: `msg <text>` for a message, `state <state>` for a connection
//! change, `carrier tcp|udp` when the connection moves between carriers. It never calls
//! `rebind()`. Options:
//! - `--no-watch`: do not watch the network (the figure before the watcher);
//! - `--send N`: also send `N` messages `0`..`N-1` to the friend, one every 20 ms,
//!   printing `sent <i>` at each SENT;
//! - `--probe-ms MS`: probe UDP every `MS` ms while on TCP (30 s by default).

use anyhow::{bail, Context};
use quiver_sdk::{Client, ConnectOptions, Event, FriendKey, UserId};
use std::io::Write;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // What the SDK decides (moves between carriers, path changes) goes to stderr, which
    // the test does not read: it shows in the test's output when something fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("quiver_sdk=info"))
        .with_writer(std::io::stderr)
        .try_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, ca, token, friend, key) = match args.as_slice() {
        [addr, ca, token, friend, key, ..] => (addr, ca, token, friend, key),
        _ => bail!("usage: phone_child <addr> <ca.pem> <token> <friend> <key-hex> [options]"),
    };
    let option = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse::<u64>())
            .transpose()
    };
    let mut options = ConnectOptions::new(addr.parse()?, std::fs::read_to_string(ca)?, token);
    // The namespace reaches the node at an address its dev certificate does not name.
    options.server_name = Some("quiver-dev-node".into());
    let key = quiver_sdk::key_from_hex(key).context("key")?;
    let friend = UserId::parse(friend)?;
    options.keys.insert(friend.clone(), FriendKey(key));
    options.watch_network = !args.iter().any(|a| a == "--no-watch");
    if let Some(ms) = option("--probe-ms")? {
        options.udp_probe_every = Duration::from_millis(ms);
    }
    let (client, mut events) = Client::connect(options).await?;
    println!("online");
    if let Some(count) = option("--send")? {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..count {
                match client.send(&friend, i.to_string().as_bytes()).await {
                    Ok(_) => println!("sent {i}"),
                    Err(e) => println!("failed {i} {e}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let watched = client.clone();
    tokio::spawn(async move {
        let mut on_tcp = watched.on_tcp();
        if on_tcp {
            println!("carrier tcp");
        }
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if watched.on_tcp() != on_tcp {
                on_tcp = !on_tcp;
                println!("carrier {}", if on_tcp { "tcp" } else { "udp" });
            }
        }
    });
    while let Some(event) = events.recv().await {
        let mut out = std::io::stdout().lock();
        match event {
            Event::Message(m) => writeln!(out, "msg {}", m.text())?,
            Event::Connection(state) => writeln!(out, "state {state:?}")?,
            _ => continue,
        }
        out.flush()?;
    }
    Ok(())
}
