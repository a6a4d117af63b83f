//! [`NodeProcess`]: a `quiver-server` process on loopback, for benchmarks and crash tests.

use anyhow::Context;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A running `quiver-server` process. Killed (SIGKILL) when dropped.
pub struct NodeProcess {
    child: Mutex<Child>,
    /// Its QUIC address.
    pub quic: SocketAddr,
    /// Its HTTPS address.
    pub http: SocketAddr,
    /// How it was started, to start it again.
    binary: PathBuf,
    data: PathBuf,
    extra: Vec<String>,
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
        let (child, quic, http) = spawn(binary, data, quic, http, extra)?;
        Ok(Self {
            child: Mutex::new(child),
            quic,
            http,
            binary: binary.to_path_buf(),
            data: data.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the node with SIGTERM and starts it again on the same data folder and
    /// addresses; returns how long the new process took to serve (until its banner).
    pub fn restart(&self) -> anyhow::Result<Duration> {
        self.terminate(Duration::from_secs(30))?;
        let started = Instant::now();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let (quic, http) = (self.quic.to_string(), self.http.to_string());
        let (child, ..) = spawn(&self.binary, &self.data, &quic, &http, &extra)?;
        let took = started.elapsed();
        *self.child() = child;
        Ok(took)
    }

    /// Kills the process with SIGKILL (no shutdown, no final flush) and reaps it.
    pub fn kill(&self) {
        let mut child = self.child();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Asks the process to stop (SIGTERM, as an init system would) and waits up to
    /// `within` for it to exit; returns its exit status.
    pub fn terminate(&self, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child();
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        anyhow::ensure!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "still running {within:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// CPU time the node has used so far (user and system), from `/proc` (Linux).
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let pid = self.child().id();
        process_cpu_time(&pid.to_string())
    }

    /// Resident memory of the process, from `/proc` (Linux).
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let pid = self.child().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
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

/// CPU time (user and system) process `pid` has used so far ("self": this one), from
/// `/proc` (Linux).
pub fn process_cpu_time(pid: &str) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // After the command name (in parentheses, which may hold spaces): fields 14 and
    // 15 of proc(5), utime and stime, in clock ticks.
    let rest = stat.rsplit_once(')').context("no comm")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    let tick = crate::steal::clock_tick().context("the clock tick (getconf CLK_TCK)")?;
    tick.checked_mul(u32::try_from(ticks)?)
        .context("CPU time out of range")
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `binary` and reads its addresses from the start-up banner.
fn spawn(
    binary: &Path,
    data: &Path,
    quic: &str,
    http: &str,
    extra: &[&str],
) -> anyhow::Result<(Child, SocketAddr, SocketAddr)> {
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
    Ok((child, quic, http))
}
