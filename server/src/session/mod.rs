//! One client connection: authenticate on the control stream, then run three loops until
//! the connection ends —
//! - **control**: acks and read marks from the device;
//! - **conversations**: one client-opened stream per peer, chats in, `Sent` out;
//! - **push**: the device's inbox from its cursor on, on one server-opened stream per peer;
//! - **groups** ([`groups`]): group streams, and the device's group feeds here and
//!   through the nodes that home its other groups.
//!
//! The device's inbox state (cursor, window, acks) is its [`Feed`] on the user's home node:
//! here when the user is homed here, else on a mesh peer through an attachment. Chats for a
//! recipient homed elsewhere are relayed stream to stream to the recipient's home node,
//! which alone answers `Sent`.

mod groups;
#[cfg(test)]
mod task_size;

use crate::auth::unix_now;
use crate::conversation::{append_chats, respond, Reply};
use crate::credit::StreamCredit;
use crate::feed::{AckTasks, Feed};
use crate::group_mesh::RemoteGroups;
use crate::groups::feed::GroupAcks;
use crate::inbox::Framed;
use crate::mesh::MAX_MESH_FRAME;
use crate::metrics::MeshKind;
use crate::net::{read_frame, varint, write_frame, FrameReadError, Reader, StreamEnd};
use crate::rate::TokenBucket;
use crate::router::Home;
use crate::shared::Shared;
use bytes::Bytes;
use quiver_proto::mesh::{AttachDown, MeshOpen};
use quiver_proto::stream::{ControlPhase, ControlStep, ConversationPhase, ConversationStep};
use quiver_proto::{
    ControlRequest, ControlResponse, ConversationRequest, ConversationResponse, DeviceId,
    ErrorCode, Seq, UserId, PROTOCOL_VERSION,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

/// At most this many waiting entry frames go to a push stream in one write.
const PUSH_WRITE_FRAMES: usize = 64;

/// Serves one incoming connection until it ends.
/// The listener counted its handshake in progress; this counts it out when it ends.
pub async fn run(incoming: Box<quinn::Incoming>, shared: Arc<Shared>) {
    let deadline = Duration::from_millis(shared.config.limits.handshake_timeout_ms);
    // Dropping an unfinished handshake closes it and frees its state.
    let handshake = tokio::time::timeout(deadline, unbox(incoming)).await;
    shared.metrics.handshakes.fetch_sub(1, Ordering::Relaxed);
    let conn = match handshake {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            shared
                .metrics
                .handshakes_timed_out
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!("handshake timed out");
            return;
        }
    };
    let remote = conn.remote_address();
    let limit = shared.config.limits.max_connections_per_address;
    // A tunnelled client counts at its real address, not its tunnel's.
    let ip = shared.tunnels.peer_ip(remote);
    let Some(_address_slot) = shared.live.connections.take(&ip, limit) else {
        tracing::info!(%remote, "too many connections from this address");
        let code = ErrorCode::TooManyConnections;
        shared.metrics.error(code);
        conn.close(varint(code), b"too many connections from this address");
        return;
    };
    let span = tracing::info_span!("conn", %remote, user = tracing::field::Empty);
    async move {
        let Hello { session, control } = match hello(&conn, &shared).await {
            Ok(hello) => hello,
            Err((code, message)) => {
                tracing::info!(%code, %message, "hello refused");
                shared.metrics.error(code);
                conn.close(varint(code), message.as_bytes());
                return;
            }
        };
        tracing::Span::current().record("user", session.user.as_str());
        shared
            .metrics
            .sessions_opened
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(device = %session.device, cursor = %session.cursor, "session open");
        let _open = Counted::new(&shared.metrics.sessions_open);
        // Logging out closes the device's live sessions through this entry.
        let entry = shared
            .live
            .sessions
            .register(&session.user, session.device, &conn);
        // Where the device is, for operators (nothing routes by it: the home node pushes
        // through the feed opened in hello). Written once that feed is open; cleared only
        // if no newer session of the device replaced it.
        let location = match shared.router.mesh() {
            Some(mesh) => {
                let registry = mesh.registry();
                registry.set_location(&session.user, session.device).await
            }
            None => None,
        };
        // A logout removes the device, then closes the sessions it can see (here, and
        // where the device's location says). One that checked its token before the removal
        // but was not yet visible must see the removal now.
        let revoked = matches!(
            shared
                .directory
                .has_device(&session.user, session.device)
                .await,
            Ok(false)
        );
        if revoked {
            let code = ErrorCode::Unauthenticated;
            shared.metrics.error(code);
            conn.close(varint(code), b"logged out");
        }
        let reason = if revoked {
            "logged out while connecting".to_string()
        } else {
            session.clone().serve(&conn, control, entry.id()).await
        };
        // Said now: a reason kept across the awaits below would take room all session.
        tracing::info!(%reason, "session closed");
        crate::datagrams::ended(&shared, &session.user, entry.id()).await;
        if let (Some(mesh), Some(location)) = (shared.router.mesh(), location) {
            let registry = mesh.registry();
            registry
                .clear_location(&session.user, session.device, &location)
                .await;
        }
    }
    .instrument(span)
    .await
}

/// Takes the value out and frees the box now: moving out of a boxed argument in place
/// would free it only when the function returns, at the end of the session.
#[expect(clippy::boxed_local, reason = "the caller's box is what this frees")]
fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}

/// An authenticated device on one connection.
struct Session {
    shared: Arc<Shared>,
    user: UserId,
    device: DeviceId,
    /// The cursor the session started from.
    cursor: Seq,
    home: HomeFeed,
    /// Chat messages this connection may still send (all its conversations together).
    send_rate: Mutex<TokenBucket>,
    /// Where the device's group acks go: its group feeds.
    group_acks: Arc<GroupAcks>,
    /// Where acks and read marks of groups homed on other nodes go (in a mesh).
    remote_groups: Option<Arc<RemoteGroups>>,
}

/// The device's feed: local, or on the home node through a mesh attachment.
enum HomeFeed {
    Local(Arc<Feed>),
    /// Boxed: most sessions are local, and every one would otherwise hold its room.
    Remote(Box<Attachment>),
}

/// A session's streams to its device's feed on the home node.
struct Attachment {
    /// Acks and read marks go up here.
    up: tokio::sync::Mutex<quinn::SendStream>,
    /// Entries and refusals come down here; taken by the push loop.
    down: Mutex<Option<quinn::RecvStream>>,
}

type Refusal = (ErrorCode, String);

/// What a hello that was let in leaves for the session's life. Kept small: an idle
/// session's task holds it in every state, and may hold its pieces twice (an async fn
/// keeps its arguments' slots beside the locals they were moved into), so the session is
/// shared and the control stream boxed.
struct Hello {
    session: Arc<Session>,
    control: Box<Control>,
}

/// The control stream after its hello.
struct Control {
    send: quinn::SendStream,
    requests: Reader<ControlPhase>,
}

async fn hello(conn: &quinn::Connection, shared: &Arc<Shared>) -> Result<Hello, Refusal> {
    let limits = &shared.config.limits;
    let wait = Duration::from_millis(limits.hello_timeout_ms);
    let late = || (ErrorCode::Unauthenticated, "no hello in time".to_string());
    let (mut send, recv) = tokio::time::timeout(wait, conn.accept_bi())
        .await
        .map_err(|_| late())?
        .map_err(|e| (ErrorCode::Malformed, e.to_string()))?;
    let mut control = Reader::new(recv, ControlPhase::default(), limits.max_frame_bytes);
    let request = tokio::time::timeout(wait, control.next())
        .await
        .map_err(|_| late())?;
    let token = match request {
        Ok(Some(ControlStep::Hello { version, .. }))
            if !(version == PROTOCOL_VERSION
                || version == 1 && shared.config.accept_v1_clients) =>
        {
            let message = format!("this node speaks version {PROTOCOL_VERSION}");
            return Err(refuse(send, ErrorCode::VersionMismatch, message).await);
        }
        Ok(Some(ControlStep::Hello { token, .. })) => {
            // The hello (a token) is the largest frame this stream carries; acks are a
            // few bytes, and an idle device would keep its room for good.
            control.release_buffer();
            token
        }
        Err(StreamEnd::Refused(ErrorCode::UnexpectedFrame)) => {
            let message = "the first frame must be hello".to_string();
            return Err(refuse(send, ErrorCode::UnexpectedFrame, message).await);
        }
        Err(StreamEnd::Refused(code)) => return Err((code, "bad hello frame".into())),
        Ok(_) | Err(StreamEnd::Failed(_)) => {
            return Err((
                ErrorCode::Malformed,
                "control stream ended before hello".into(),
            ))
        }
    };
    let claims = match shared.tokens.verify(&token, unix_now()) {
        Ok(claims) => claims,
        Err(e) => return Err(refuse(send, ErrorCode::Unauthenticated, e.to_string()).await),
    };
    match shared
        .directory
        .has_device(&claims.user, claims.device)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            let message = "token revoked: the device logged out".to_string();
            return Err(refuse(send, ErrorCode::Unauthenticated, message).await);
        }
        Err(e) => return Err(refuse(send, ErrorCode::Unavailable, e.to_string()).await),
    }
    let (home, cursor) = match open_feed(shared, &claims.user, claims.device).await {
        Ok(feed) => feed,
        Err(code) => {
            let message = "the user's inbox is unavailable now".to_string();
            return Err(refuse(send, code, message).await);
        }
    };
    let welcome = ControlResponse::Welcome {
        user: claims.user.clone(),
        device: claims.device,
        cursor,
    };
    write_frame(&mut send, &welcome)
        .await
        .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    let session = Session {
        shared: shared.clone(),
        user: claims.user,
        device: claims.device,
        cursor,
        home,
        send_rate: Mutex::new(TokenBucket::new(
            f64::from(limits.messages_per_sec),
            limits.message_burst,
            Instant::now(),
        )),
        group_acks: Arc::default(),
        remote_groups: shared.router.mesh().map(|_| Arc::default()),
    };
    Ok(Hello {
        session: Arc::new(session),
        control: Box::new(Control {
            send,
            requests: control,
        }),
    })
}

/// Opens the device's feed where its user is homed.
async fn open_feed(
    shared: &Arc<Shared>,
    user: &UserId,
    device: DeviceId,
) -> Result<(HomeFeed, Seq), ErrorCode> {
    match (shared.router.home(user).await?, shared.router.mesh()) {
        (Home::Peer(node), Some(mesh)) => {
            shared.metrics.mesh_request(MeshKind::Attach);
            let (up, down, cursor) = mesh.attach(&node, user, device).await?;
            let home = HomeFeed::Remote(Box::new(Attachment {
                up: tokio::sync::Mutex::new(up),
                down: Mutex::new(Some(down)),
            }));
            Ok((home, cursor))
        }
        _ => {
            let feed = Feed::open(shared.clone(), user.clone(), device).map_err(|e| {
                tracing::error!(error = %e, "inbox failed");
                ErrorCode::Internal
            })?;
            let cursor = feed.cursor();
            Ok((HomeFeed::Local(feed), cursor))
        }
    }
}

/// Tells the client why its hello was refused, before the connection is closed.
async fn refuse(mut send: quinn::SendStream, code: ErrorCode, message: String) -> Refusal {
    let error = ControlResponse::Error {
        code,
        message: message.clone(),
    };
    if write_frame(&mut send, &error).await.is_ok() && send.finish().is_ok() {
        // The close that follows discards unsent data: let the frame leave first.
        let _ = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
    }
    (code, message)
}

impl Session {
    /// Runs the session's loops (control, conversations, pushes, group feeds, datagrams)
    /// until one ends; returns why. `id` is the session's on this node.
    async fn serve(
        self: Arc<Self>,
        conn: &quinn::Connection,
        control: Box<Control>,
        id: u64,
    ) -> String {
        let Control { send, requests } = unbox(control);
        // The reader is boxed again for `control_loop`, which holds its arguments twice.
        let control = Arc::new(tokio::sync::Mutex::new(send));
        let datagrams =
            crate::datagrams::serve(self.shared.clone(), self.user.clone(), id, conn.clone());
        let ended = tokio::select! {
            r = datagrams => r,
            r = self.clone().control_loop(conn, control.clone(), Box::new(requests)) => r,
            r = self.clone().accept_conversations(conn) => r,
            r = self.clone().push_loop(conn, control.clone()) => r,
            r = self.clone().group_feeds(control) => r,
        };
        if let HomeFeed::Local(feed) = &self.home {
            feed.close();
        }
        ended.err().unwrap_or_else(|| "finished".into())
    }

    async fn control_loop(
        self: Arc<Self>,
        conn: &quinn::Connection,
        send: Arc<tokio::sync::Mutex<quinn::SendStream>>,
        mut requests: Box<Reader<ControlPhase>>,
    ) -> Result<(), String> {
        let mut acking = AckTasks::new();
        loop {
            let next = match acking.next_request(&mut requests).await {
                Ok(next) => next,
                Err(code) => {
                    conn.close(varint(code), b"could not record delivery");
                    return Err(format!("could not record delivery: {code}"));
                }
            };
            let step = match next {
                Ok(Some(step)) => step,
                Ok(None) => {
                    Box::pin(self.goodbye(conn, acking)).await;
                    return Err("client finished its control stream".into());
                }
                Err(StreamEnd::Refused(code)) => {
                    self.shared.metrics.error(code);
                    conn.close(varint(code), b"control stream protocol error");
                    return Err(format!("control stream: {code}"));
                }
                Err(StreamEnd::Failed(e)) => return Err(e),
            };
            // Boxed: an idle session waits above, and keeps no room for what a request
            // needs while it is handled.
            Box::pin(self.control_request(conn, &send, step, &mut acking)).await?;
        }
    }

    /// Handles one control request after `Hello`, answering a refusal on the stream.
    async fn control_request(
        &self,
        conn: &quinn::Connection,
        send: &tokio::sync::Mutex<quinn::SendStream>,
        step: ControlStep,
        acking: &mut AckTasks,
    ) -> Result<(), String> {
        let refused = match (step, &self.home) {
            (ControlStep::GroupAck(group, seq), _) => self.group_ack(&group, seq).await,
            (ControlStep::GroupRead(group, seq), _) => self.group_read(&group, seq).await,
            (step, HomeFeed::Local(feed)) => feed.handle(step, acking).await.err(),
            (step, HomeFeed::Remote(attachment)) => {
                // The home node checks it and answers refusals down the attachment.
                let mut up = attachment.up.lock().await;
                if let Err(e) = write_frame(&mut up, &ControlRequest::from(step)).await {
                    conn.close(varint(ErrorCode::Unavailable), b"home node unreachable");
                    return Err(format!("attachment failed: {e}"));
                }
                None
            }
        };
        if let Some((code, message)) = refused {
            tracing::debug!(%code, %message, "control request refused");
            let mut send = send.lock().await;
            write_frame(&mut send, &ControlResponse::Error { code, message })
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// A polite goodbye: records the acks already received, then closes.
    async fn goodbye(&self, conn: &quinn::Connection, mut acking: AckTasks) {
        acking.finish().await;
        self.group_acks.finish(Duration::from_secs(2)).await;
        if let Some(remote) = &self.remote_groups {
            remote.finish().await;
        }
        if let HomeFeed::Remote(attachment) = &self.home {
            let _ = attachment.up.lock().await.finish();
        }
        conn.close(quinn::VarInt::from_u32(0), b"bye");
    }

    async fn accept_conversations(self: Arc<Self>, conn: &quinn::Connection) -> Result<(), String> {
        let mut streams = JoinSet::new();
        let credit = StreamCredit::client(self.shared.config.limits.max_client_streams);
        let ended = credit
            .accept(conn, 1, &mut streams, |send, recv| {
                let span = tracing::debug_span!("stream", stream = %send.id());
                self.clone()
                    .stream(conn.clone(), send, recv)
                    .instrument(span)
            })
            .await;
        Err(ended.to_string())
    }

    /// One client-opened stream of `conn`: a conversation or a file transfer, by its
    /// first frame.
    async fn stream(
        self: Arc<Self>,
        conn: quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) {
        let limits = &self.shared.config.limits;
        let mut reader = Reader::new(recv, ConversationPhase::default(), limits.max_frame_bytes);
        let conversations = &self.shared.live.conversations;
        let Some(_slot) = conversations.take(&self.user, limits.max_conversations_per_user) else {
            return self
                .refuse_stream(send, reader, ErrorCode::TooManyStreams)
                .await;
        };
        let (shared, user) = (self.shared.clone(), self.user.clone());
        match reader.next().await {
            Ok(Some(ConversationStep::Open(peer))) => self.conversation(&peer, send, reader).await,
            Ok(Some(ConversationStep::OpenGroup(group))) => {
                self.group_conversation(&group, send, reader).await
            }
            Ok(Some(ConversationStep::Upload { blob, size })) => {
                let recv = reader.into_recv();
                let _wide = self.shared.uploads.start(&conn);
                crate::files::upload(shared, user, blob, size, send, recv).await
            }
            Ok(Some(ConversationStep::Download {
                blob,
                owner,
                offset,
            })) => {
                let recv = reader.into_recv();
                let access = crate::files::Access::Friends;
                crate::files::download(shared, user, owner, blob, offset, access, send, recv).await
            }
            Ok(Some(ConversationStep::GroupDownload { group, seq, offset })) => {
                let recv = reader.into_recv();
                crate::group_files::download(shared, user, group, seq, offset, true, send, recv)
                    .await
            }
            Ok(Some(
                step @ (ConversationStep::History { .. } | ConversationStep::GroupHistory { .. }),
            )) => {
                // A page costs a chat token: pages read files, and a flood must not.
                if !self.take_send_token() {
                    return self
                        .refuse_stream(send, reader, ErrorCode::RateLimited)
                        .await;
                }
                crate::history::serve(&shared, user, step, send).await
            }
            // The phase refuses a chat before Open.
            Ok(Some(ConversationStep::Chat { .. } | ConversationStep::GroupChat { .. })) => {
                self.refuse_stream(send, reader, ErrorCode::UnexpectedFrame)
                    .await
            }
            Ok(None) | Err(StreamEnd::Failed(_)) => {}
            Err(StreamEnd::Refused(code)) => self.refuse_stream(send, reader, code).await,
        }
    }

    /// Closes a stream before it became anything, with `code`.
    async fn refuse_stream(
        &self,
        mut send: quinn::SendStream,
        mut reader: Reader<ConversationPhase>,
        code: ErrorCode,
    ) {
        tracing::debug!(%code, "closing stream");
        self.shared.metrics.error(code);
        reader.stop(code);
        if write_frame(&mut send, &ConversationResponse::Error { code })
            .await
            .is_ok()
        {
            let _ = send.finish();
        }
    }

    /// One conversation stream after `Open`: chats appended here or relayed to the
    /// recipient's home node.
    async fn conversation(
        &self,
        peer: &UserId,
        send: quinn::SendStream,
        mut reader: Reader<ConversationPhase>,
    ) {
        self.answered(send, |tx| async move {
            let closing = self.open(peer, &mut reader, &tx).await;
            (reader, closing)
        })
        .await;
    }

    /// Runs `chats`, whose replies a responder task writes to `send` in order; closes
    /// the stream with the code `chats` ends with, if any.
    async fn answered<F>(
        &self,
        send: quinn::SendStream,
        chats: impl FnOnce(mpsc::Sender<Reply>) -> F,
    ) where
        F: std::future::Future<Output = (Reader<ConversationPhase>, Option<ErrorCode>)>,
    {
        let _counted = Counted::new(&self.shared.metrics.open_conversations);
        let (tx, rx) = mpsc::channel(self.shared.config.limits.send_pipeline);
        let metrics = self.shared.metrics.clone();
        let push = self.shared.push.clone();
        let responder = tokio::spawn(respond(send, rx, metrics, push));
        let (mut reader, closing) = chats(tx.clone()).await;
        if let Some(code) = closing {
            tracing::debug!(%code, "closing conversation stream");
            reader.stop(code);
            let _ = tx.send(Reply::Close(code)).await;
        }
        drop(tx);
        let _ = responder.await;
    }

    /// Serves an opened conversation; returns the code to close it with, if any.
    async fn open(
        &self,
        peer: &UserId,
        reader: &mut Reader<ConversationPhase>,
        tx: &mpsc::Sender<Reply>,
    ) -> Option<ErrorCode> {
        let router = &self.shared.router;
        if let Err(code) = router.check_friends(&self.user, peer).await {
            return Some(code);
        }
        match (router.home(peer).await, router.mesh()) {
            (Err(code), _) => Some(code),
            (Ok(Home::Peer(node)), Some(mesh)) => {
                let open = MeshOpen::Conversation {
                    from: self.user.clone(),
                    to: peer.clone(),
                };
                self.shared.metrics.mesh_request(MeshKind::Conversation);
                match mesh.open(&node, &open).await {
                    Ok(link) => self.relay(link, reader, tx).await,
                    Err(code) => Some(code),
                }
            }
            _ => {
                let allow = || self.take_send_token();
                let notify = self.shared.push.is_some();
                append_chats(router, &self.user, peer, reader, tx, notify, allow).await
            }
        }
    }

    /// Passes chats on to the recipient's home node and its answers back, in order. If
    /// the link fails, the stream closes with `Unavailable`: nothing unanswered was
    /// acknowledged, and the client sends it again.
    async fn relay(
        &self,
        (mut up, mut down): (quinn::SendStream, quinn::RecvStream),
        reader: &mut Reader<ConversationPhase>,
        tx: &mpsc::Sender<Reply>,
    ) -> Option<ErrorCode> {
        let answers_tx = tx.clone();
        let mut answers = tokio::spawn(async move {
            loop {
                match read_frame::<ConversationResponse>(&mut down, MAX_MESH_FRAME).await {
                    Ok(ConversationResponse::Error { code }) => return Some(code),
                    Ok(answer) => {
                        if answers_tx.send(Reply::Forwarded(answer)).await.is_err() {
                            return None;
                        }
                    }
                    Err(FrameReadError::Finished) => return None,
                    Err(_) => return Some(ErrorCode::Unavailable),
                }
            }
        });
        let closing = loop {
            // Reader::next is cancel-safe: a frame half read when the answers end is kept.
            let step = tokio::select! {
                step = reader.next() => step,
                ended = &mut answers => {
                    return Some(ended.ok().flatten().unwrap_or(ErrorCode::Unavailable));
                }
            };
            match step {
                Ok(Some(ConversationStep::Chat { .. } | ConversationStep::GroupChat { .. }))
                    if !self.take_send_token() =>
                {
                    break Some(ErrorCode::RateLimited);
                }
                Ok(Some(
                    chat @ (ConversationStep::Chat { .. } | ConversationStep::GroupChat { .. }),
                )) => {
                    if write_frame(&mut up, &ConversationRequest::from(chat))
                        .await
                        .is_err()
                    {
                        answers.abort();
                        return Some(ErrorCode::Unavailable);
                    }
                }
                // A first frame again; the phase refuses it before it gets here.
                Ok(Some(_)) => break Some(ErrorCode::UnexpectedFrame),
                Ok(None) | Err(StreamEnd::Failed(_)) => break None,
                Err(StreamEnd::Refused(code)) => break Some(code),
            }
        };
        // Answers to what was passed on come before the stream ends.
        let _ = up.finish();
        match answers.await {
            Ok(Some(code)) => Some(code),
            _ => closing,
        }
    }

    fn take_send_token(&self) -> bool {
        let mut bucket = self.send_rate.lock().unwrap_or_else(|p| p.into_inner());
        let allowed = bucket.try_take(Instant::now());
        if !allowed {
            self.shared
                .metrics
                .rate_limited
                .fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    /// Pushes the device's feed, one stream per peer. Memory is bounded by the window,
    /// which the feed keeps wherever it runs.
    async fn push_loop(
        self: Arc<Self>,
        conn: &quinn::Connection,
        control: Arc<tokio::sync::Mutex<quinn::SendStream>>,
    ) -> Result<(), String> {
        let mut streams: HashMap<UserId, mpsc::UnboundedSender<Bytes>> = HashMap::new();
        let deliver = move |framed: Framed| {
            let stream = streams.entry(framed.entry.peer).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(push_stream(conn.clone(), rx));
                tx
            });
            stream
                .send(framed.frame)
                .map_err(|_| "push stream ended".to_string())
        };
        let attachment = match &self.home {
            HomeFeed::Local(feed) => return feed.clone().push(deliver).await,
            HomeFeed::Remote(attachment) => attachment,
        };
        // Boxed: a session on a single node keeps no room for the mesh's state.
        Box::pin(pull_attachment(conn, &control, attachment, deliver)).await
    }
}

/// Passes the entries that the home node sends down `attachment` to `deliver`, and its
/// refusals to the control stream.
async fn pull_attachment(
    conn: &quinn::Connection,
    control: &tokio::sync::Mutex<quinn::SendStream>,
    attachment: &Attachment,
    mut deliver: impl FnMut(Framed) -> Result<(), String>,
) -> Result<(), String> {
    let down = attachment
        .down
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let Some(mut down) = down else {
        return Err("attachment already taken".into());
    };
    loop {
        match read_frame::<AttachDown>(&mut down, MAX_MESH_FRAME).await {
            Ok(AttachDown::Entry(entry)) => {
                deliver(Framed::encode(entry).map_err(|e| e.to_string())?)?
            }
            Ok(AttachDown::Error { code, message }) => {
                let mut send = control.lock().await;
                write_frame(&mut send, &ControlResponse::Error { code, message })
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(AttachDown::Welcome { .. }) | Err(_) => {
                conn.close(varint(ErrorCode::Unavailable), b"home node unreachable");
                return Err("attachment to the home node ended".into());
            }
        }
    }
}

/// Counts itself in a gauge while it lives.
struct Counted<'a>(&'a AtomicU64);

impl<'a> Counted<'a> {
    fn new(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Writes one peer's entry frames to its own server-opened stream, as many as are waiting
/// in one write (a feed hands them over a batch at a time). A stream that fails closes the
/// connection: the device reconnects and resumes from its cursor.
async fn push_stream(conn: quinn::Connection, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    let mut send = match conn.open_uni().await {
        Ok(send) => send,
        Err(_) => return,
    };
    let mut frames = Vec::new();
    while rx.recv_many(&mut frames, PUSH_WRITE_FRAMES).await > 0 {
        if let Err(e) = send.write_all_chunks(&mut frames).await {
            tracing::debug!(error = %e, "push stream failed");
            conn.close(varint(ErrorCode::Internal), b"push stream failed");
            return;
        }
        frames.clear();
    }
}
