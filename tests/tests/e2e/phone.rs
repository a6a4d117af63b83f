//! The phone app of the namespace tests: `phone_child` run inside the phone's network
//! namespace, its lines read as they come, with when.

use anyhow::{ensure, Context};
use quiver_sdk::{Client, Events};
use quiver_tests::netns::Phone;
use quiver_tests::{TestNode, TestUser, WAIT};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A node listening on every address, Alice beside it, and Bob's phone in its namespace
/// (friends).
pub struct PhoneScene {
    pub phone: Phone,
    pub node: TestNode,
    pub alice: TestUser,
    pub bob: TestUser,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl PhoneScene {
    pub async fn new() -> anyhow::Result<Self> {
        let phone = Phone::new()?;
        let node =
            TestNode::start_with(|c| c.quic_addr = "0.0.0.0:0".parse().expect("addr")).await?;
        let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
        node.befriend(&alice, &bob).await?;
        let key = node.rest().friends(&bob.login.token).await?.friends[0]
            .key
            .clone();
        let dir = tempfile::tempdir()?;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &node.ca_pem)?;
        let server = std::net::SocketAddr::from((phone.server_ip(), node.quic_addr().port()));
        let args = vec![
            server.to_string(),
            ca.display().to_string(),
            bob.login.token.clone(),
            alice.id.to_string(),
            key,
        ];
        Ok(Self {
            phone,
            node,
            alice,
            bob,
            args,
            _dir: dir,
        })
    }

    /// Starts Bob's phone app with `extra` options and waits until it is online.
    pub async fn start_app(&self, extra: &[&str]) -> anyhow::Result<PhoneApp> {
        let mut args = self.args.clone();
        args.extend(extra.iter().map(|a| a.to_string()));
        let app = PhoneApp::start(&self.phone, &args)?;
        let started = Instant::now();
        loop {
            let mut lines = app.take();
            if let Some(at) = lines.iter().position(|(_, l)| l == "online") {
                // What came after `online` is kept for the test.
                app.keep(lines.split_off(at + 1));
                return Ok(app);
            }
            ensure!(started.elapsed() < WAIT, "the phone did not come online");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Alice, connected over loopback.
    pub async fn alice_client(&self) -> anyhow::Result<(Client, Events)> {
        let port = self.node.quic_addr().port();
        self.node
            .connect_with(&self.alice, |o| o.addr = ([127, 0, 0, 1], port).into())
            .await
    }
}

/// The phone, a child process in its namespace, and its lines with when they came.
pub struct PhoneApp {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    kept: std::sync::Mutex<Vec<(Instant, String)>>,
}

impl PhoneApp {
    pub fn start(phone: &Phone, args: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &phone.ns,
                env!("CARGO_BIN_EXE_phone_child"),
            ])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            child,
            lines,
            kept: Default::default(),
        })
    }

    /// Every line that came until now (and was not taken before).
    pub fn take(&self) -> Vec<(Instant, String)> {
        let mut lines = std::mem::take(&mut *self.kept.lock().unwrap_or_else(|p| p.into_inner()));
        lines.extend(self.lines.try_iter());
        lines
    }

    fn keep(&self, lines: Vec<(Instant, String)>) {
        *self.kept.lock().unwrap_or_else(|p| p.into_inner()) = lines;
    }
}

impl Drop for PhoneApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
