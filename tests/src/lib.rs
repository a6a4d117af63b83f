//! # quiver-tests — the end-to-end harness
//!
//! [`TestNode`] starts a real node in-process (real QUIC on loopback, real sled in a
//! temporary folder, port 0); [`TestUser`] registers and logs in over real HTTPS and
//! connects real SDK clients. Helpers wait for events with a timeout so a missing event
//! fails the test instead of hanging it. [`relay::Relay`] puts loss, duplication,
//! reordering and outages between a client and a node.

pub mod gateway;
pub mod mesh;
pub mod netns;
pub mod relay;

use anyhow::{bail, Context};
use quiver_sdk::{
    Client, ConnectOptions, Event, Events, FriendKey, LoginResponse, Message, Receipt, ReceiptKind,
    Rest, Seq, UserId,
};
use quiver_server::{Config, Node};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a test waits for an event that should come.
pub const WAIT: Duration = Duration::from_secs(15);

/// Logs to the test output when `QUIVER_TEST_LOG` is set (e.g. `quiver_server=debug`).
pub fn init_tracing() {
    if let Ok(filter) = std::env::var("QUIVER_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A node running in this process on its own data folder.
pub struct TestNode {
    node: Option<Node>,
    config: Config,
    dir: tempfile::TempDir,
    /// The QUIC and HTTPS addresses of the last node stopped.
    last_addrs: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    /// PEM of the node's dev CA.
    pub ca_pem: String,
}

impl TestNode {
    /// Starts a node with default limits.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts a node after `adjust` has changed its configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        Self::start_inner(None, adjust).await
    }

    /// Starts a node whose certificates (set by `adjust`) clients verify with `ca_pem`.
    pub async fn start_with_ca(
        ca_pem: String,
        adjust: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        Self::start_inner(Some(ca_pem), adjust).await
    }

    async fn start_inner(
        ca_pem: Option<String>,
        adjust: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        init_tracing();
        let dir = tempfile::tempdir()?;
        let mut config = Config {
            data_dir: dir.path().join("node"),
            quic_addr: "127.0.0.1:0".parse()?,
            http_addr: "127.0.0.1:0".parse()?,
            ..Config::default()
        };
        adjust(&mut config);
        let node = Node::start(config.clone()).await.context("starting node")?;
        let ca_pem = match ca_pem {
            Some(pem) => pem,
            None => std::fs::read_to_string(node.ca_cert().context("dev CA")?)?,
        };
        Ok(Self {
            node: Some(node),
            config,
            dir,
            last_addrs: None,
            ca_pem,
        })
    }

    /// The running node.
    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("node is running")
    }

    /// Sessions that passed Hello since the node (re)started.
    pub fn sessions_opened(&self) -> u64 {
        self.node().sessions_opened()
    }

    /// Conversation streams open now.
    pub fn open_conversations(&self) -> u64 {
        self.node().open_conversations()
    }

    /// Chat messages refused for going over a connection's rate limit.
    pub fn rate_limited(&self) -> u64 {
        self.node().rate_limited()
    }

    /// Entries pushed and not yet acknowledged, over all sessions.
    pub fn push_backlog(&self) -> u64 {
        self.node().push_backlog()
    }

    /// The node's QUIC address.
    pub fn quic_addr(&self) -> std::net::SocketAddr {
        self.node().quic_addr()
    }

    /// The node's data folder.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// A REST client for the node.
    pub fn rest(&self) -> Rest {
        Rest::new(
            &format!("https://{}", self.node().http_addr()),
            &self.ca_pem,
        )
        .expect("rest")
    }

    /// Stops the node gracefully (connections are closed) and starts it again on the same
    /// data folder. Addresses change; tokens stay valid (the key is in the folder).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.restart_after(|_| Ok(())).await
    }

    /// Starts the node again (after [`TestNode::stop`], or while it runs) on the same data
    /// folder and the same QUIC and HTTPS ports: clients that keep the old address find
    /// it again.
    pub async fn restart_on_same_ports(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        if let Some((quic, http)) = self.last_addrs {
            self.config.quic_addr = quic;
            self.config.http_addr = http;
        }
        self.restart().await
    }

    /// [`TestNode::restart`], running `between` on the data folder while the node is down
    /// (to damage or inspect what it stored).
    pub async fn restart_after(
        &mut self,
        between: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.stop().await;
        between(&self.config.data_dir)?;
        self.node = Some(
            Node::start(self.config.clone())
                .await
                .context("restarting node")?,
        );
        Ok(())
    }

    /// Registers `name` and logs in once.
    pub async fn user(&self, name: &str) -> anyhow::Result<TestUser> {
        let password = format!("{name}-password");
        self.rest().register(name, &password).await?;
        let login = self.rest().login(name, &password, None).await?;
        Ok(TestUser {
            id: UserId::parse(name)?,
            password,
            login,
        })
    }

    /// Connects `user` (this device), loading friendship keys first.
    pub async fn connect(&self, user: &TestUser) -> anyhow::Result<(Client, Events)> {
        self.connect_from(user, None).await
    }

    /// Connects `user`, telling the SDK the app has seen everything up to `cursor`.
    pub async fn connect_from(
        &self,
        user: &TestUser,
        cursor: Option<Seq>,
    ) -> anyhow::Result<(Client, Events)> {
        self.connect_with(user, |o| o.cursor = cursor).await
    }

    /// Connects `user` after `adjust` has changed the SDK's options.
    pub async fn connect_with(
        &self,
        user: &TestUser,
        adjust: impl FnOnce(&mut ConnectOptions),
    ) -> anyhow::Result<(Client, Events)> {
        let friends = self.rest().friends(&user.login.token).await?;
        let keys: HashMap<UserId, FriendKey> = friends
            .friends
            .into_iter()
            .map(|f| {
                (
                    f.user,
                    FriendKey(quiver_sdk::key_from_hex(&f.key).expect("hex key")),
                )
            })
            .collect();
        let mut options = ConnectOptions::new(self.quic_addr(), &self.ca_pem, &user.login.token);
        options.keys = keys;
        adjust(&mut options);
        Ok(Client::connect(options).await?)
    }

    /// Makes `a` and `b` friends.
    pub async fn befriend(&self, a: &TestUser, b: &TestUser) -> anyhow::Result<()> {
        self.rest()
            .request_friend(&a.login.token, b.id.as_str())
            .await?;
        self.rest()
            .accept_friend(&b.login.token, a.id.as_str())
            .await?;
        Ok(())
    }

    /// Stops the node gracefully and keeps it stopped until [`TestNode::restart`].
    pub async fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            self.last_addrs = Some((node.quic_addr(), node.http_addr()));
            node.shutdown().await;
        }
    }

    /// Stops the node.
    pub async fn shutdown(self) {
        drop(self.shutdown_keeping_data().await);
    }

    /// Stops the node and hands over its data folder, which lives as long as the result.
    pub async fn shutdown_keeping_data(mut self) -> tempfile::TempDir {
        self.stop().await;
        self.dir
    }
}

/// A registered, logged-in user (one device).
pub struct TestUser {
    /// The user.
    pub id: UserId,
    /// The password.
    pub password: String,
    /// This device's login.
    pub login: LoginResponse,
}

impl TestUser {
    /// The same user with another token (to test bad tokens).
    pub fn clone_with_token(&self, token: &str) -> TestUser {
        let mut login = self.login.clone();
        login.token = token.into();
        TestUser {
            id: self.id.clone(),
            password: self.password.clone(),
            login,
        }
    }

    /// Logs the same user in as another device.
    pub async fn new_device(&self, node: &TestNode) -> anyhow::Result<TestUser> {
        let login = node
            .rest()
            .login(self.id.as_str(), &self.password, None)
            .await?;
        Ok(TestUser {
            id: self.id.clone(),
            password: self.password.clone(),
            login,
        })
    }
}

/// The next event, connection state changes included, or an error after [`WAIT`].
pub async fn next_any_event(events: &mut Events) -> anyhow::Result<Event> {
    match tokio::time::timeout(WAIT, events.recv()).await {
        Ok(Some(event)) => Ok(event),
        Ok(None) => bail!("event stream ended"),
        Err(_) => bail!("no event within {WAIT:?}"),
    }
}

/// The next event that is not a connection state change, or an error after [`WAIT`].
pub async fn next_event(events: &mut Events) -> anyhow::Result<Event> {
    loop {
        match next_any_event(events).await? {
            Event::Connection(_) => continue,
            event => return Ok(event),
        }
    }
}

/// The next event, which must be a message.
pub async fn next_message(events: &mut Events) -> anyhow::Result<Message> {
    match next_event(events).await? {
        Event::Message(m) => Ok(m),
        other => bail!("expected a message, got {other:?}"),
    }
}

/// The next event, which must be a receipt.
pub async fn next_receipt(events: &mut Events) -> anyhow::Result<Receipt> {
    match next_event(events).await? {
        Event::Receipt(r) => Ok(r),
        other => bail!("expected a receipt, got {other:?}"),
    }
}

/// Collects `n` messages, skipping receipts (a device that sends and receives gets both).
pub async fn messages(events: &mut Events, n: usize) -> anyhow::Result<Vec<Message>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match next_event(events).await? {
            Event::Message(m) => out.push(m),
            Event::Receipt(_) => {}
            other => bail!("unexpected event {other:?}"),
        }
    }
    Ok(out)
}

/// Collects receipts of `kind` until `n` have arrived, skipping other receipts and failing
/// on anything else.
pub async fn receipts(
    events: &mut Events,
    kind: ReceiptKind,
    n: usize,
) -> anyhow::Result<Vec<Receipt>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match next_event(events).await? {
            Event::Receipt(r) if r.kind == kind => out.push(r),
            Event::Receipt(_) => {}
            other => bail!("unexpected event {other:?}"),
        }
    }
    Ok(out)
}

/// Asserts that no event but connection state changes arrives within `quiet`.
pub async fn assert_quiet(events: &mut Events, quiet: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + quiet;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if !matches!(event, Event::Connection(_)) {
            bail!("expected silence, got {event:?}");
        }
    }
    Ok(())
}

/// Checks `condition` every 10 ms until it holds, or fails after [`WAIT`].
pub async fn wait_for<F: std::future::Future<Output = bool>>(
    mut condition: impl FnMut() -> F,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        if tokio::time::Instant::now() >= deadline {
            bail!("condition not met within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Every file below `dir`.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Runs the futures as tasks and collects their outputs in order
/// (`futures::future::join_all` without the dependency).
pub async fn futures_join_all<F: std::future::Future + Send + 'static>(
    fs: impl IntoIterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}
