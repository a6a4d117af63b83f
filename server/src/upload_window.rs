//! A connection's receive window: chat-sized, and file-sized while it uploads a file.
//!
//! The window bounds what a connection may send beyond what the node has read. Under many
//! busy senders the sum of their windows is what can pile up in the node's UDP socket
//! buffer, and what does not fit is dropped by the kernel and costs its sender a loss
//! recovery (a retransmission and a congestion window cut): a chat-sized window
//! (`[limits] receive_window`) keeps that sum small. A file upload is many chats' worth
//! and its speed over a long path is its window per round trip, so while one runs the
//! connection gets `upload_receive_window`, and the chat size again when the last ends.
//! The count lives here, node-wide, rather than in each session: every idle connection
//! would carry it.

use std::collections::HashMap;
use std::sync::Mutex;

/// The uploads running on each connection of the node, which decide its receive window.
/// Node-wide, keyed by the connection's stable id, and only while uploads run: an idle
/// session holds nothing for it.
#[derive(Debug)]
pub struct UploadWindows {
    /// Uploads running, by connection; the window is changed under this lock, so a start
    /// and an end that cross cannot leave the wrong size behind.
    running: Mutex<HashMap<usize, u32>>,
    sizes: Sizes,
}

/// The two sizes of a connection's window, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// With no upload running.
    pub chat: u32,
    /// While one runs.
    pub upload: u32,
}

impl UploadWindows {
    /// Windows of `sizes`.
    pub fn new(sizes: Sizes) -> Self {
        Self {
            running: Mutex::default(),
            sizes,
        }
    }

    /// An upload starts on `conn`: its window is `sizes.upload` until every
    /// [`Uploading`] made for it here is dropped, then `sizes.chat`.
    pub fn start(&self, conn: &quinn::Connection) -> Uploading<'_> {
        let mut running = self.running();
        let count = running.entry(conn.stable_id()).or_insert(0);
        if *count == 0 {
            conn.set_receive_window(self.sizes.upload.into());
        }
        *count += 1;
        Uploading {
            windows: self,
            conn: conn.clone(),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<usize, u32>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One upload running; dropping it ends it.
pub struct Uploading<'a> {
    windows: &'a UploadWindows,
    conn: quinn::Connection,
}

impl Drop for Uploading<'_> {
    fn drop(&mut self) {
        let mut running = self.windows.running();
        let id = self.conn.stable_id();
        let Some(count) = running.get_mut(&id) else {
            return;
        };
        *count = count.saturating_sub(1);
        if *count == 0 {
            running.remove(&id);
            self.conn.set_receive_window(self.windows.sizes.chat.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    const CHAT: u32 = 16 * 1024;
    const UPLOAD: u32 = 1024 * 1024;
    const QUIET: Duration = Duration::from_millis(300);

    /// A node-side endpoint with the chat window and a client connected to it, over
    /// real QUIC on loopback.
    async fn pair() -> anyhow::Result<(quinn::Connection, quinn::Connection, tempfile::TempDir)> {
        let dir = tempfile::tempdir()?;
        let certs = quiver_certs::ensure_dev_certs(dir.path())?;
        let identity = crate::tls::Identity::load(&certs.node_cert, &certs.node_key)?;
        let mut transport = quinn::TransportConfig::default();
        transport
            .stream_receive_window((4 * UPLOAD).into())
            .receive_window(CHAT.into());
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(identity.quic()?));
        config.transport_config(Arc::new(transport));
        let server = quinn::Endpoint::server(config, "127.0.0.1:0".parse()?)?;
        let ca = std::fs::read_to_string(&certs.ca_cert)?;
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let keep_alive = Duration::from_secs(5);
        let tls = quiver_sdk::tls::quic_config(&ca, keep_alive, Duration::from_secs(30))
            .map_err(anyhow::Error::msg)?;
        client.set_default_client_config(tls);
        let connecting = client.connect(server.local_addr()?, "127.0.0.1")?;
        let incoming = server.accept().await.ok_or(anyhow::anyhow!("no client"))?;
        let (node, app) = tokio::try_join!(incoming, connecting)?;
        Ok((node, app, dir))
    }

    /// Writes 1 KiB at a time to a new stream of `app` for as long as flow control lets
    /// it, counting what was taken.
    fn writer(app: &quinn::Connection) -> Arc<AtomicUsize> {
        let written = Arc::new(AtomicUsize::new(0));
        let (app, count) = (app.clone(), written.clone());
        tokio::spawn(async move {
            let mut send = app.open_bi().await?.0;
            loop {
                send.write_all(&[7; 1024]).await?;
                count.fetch_add(1024, Ordering::SeqCst);
            }
            #[allow(unreachable_code)]
            anyhow::Ok(())
        });
        written
    }

    /// Waits until `written` reaches `window` (a busy machine may only delay it), then
    /// checks that nothing more is taken for `QUIET`: the window is exactly that.
    async fn fills(written: &AtomicUsize, window: usize, what: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while written.load(Ordering::SeqCst) < window {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{what}: {} of {window} bytes taken in 20 s",
                written.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(QUIET).await;
        assert_eq!(written.load(Ordering::SeqCst), window, "{what}");
        Ok(())
    }

    /// Reads `bytes` from `recv`, which gives their flow-control credit back.
    async fn read(recv: &mut quinn::RecvStream, bytes: usize) -> anyhow::Result<()> {
        recv.read_exact(&mut vec![0; bytes]).await?;
        Ok(())
    }

    #[tokio::test]
    async fn an_upload_widens_the_window_and_the_last_ones_end_narrows_it() -> anyhow::Result<()> {
        let (node, app, _dir) = pair().await?;
        let written = writer(&app);
        // The node does not read: the app may send the chat window and no more.
        let (_, mut recv) = node.accept_bi().await?;
        let chat = CHAT as usize;
        fills(&written, chat, "the chat window").await?;

        let windows = UploadWindows::new(Sizes {
            chat: CHAT,
            upload: UPLOAD,
        });
        let first = windows.start(&node);
        let second = windows.start(&node);
        let wide = UPLOAD as usize;
        fills(&written, wide, "the upload window").await?;

        // One of two uploads ends: the window stays wide.
        drop(first);
        read(&mut recv, wide).await?;
        fills(&written, 2 * wide, "still the upload window").await?;

        // The last ends: what was granted stays granted, and once it is read the window
        // is the chat's again.
        drop(second);
        read(&mut recv, wide).await?;
        fills(&written, 2 * wide + chat, "the chat window again").await?;
        assert!(
            windows.running().is_empty(),
            "nothing kept for the connection"
        );
        Ok(())
    }
}
