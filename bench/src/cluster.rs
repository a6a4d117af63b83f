//! Fixtures for mesh runs: a private `redis-server` process on a free port and a cluster CA
//! that issues node certificates. Used by the benchmark and by the tests.

use anyhow::{bail, Context};
use quiver_certs::Ca;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (TCP or UDP), found by binding port 0 and letting go.
pub fn free_port() -> anyhow::Result<u16> {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = tcp.local_addr()?.port();
    drop(tcp);
    Ok(port)
}

/// A `redis-server` process of its own, loopback only, its data in a temporary folder
/// (saved only by [`RedisServer::stop`]). Killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers. A port found free can be
    /// taken by another process (another test's Redis) before this one binds it; then
    /// it tries another.
    pub fn start() -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..5 {
            let mut server = Self {
                child: None,
                port: free_port()?,
                dir: tempfile::tempdir()?,
            };
            match server.resume() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL): Redis is gone, with everything it held.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it the way an operator would (`SHUTDOWN SAVE`): down, data kept for
    /// [`RedisServer::resume`].
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port))?;
        tcp.write_all(b"SHUTDOWN SAVE\r\n")?;
        child.wait()?;
        Ok(())
    }

    /// Starts it again on the same port, with the data saved by [`RedisServer::stop`].
    pub fn resume(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server (apt-get install redis-server)")?;
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // Another server on the port answers too: only our own process counts.
            if self.answered_by(pid) {
                return Ok(());
            }
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    bail!("redis-server on port {} exited: {status}", self.port);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        bail!("redis-server on port {} did not answer", self.port)
    }

    /// Whether the server on the port answers and is the process `pid`.
    fn answered_by(&self, pid: u32) -> bool {
        let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
        if tcp.write_all(b"INFO server\r\n").is_err() {
            return false;
        }
        // A bulk string: `$<len>\r\n`, then the text.
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = tcp.read(&mut chunk) {
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&reply);
            let whole = text.split_once("\r\n").is_some_and(|(head, body)| {
                head.strip_prefix('$')
                    .and_then(|len| len.parse::<usize>().ok())
                    .is_some_and(|len| body.len() >= len)
            });
            if whole {
                return text.contains(&format!("process_id:{pid}\r\n"));
            }
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster CA and the folder of its node certificates.
pub struct ClusterCa {
    dir: tempfile::TempDir,
}

impl ClusterCa {
    /// Makes a new CA named `name`.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        Ca::generate(name)?.save(dir.path())?;
        std::fs::write(dir.path().join("name"), name)?;
        Ok(Self { dir })
    }

    /// The CA certificate (PEM file).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join(quiver_certs::CA_CERT)
    }

    /// Issues (once) the certificate of node `id`; returns (cert, key) paths.
    pub fn node(&self, id: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let dir = self.dir.path().join(id);
        if !dir.exists() {
            std::fs::create_dir_all(&dir)?;
            let name = std::fs::read_to_string(self.dir.path().join("name"))?;
            let ca = Ca::load(self.dir.path(), &name)?;
            let sans = ["localhost", "127.0.0.1"].map(String::from);
            ca.issue_node(id, &sans)?.save(&dir)?;
        }
        Ok((
            dir.join(quiver_certs::NODE_CERT),
            dir.join(quiver_certs::NODE_KEY),
        ))
    }

    /// The CA certificate's PEM, for clients.
    pub fn ca_pem(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.ca_cert())?)
    }
}

/// Arguments that start a `quiver-server` process as mesh node `id`.
pub fn node_args(
    ca: &ClusterCa,
    redis_url: &str,
    id: &str,
    mesh_addr: SocketAddr,
) -> anyhow::Result<Vec<String>> {
    let (cert, key) = ca.node(id)?;
    let path = |p: &Path| p.display().to_string();
    Ok(vec![
        "--node-id".into(),
        id.into(),
        "--redis-url".into(),
        redis_url.into(),
        "--mesh-addr".into(),
        mesh_addr.to_string(),
        "--cluster-ca".into(),
        path(&ca.ca_cert()),
        "--cert".into(),
        path(&cert),
        "--key".into(),
        path(&key),
    ])
}
