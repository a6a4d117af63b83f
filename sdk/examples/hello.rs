//! Two users, one message, three receipts — the SDK end to end.
//!
//! Run with a node up (`cargo run --release -p quiver-server`), from the same folder:
//! `cargo run -p quiver-sdk --example hello -- https://127.0.0.1:8443 quiver-data/certs/ca.pem`

use quiver_sdk::{Client, ConnectOptions, Event, FriendKey, LoginResponse, Rest, UserId};
use std::collections::HashMap;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let server = args
        .next()
        .unwrap_or_else(|| "https://127.0.0.1:8443".into());
    let ca_path = args
        .next()
        .unwrap_or_else(|| "quiver-data/certs/ca.pem".into());
    let ca_pem = std::fs::read_to_string(&ca_path)?;
    let rest = Rest::new(&server, &ca_pem)?;

    // Fresh names, so the example can run again against the same node.
    let tag = Client::new_message_id().0 % 1_000_000;
    let (alice, bob) = (format!("alice-{tag}"), format!("bob-{tag}"));
    let mut logins = Vec::new();
    for name in [&alice, &bob] {
        rest.register(name, "example-password").await?;
        logins.push(rest.login(name, "example-password", None).await?);
    }
    rest.request_friend(&logins[0].token, &bob).await?;
    rest.accept_friend(&logins[1].token, &alice).await?;

    let (a, mut a_events) = connect(&rest, &logins[0], &ca_pem).await?;
    let (b, mut b_events) = connect(&rest, &logins[1], &ca_pem).await?;

    let sent = a.send(&UserId::parse(&bob)?, b"hello from the SDK").await?;
    println!("{alice}: SENT seq {}", sent.seq);
    if let Some(Event::Message(m)) = b_events.recv().await {
        println!("{bob}: got {:?} from {}", m.text(), m.from);
        b.mark_read(m.seq)?;
    }
    for _ in 0..2 {
        if let Some(Event::Receipt(r)) = a_events.recv().await {
            println!("{alice}: {:?} for seq {}", r.kind, r.seq);
        }
    }
    a.close().await;
    b.close().await;
    Ok(())
}

async fn connect(
    rest: &Rest,
    login: &LoginResponse,
    ca_pem: &str,
) -> anyhow::Result<(Client, quiver_sdk::Events)> {
    let keys: HashMap<UserId, FriendKey> = rest
        .friends(&login.token)
        .await?
        .friends
        .into_iter()
        .filter_map(|f| Some((f.user, FriendKey(quiver_sdk::key_from_hex(&f.key)?))))
        .collect();
    let mut options = ConnectOptions::new(login.quic_addr.parse()?, ca_pem, &login.token);
    options.keys = keys;
    Ok(Client::connect(options).await?)
}
