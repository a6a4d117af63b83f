//! An app that the store tests kill: it opens a client on a store, and either queues
//! messages and then waits to be killed, or connects and waits until the outbox the last
//! run left is empty.
//!
//! `outbox_child queue <store> <addr> <ca.pem> <peer> <count>`: prints `connected`, waits
//! for a line on stdin, queues `count` messages `m0`.. to `peer` (each in the store when
//! `enqueue` returns), prints `queued`, and sleeps.
//! `outbox_child drain <store> <addr> <ca.pem>`: prints `drained` once the store's outbox
//! is empty, then exits.

use anyhow::{bail, Context};
use quiver_sdk::{Client, ConnectOptions, Store, UserId};
use std::io::BufRead;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, store, addr, ca, rest @ ..] = args.as_slice() else {
        bail!("usage: outbox_child queue|drain <store> <addr> <ca.pem> [<peer> <count>]");
    };
    let store = Store::open(store)?;
    let session = store.session()?.context("no session in the store")?;
    let mut options =
        ConnectOptions::new(addr.parse()?, std::fs::read_to_string(ca)?, session.token);
    options.store = Some(store.clone());
    options.resend_after = Duration::from_millis(500);
    let (client, mut events) = Client::connect(options).await?;
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    match (mode.as_str(), rest) {
        ("queue", [peer, count]) => queue(&client, &UserId::parse(peer)?, count.parse()?).await,
        ("drain", []) => {
            for _ in 0..600 {
                if store.outbox()?.is_empty() {
                    println!("drained");
                    client.close().await;
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            bail!("the outbox did not drain in 30 s")
        }
        _ => bail!("unknown mode {mode}"),
    }
}

async fn queue(client: &Client, peer: &UserId, count: usize) -> anyhow::Result<()> {
    println!("connected");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        pending.push(client.enqueue(peer, format!("m{i}").as_bytes()).await?);
    }
    println!("queued");
    // Wait to be killed; the pending sends stay in flight until then.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    drop(pending);
    Ok(())
}
