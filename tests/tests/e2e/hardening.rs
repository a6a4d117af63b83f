//! What an outside attack found (issue 16), each as the attacker did it, while an honest
//! pair chats beside it and loses nothing: data other local users could read, HTTPS
//! connections held for ever, uploads that cost inodes and descriptors, half-open QUIC
//! handshakes, and a login limit that locked the owner out.

use crate::hostile::{honest_chat_still_works, scene_with};
use crate::raw;
use quiver_proto::files::{BlobId, FileResponse};
use quiver_proto::{encode_frame, ConversationRequest, ErrorCode};
use quiver_tests::*;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether `stream` is closed by the other side within `within`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// A TCP connection to `to` from the loopback address `from` (any of 127.0.0.0/8).
async fn tcp_from(from: IpAddr, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

#[tokio::test]
async fn the_data_folder_and_every_file_in_it_are_private() -> anyhow::Result<()> {
    // A folder an older version (or an operator's copy) left open to everyone.
    let parent = tempfile::tempdir()?;
    let data = parent.path().join("node");
    std::fs::create_dir(&data)?;
    let loose = data.join("left-over");
    std::fs::write(&loose, b"x")?;
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in [(&data, 0o755), (&loose, 0o644)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    let s = scene_with(|c| c.data_dir = data.clone()).await?;
    let (a, _a_events) = s.node.connect(&s.alice).await?;
    let (_b, mut b_events) = s.node.connect(&s.bob).await?;
    honest_chat_still_works(&s, &a, &mut b_events, 5).await?;
    let photo = parent.path().join("photo.bin");
    std::fs::write(&photo, vec![7u8; 100_000])?;
    a.send_file(&s.bob.id, &photo, "image/jpeg", |_| {}).await?;

    assert_eq!(std::fs::metadata(&data)?.mode() & 0o777, 0o700);
    let files = files_below(&data);
    assert!(
        files.len() > 5,
        "sled, the inbox log, a blob, certs, secrets"
    );
    for file in &files {
        let mode = std::fs::symlink_metadata(file)?.mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", file.display());
    }
    for key in ["certs/node.key", "certs/ca.key", "secrets/token.key"] {
        assert_eq!(
            std::fs::metadata(data.join(key))?.mode() & 0o777,
            0o600,
            "{key}"
        );
    }
    // As the attacker did it: another local user tries to read the inbox log.
    if is_root() {
        let log = files
            .iter()
            .find(|f| f.starts_with(data.join("inbox")))
            .expect("an inbox log file");
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(log)
            .output()?;
        assert!(!out.status.success(), "nobody read the inbox log");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")))
        .unwrap_or(false)
}

#[tokio::test]
async fn https_clients_that_hold_connections_are_cut_and_capped() -> anyhow::Result<()> {
    let s = scene_with(|c| {
        c.http.max_connections = 24;
        c.http.max_connections_per_address = 6;
        c.http.header_timeout_ms = 1_000;
        c.http.idle_timeout_ms = 1_500;
    })
    .await?;
    let http = s.node.node().http_addr();
    let metrics = s.node.node().metrics();
    let (a, _a_events) = s.node.connect(&s.alice).await?;
    let (_b, mut b_events) = s.node.connect(&s.bob).await?;

    // One host: far more plain TCP connections than its share; they are cut at once.
    let attacker: IpAddr = "127.0.0.2".parse()?;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(tcp_from(attacker, http).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut cut_at_once = 0;
    for conn in &mut held {
        cut_at_once += usize::from(closed_within(conn, Duration::from_millis(20)).await);
    }
    assert_eq!(cut_at_once, 14, "six held, the rest closed at once");

    // Many hosts: never more than the total cap open.
    let mut crowd = Vec::new();
    for host in 3..10 {
        for _ in 0..6 {
            crowd.push(tcp_from(format!("127.0.0.{host}").parse()?, http).await?);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let open = metrics.http_open.load(Ordering::Relaxed);
    assert!(open <= 24, "{open} open, over the cap of 24");
    assert!(metrics.http_refused.load(Ordering::Relaxed) >= 14 + 24);

    // Idle, before TLS: cut at the handshake timeout, and the slots are free again.
    for conn in held.iter_mut().chain(crowd.iter_mut()) {
        assert!(closed_within(conn, Duration::from_secs(3)).await);
    }
    drop((held, crowd));

    // After TLS: half a header, an idle keep-alive HTTP/1, an idle HTTP/2 connection.
    let tls = quiver_sdk::tls::rustls_config(&s.node.ca_pem, &[b"http/1.1"])
        .map_err(anyhow::Error::msg)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let mut partial = connector
        .connect(name.clone(), tcp_from(attacker, http).await?)
        .await?;
    partial
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        .await?;
    let mut keep_alive = connector
        .connect(name, tcp_from(attacker, http).await?)
        .await?;
    keep_alive
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let mut answer = [0u8; 12];
    keep_alive.read_exact(&mut answer).await?;
    assert_eq!(&answer, b"HTTP/1.1 200");
    let h2 = reqwest_from(&s.node.ca_pem, attacker)?;
    let base = format!("https://{http}");
    let health = h2.get(format!("{base}/v1/health")).send().await?;
    assert_eq!(health.version(), reqwest::Version::HTTP_2);
    let started = Instant::now();
    assert!(
        closed_within(&mut partial, Duration::from_secs(4)).await,
        "half a header"
    );
    assert!(
        closed_within(&mut keep_alive, Duration::from_secs(4)).await,
        "idle keep-alive"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    wait_for(|| async { metrics.http_open.load(Ordering::Relaxed) == 0 }).await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the idle HTTP/2 connection outlived the idle timeout"
    );

    // Meanwhile the REST API and the chat served everyone else.
    s.node
        .rest()
        .login("alice", &s.alice.password, None)
        .await?;
    honest_chat_still_works(&s, &a, &mut b_events, 20).await?;
    Ok(())
}

/// A reqwest client (HTTP/2 when the node offers it) whose connections come from `from`.
fn reqwest_from(ca_pem: &str, from: IpAddr) -> anyhow::Result<reqwest::Client> {
    let tls = quiver_sdk::tls::rustls_config(ca_pem, &[b"h2", b"http/1.1"])
        .map_err(anyhow::Error::msg)?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .local_address(from)
        .build()?)
}

#[tokio::test]
async fn a_guesser_at_one_address_cannot_lock_the_owner_out() -> anyhow::Result<()> {
    let s = scene_with(|c| c.limits.logins_per_minute_per_account = 3).await?;
    let base = format!("https://{}", s.node.node().http_addr());
    let guesser = reqwest_from(&s.node.ca_pem, "127.0.0.2".parse()?)?;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let body = serde_json::json!({ "user": "alice", "password": format!("guess-{i}-xx") });
        let answer = guesser
            .post(format!("{base}/v1/login"))
            .json(&body)
            .send()
            .await?;
        statuses.push(answer.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429, 429, 429]);
    // The owner, from her own address, still gets in with the right password.
    // (Her first login, from the scene, used one of her three.)
    for _ in 0..2 {
        s.node
            .rest()
            .login("alice", &s.alice.password, None)
            .await?;
    }
    Ok(())
}

#[tokio::test]
async fn half_open_quic_handshakes_are_capped_and_dropped_at_their_deadline() -> anyhow::Result<()>
{
    let s = scene_with(|c| {
        c.limits.max_handshakes = 40;
        c.limits.handshake_timeout_ms = 1_000;
    })
    .await?;
    let metrics = s.node.node().metrics();
    let quic = s.node.quic_addr();
    // ClientHellos never continued: quinn-proto makes each first flight, and nothing
    // answers what the node sends back.
    let client = quiver_sdk::tls::quic_config(
        &s.node.ca_pem,
        Duration::from_secs(5),
        Duration::from_secs(30),
    )
    .map_err(anyhow::Error::msg)?;
    let mut endpoint = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    );
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut most = 0;
    let mut buf = Vec::new();
    for i in 0..600 {
        let (_, mut conn) = endpoint.connect(Instant::now(), client.clone(), quic, "127.0.0.1")?;
        buf.clear();
        let sent = conn.poll_transmit(Instant::now(), 1, &mut buf);
        let size = sent.map(|t| t.size).expect("a first flight");
        socket.send_to(&buf[..size], quic)?;
        most = most.max(metrics.handshakes.load(Ordering::Relaxed));
        if i % 5 == 4 {
            // Paced, so that the node's socket buffer does not drop the flood for us.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    most = most.max(metrics.handshakes.load(Ordering::Relaxed));
    assert!(
        most <= 40,
        "{most} handshakes in progress, over the cap of 40"
    );
    assert!(most >= 20, "the flood reached the node: {most}");
    let refused = metrics.handshakes_refused.load(Ordering::Relaxed);
    assert!(refused >= 450, "{refused} refused or retried");

    // An honest client gets in meanwhile (through a Retry if it must), and chats.
    let (a, _a_events) = s.node.connect(&s.alice).await?;
    let (_b, mut b_events) = s.node.connect(&s.bob).await?;
    honest_chat_still_works(&s, &a, &mut b_events, 10).await?;
    // The half-open ones are gone at their deadline.
    wait_for(|| async { metrics.handshakes.load(Ordering::Relaxed) == 0 }).await?;
    assert!(metrics.handshakes_timed_out.load(Ordering::Relaxed) >= 20);
    Ok(())
}

/// Opens an upload stream of `size` bytes for `blob` and returns it with the answer.
async fn upload(
    conn: &quinn::Connection,
    blob: BlobId,
    size: u64,
) -> anyhow::Result<(quinn::SendStream, quinn::RecvStream, FileResponse)> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&encode_frame(&ConversationRequest::Upload { blob, size })?)
        .await?;
    let answer = raw::read_one(&mut recv).await?;
    Ok((send, recv, answer))
}

#[tokio::test]
async fn abandoned_and_idle_uploads_cost_no_files_and_are_capped() -> anyhow::Result<()> {
    let s = scene_with(|c| {
        c.files.max_unfinished_uploads = 10;
        c.files.max_open_transfers = 4;
        c.files.transfer_idle_secs = 1;
    })
    .await?;
    let (a, _a_events) = s.node.connect(&s.alice).await?;
    let (_b, mut b_events) = s.node.connect(&s.bob).await?;
    let (conn, _ctl_send, _ctl_recv, _) = raw::hello(&s.node, &s.mallory.login.token).await?;

    // As the attacker did: announce 16 bytes, read Ready, reset. Over and over.
    let mut refused = 0;
    for i in 0..40u8 {
        let (mut send, _recv, answer) = upload(&conn, BlobId([i; 32]), 16).await?;
        match answer {
            FileResponse::Ready { offset: 0, .. } => {}
            FileResponse::Error {
                code: ErrorCode::QuotaExceeded,
                ..
            } => refused += 1,
            other => panic!("{other:?}"),
        }
        let _ = send.reset(0u32.into());
    }
    assert_eq!(refused, 30, "ten unfinished uploads at most");
    let partial = s.node.data_dir().join("blobs").join("partial");
    assert_eq!(files_below(&partial).len(), 0, "no bytes, no file");
    assert_eq!(
        s.node.node().file_usage(&s.mallory.id),
        10 * 64 * 1024,
        "each charged the 64 KiB minimum"
    );

    // Streams that sit waiting: four at most, and each let go when idle.
    let mallory_more = s.node.user("mallory2").await?;
    let (conn, _c, _r, _) = raw::hello(&s.node, &mallory_more.login.token).await?;
    let mut waiting = Vec::new();
    for i in 0..4u8 {
        let (mut send, recv, answer) = upload(&conn, BlobId([100 + i; 32]), 1 << 20).await?;
        assert!(matches!(answer, FileResponse::Ready { .. }), "{answer:?}");
        send.write_all(&[1u8; 1000]).await?; // the partial file is open now
        waiting.push((send, recv));
    }
    let (_s5, _r5, answer) = upload(&conn, BlobId([200; 32]), 1 << 20).await?;
    assert!(
        matches!(
            answer,
            FileResponse::Error {
                code: ErrorCode::TooManyStreams,
                ..
            }
        ),
        "{answer:?}"
    );
    wait_for(|| async { files_below(&partial).len() == 4 }).await?;
    let started = Instant::now();
    for (_send, recv) in &mut waiting {
        let end = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 16)).await?;
        assert!(end.is_err(), "reset for idling: {end:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    // What arrived is kept for the resume.
    let (_s6, _r6, answer) = upload(&conn, BlobId([100; 32]), 1 << 20).await?;
    assert!(
        matches!(answer, FileResponse::Ready { offset: 1000, .. }),
        "{answer:?}"
    );
    honest_chat_still_works(&s, &a, &mut b_events, 20).await?;
    Ok(())
}

#[tokio::test]
async fn a_user_churning_friendships_is_limited_and_the_others_are_not() -> anyhow::Result<()> {
    let s = scene_with(|c| c.limits.requests_per_minute_per_user = 30).await?;
    let (a, _a_events) = s.node.connect(&s.alice).await?;
    let (_b, mut b_events) = s.node.connect(&s.bob).await?;
    // Every request and remove is an fsync: Mallory churns 80 of them.
    let rest = s.node.rest();
    let (mut done, mut refused) = (0, 0);
    for i in 0..80 {
        let token = &s.mallory.login.token;
        let answer = if i % 2 == 0 {
            rest.request_friend(token, "alice").await.map(drop)
        } else {
            rest.remove_friend(token, "alice").await.map(drop)
        };
        match answer {
            Ok(()) => done += 1,
            Err(quiver_sdk::RestError::Api { status: 429, .. }) => refused += 1,
            Err(e) => anyhow::bail!("unexpected answer: {e}"),
        }
    }
    // The scene's befriending spent one of Mallory's 30 a minute.
    assert!(done <= 30, "{done} went through");
    assert_eq!(done + refused, 80);
    // Alice's own requests are hers to spend, and chat never went through REST.
    rest.friends(&s.alice.login.token).await?;
    honest_chat_still_works(&s, &a, &mut b_events, 20).await?;
    Ok(())
}

/// Sends `text` from `client` to `to`: the node's answer, or `None` if none came in `within`.
async fn try_send(
    client: &quiver_sdk::Client,
    to: &quiver_proto::UserId,
    body: &[u8],
    within: Duration,
) -> Option<Result<quiver_proto::Seq, quiver_sdk::SendError>> {
    let sent = tokio::time::timeout(within, client.send(to, body)).await;
    sent.ok().map(|r| r.map(|s| s.seq))
}

#[tokio::test]
async fn a_flooding_friend_fills_only_their_share_of_an_inbox() -> anyhow::Result<()> {
    let mut s = scene_with(|c| {
        c.inbox.max_bytes_per_sender = 256 * 1024;
        c.inbox.max_bytes_per_user = 400 * 1024;
    })
    .await?;
    let (m, _m_events) = s.node.connect(&s.mallory).await?;
    let bob = s.bob.id.clone();
    let chunk = vec![7u8; 30 * 1024];
    let mut stored = 0;
    let refused = loop {
        match try_send(&m, &bob, &chunk, Duration::from_secs(10)).await {
            Some(Ok(_)) => stored += 1,
            Some(Err(e)) => break e,
            None => anyhow::bail!("no answer"),
        }
        anyhow::ensure!(stored < 100, "never refused");
    };
    assert!(
        matches!(
            refused,
            quiver_sdk::SendError::Rejected(ErrorCode::QuotaExceeded)
        ),
        "{refused:?}"
    );
    // 30 KiB bodies (sealed: a little more): eight fit in 256 KiB, the ninth does not.
    assert_eq!(stored, 8);
    drop(m);

    // Alice's share is hers: she still reaches Bob, until the inbox as a whole is full.
    {
        let (a, _a_events) = s.node.connect(&s.alice).await?;
        let (_b, mut b_events) = s.node.connect(&s.bob).await?;
        let flood = messages(&mut b_events, 8).await?;
        assert!(flood.iter().all(|m| m.from == s.mallory.id));
        honest_chat_still_works(&s, &a, &mut b_events, 5).await?;
        let mut alices = 0;
        while let Some(Ok(_)) = try_send(&a, &bob, &chunk, Duration::from_secs(10)).await {
            alices += 1;
            anyhow::ensure!(alices < 100, "never refused");
        }
        // 13 of them (and five short lines) in 400 KiB.
        assert_eq!(alices, 5, "400 KiB in all");
    }

    // What the inbox holds is counted again from the log after a restart.
    s.node.restart().await?;
    let (m, _m_events) = s.node.connect(&s.mallory).await?;
    let again = try_send(&m, &bob, &chunk, Duration::from_secs(10)).await;
    assert!(
        matches!(
            again,
            Some(Err(quiver_sdk::SendError::Rejected(
                ErrorCode::QuotaExceeded
            )))
        ),
        "{again:?}"
    );
    Ok(())
}

/// A small tmpfs, unmounted on drop: a disk that can really fill.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path, mib: u32) -> anyhow::Result<Self> {
        std::fs::create_dir_all(at)?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .status()?;
        anyhow::ensure!(status.success(), "mount tmpfs: {status}");
        Ok(Self(at.to_owned()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn near_a_full_disk_new_chats_and_uploads_wait_and_nothing_stored_is_lost(
) -> anyhow::Result<()> {
    if !is_root() {
        eprintln!("skipped: mounting a small file system needs root (CI runs as root)");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let disk = SmallDisk::mount(&dir.path().join("small"), 96)?;
    let data = disk.0.join("node");
    let s = scene_with(|c| {
        c.data_dir = data.clone();
        c.limits.min_free_disk_bytes = 32 << 20;
        // The inbox log's segments are preallocated; keep them small on a small disk.
        c.inbox.segment_bytes = 1 << 20;
    })
    .await?;
    let (a, _a_events) = s.node.connect(&s.alice).await?;
    let (_b, mut b_events) = s.node.connect(&s.bob).await?;
    honest_chat_still_works(&s, &a, &mut b_events, 10).await?;

    // Another tenant of the disk takes it to 16 MiB short of the reserve.
    let free = quiver_server::disk::DiskBudget::new(data.clone(), 1)
        .free_bytes()
        .unwrap_or(0);
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![0u8; (free - (16 << 20)) as usize])?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A chat is refused with StorageFull (retryable: the SDK keeps it and tries again).
    let bob = s.bob.id.clone();
    let waiting = {
        let a = a.clone();
        let bob = bob.clone();
        tokio::spawn(async move { a.send(&bob, b"sent while the disk was full").await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "stored below the reserve");
    let metrics = s.node.rest().metrics().await?;
    assert!(
        !metrics.contains("quiver_errors_total{code=\"StorageFull\"} 0"),
        "{metrics}"
    );
    // So is an upload.
    let (conn, _ctl_send, _ctl_recv, _) = raw::hello(&s.node, &s.mallory.login.token).await?;
    let (_send, _recv, answer) = upload(&conn, BlobId([1; 32]), 1 << 20).await?;
    assert!(
        matches!(
            answer,
            FileResponse::Error {
                code: ErrorCode::StorageFull,
                ..
            }
        ),
        "{answer:?}"
    );

    // Room again: the waiting chat goes through, after everything sent before it.
    std::fs::remove_file(&filler)?;
    let sent = tokio::time::timeout(Duration::from_secs(30), waiting).await???;
    let got = messages(&mut b_events, 1).await?;
    assert_eq!(got[0].seq, sent.seq);
    assert_eq!(got[0].text(), "sent while the disk was full");
    honest_chat_still_works(&s, &a, &mut b_events, 10).await?;
    drop((a, _b, conn));
    s.node.shutdown().await;
    drop(disk);
    Ok(())
}

#[tokio::test]
async fn a_node_with_registration_closed_refuses_new_accounts() -> anyhow::Result<()> {
    let node = TestNode::start_with(|c| c.limits.registration_open = false).await?;
    let answer = node.rest().register("newcomer", "newcomer-password").await;
    assert!(
        matches!(
            &answer,
            Err(quiver_sdk::RestError::Api { status: 403, error, .. }) if error == "registration_closed"
        ),
        "{answer:?}"
    );
    Ok(())
}
