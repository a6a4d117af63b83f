//! The receiving phone of the mobility test, run inside its network namespace:
//! `phone_child <addr> <ca.pem> <token> <friend> <key-hex> [--no-watch]` connects with the
//! SDK's defaults (15 s keep-alive; network watching on unless `--no-watch`), prints
//! `online`, then one line per event: `msg <text>` for a message, `state <state>` for a
//! connection change. It never calls `rebind()`.

use anyhow::{bail, Context};
use quiver_sdk::{Client, ConnectOptions, Event, FriendKey, UserId};
use std::io::Write;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, ca, token, friend, key) = match args.as_slice() {
        [addr, ca, token, friend, key, ..] => (addr, ca, token, friend, key),
        _ => bail!("usage: phone_child <addr> <ca.pem> <token> <friend> <key-hex> [--no-watch]"),
    };
    let mut options = ConnectOptions::new(addr.parse()?, std::fs::read_to_string(ca)?, token);
    // The namespace reaches the node at an address its dev certificate does not name.
    options.server_name = Some("quiver-dev-node".into());
    let key = quiver_sdk::key_from_hex(key).context("key")?;
    options.keys.insert(UserId::parse(friend)?, FriendKey(key));
    options.watch_network = !args.iter().any(|a| a == "--no-watch");
    let (_client, mut events) = Client::connect(options).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "online")?;
    while let Some(event) = events.recv().await {
        match event {
            Event::Message(m) => writeln!(out, "msg {}", m.text())?,
            Event::Connection(state) => writeln!(out, "state {state:?}")?,
            _ => continue,
        }
        out.flush()?;
    }
    Ok(())
}
