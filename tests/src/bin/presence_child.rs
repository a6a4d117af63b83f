//! A client the presence test kills with SIGKILL: `presence_child <addr> <ca.pem> <token>`
//! connects showing presence `Online`, prints `online`, and waits to be killed.

use anyhow::bail;
use quiver_sdk::{Client, ConnectOptions, PresenceState};
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, ca, token] = args.as_slice() else {
        bail!("usage: presence_child <addr> <ca.pem> <token>");
    };
    let mut options = ConnectOptions::new(addr.parse()?, std::fs::read_to_string(ca)?, token);
    options.presence = Some(PresenceState::Online);
    options.keep_alive = Duration::from_millis(500);
    let (_client, mut events) = Client::connect(options).await?;
    println!("online");
    while events.recv().await.is_some() {}
    Ok(())
}
