//! [`NodeProcess`]: a `quiver-server` process on loopback, for benchmarks and crash tests.

use anyhow::Context;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `quiver-server` process. Killed (SIGKILL) when dropped.
pub struct NodeProcess {
    child: Child,
    /// Its QUIC address.
    pub quic: SocketAddr,
    /// Its HTTPS address.
    pub http: SocketAddr,
}

impl NodeProcess {
    /// Starts `binary` on `data` and reads its addresses from the start-up banner.
    /// `quic` and `http` may use port 0. `extra` are more flags for the node.
    pub fn start(
        binary: &Path,
        data: &Path,
        quic: &str,
        http: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .arg("--data-dir")
            .arg(data)
            .args(["--quic-addr", quic, "--http-addr", http, "--log", "warn"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let (mut quic, mut http) = (None, None);
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line?;
            match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["quic", addr] => quic = Some(addr.parse()?),
                ["https", url] => http = Some(url.trim_start_matches("https://").parse()?),
                _ => {}
            }
            if quic.is_some() && http.is_some() {
                break;
            }
        }
        // Keep reading, so the node never writes into a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let quic = quic.context("no quic address in the banner")?;
        let http = http.context("no https address in the banner")?;
        Ok(Self { child, quic, http })
    }

    /// Kills the process with SIGKILL (no shutdown, no final flush) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to stop (SIGTERM, as an init system would) and waits up to
    /// `within` for it to exit; returns its exit status.
    pub fn terminate(
        &mut self,
        within: std::time::Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(sent.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "still running {within:?} after SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Resident memory of the process, from `/proc` (Linux).
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .context("no VmRSS")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kib * 1024)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
