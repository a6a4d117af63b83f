//! What the process-level tests share: flags for a node that does not rate-limit, users
//! made friends over REST, and an SDK client that logs in, loads its friends' keys and
//! reconnects quickly.
//!
//! Each user has one device, made when they register: a device logged in later would
//! start at the inbox's head (it pages what came before), and these tests check that
//! the device gets every message.

use quiver_sdk::{Client, ConnectOptions, DeviceId, Events, FriendKey, Rest};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Each user's one device, by name.
fn devices() -> &'static Mutex<HashMap<String, DeviceId>> {
    static DEVICES: OnceLock<Mutex<HashMap<String, DeviceId>>> = OnceLock::new();
    DEVICES.get_or_init(Mutex::default)
}

/// `user`'s device, made at registration.
fn device_of(user: &str) -> Option<DeviceId> {
    devices().lock().unwrap().get(user).copied()
}

/// These tests are about crashes, not rate limits: let senders go as fast as they can.
pub const FAST: &[&str] = &[
    "--messages-per-sec",
    "1000000",
    "--message-burst",
    "1000000",
];

/// Logs `user` in (password `{user}-password`) and connects to `quic`, retrying quickly.
pub async fn connect(
    rest: &Rest,
    quic: SocketAddr,
    ca: &str,
    user: &str,
) -> anyhow::Result<(Client, Events)> {
    let password = format!("{user}-password");
    let login = rest.login(user, &password, device_of(user)).await?;
    let mut options = ConnectOptions::new(quic, ca, &login.token);
    for friend in rest.friends(&login.token).await?.friends {
        let key = quiver_sdk::key_from_hex(&friend.key).expect("hex key");
        options.keys.insert(friend.user, FriendKey(key));
    }
    options.backoff_min = Duration::from_millis(50);
    options.backoff_max = Duration::from_millis(500);
    options.connect_timeout = Duration::from_secs(2);
    // A client learns that a node died when it next sends: messages waiting for SENT are
    // written again after this long.
    options.resend_after = Duration::from_secs(1);
    Ok(Client::connect(options).await?)
}

/// Registers each user (password `{user}-password`) through `rest`, which makes it their
/// home node.
pub async fn register(rest: &Rest, users: &[&str]) -> anyhow::Result<()> {
    for user in users {
        let password = format!("{user}-password");
        rest.register(user, &password).await?;
        let device = rest.login(user, &password, None).await?.device;
        devices().lock().unwrap().insert(user.to_string(), device);
    }
    Ok(())
}

/// Makes `a` and `b` (registered with [`register`]) friends.
pub async fn befriend(rest: &Rest, a: &str, b: &str) -> anyhow::Result<()> {
    let a_token = rest
        .login(a, &format!("{a}-password"), device_of(a))
        .await?
        .token;
    let b_token = rest
        .login(b, &format!("{b}-password"), device_of(b))
        .await?
        .token;
    rest.request_friend(&a_token, b).await?;
    rest.accept_friend(&b_token, a).await?;
    Ok(())
}
