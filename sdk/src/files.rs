//! File messages, client side: seal a file chunk by chunk ([`crate::file_seal`]) under
//! a friendship key or a group's key, upload it (resuming where the node stopped after a
//! lost connection), send the message that names it — to a friend or to a group — and
//! download and open one (resuming from the chunks already on disk).
//!
//! The node learns when the same file is sent twice under one key, and nothing else.

use crate::error::SendError;
use crate::file_seal::{hash_file, open_chunk, plain_len, prepare, read_chunk, seal_chunk};
use crate::link::Link;
use crate::seal::FriendKey;
use crate::state::Inner;
use crate::Sent;
use quiver_proto::files::{
    chunk_count, sealed_len, FileRef, FileResponse, CHUNK_LEN, SEALED_CHUNK_LEN,
};
use quiver_proto::{ClientMsgId, ConversationRequest, ErrorCode, GroupId, Seq, UserId};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

pub use crate::file_seal::FileInfo;

/// File bytes go out below chat: QUIC sends higher-priority streams' data first.
const FILE_PRIORITY: i32 = -1;

/// How long to wait before trying a transfer again on a connection that looked alive;
/// doubled after each attempt that moved no byte, up to [`MAX_RETRY_PAUSE`], so a node
/// that keeps refusing (busy, its peer down) is not asked five times a second for ever.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The longest pause between two attempts of one transfer.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

/// A file someone sent you: what it is and where to fetch it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileOffer {
    /// The sender, who uploaded it.
    pub from: UserId,
    /// Name, type, size and hash, as the sender sealed them.
    pub info: FileInfo,
    /// The blob on the node.
    pub file: FileRef,
    /// For a file sent to a group: where, which says how it is fetched and opened.
    pub group: Option<GroupFile>,
}

/// Where a file sent to a group is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupFile {
    /// The group.
    pub group: GroupId,
    /// The entry of the group's log that names it: what a download asks for.
    pub seq: Seq,
    /// The group key epoch its chunks are sealed at.
    pub epoch: u32,
}

impl FileOffer {
    /// The file of a message kept in the store, if it carries one (and its description
    /// reads). A file you sent to a group is an offer once the group's log has it (SENT).
    pub fn from_stored(message: &crate::store::StoredMessage) -> Option<Self> {
        let group = match &message.conversation {
            crate::Conversation::Friend(_) => None,
            crate::Conversation::Group(group) => Some(GroupFile {
                group: group.clone(),
                seq: message.seq?,
                epoch: message.epoch?,
            }),
        };
        Self::read(message.from.clone(), message.file?, &message.body, group).ok()
    }

    /// Reads the sealed description of a file message (already opened).
    pub(crate) fn read(
        from: UserId,
        file: FileRef,
        body: &[u8],
        group: Option<GroupFile>,
    ) -> Result<Self, String> {
        let info: FileInfo = postcard::from_bytes(body).map_err(|e| e.to_string())?;
        if sealed_len(info.size) != file.size {
            return Err("the file's size does not match its description".into());
        }
        Ok(Self {
            from,
            info,
            file,
            group,
        })
    }
}

/// How far a transfer is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Sealed bytes the node has (upload) or this device has (download).
    pub done: u64,
    /// Sealed bytes in all.
    pub total: u64,
}

/// What a finished transfer cost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferReport {
    /// Sealed bytes of the file.
    pub size: u64,
    /// Sealed bytes that crossed the network, over every attempt.
    pub sent_or_received: u64,
    /// Where each attempt started (sealed offset): `[0]` for one clean run; a resume
    /// after a lost connection starts where the last attempt stopped.
    pub starts: Vec<u64>,
}

/// A file uploaded and its message sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSent {
    /// The message, durable on the node.
    pub sent: Sent,
    /// What the recipient will download.
    pub file: FileRef,
    /// The upload.
    pub report: TransferReport,
}

/// Why a transfer failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FileError {
    /// Reading or writing the local file failed.
    #[error("file: {0}")]
    Io(String),
    /// No key for that friend or group (epoch).
    #[error("no key for {0}")]
    NoKey(String),
    /// The node refused the transfer (too large, over quota, not found).
    #[error("refused by node: {0}")]
    Refused(ErrorCode),
    /// A chunk did not open or the whole file does not match its hash: it was altered on
    /// the node or on the way. Nothing of it is kept.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// The app cancelled it.
    #[error("cancelled")]
    Cancelled,
    /// The client was closed.
    #[error("client closed")]
    Closed,
    /// The file's message was not sent.
    #[error(transparent)]
    Send(#[from] SendError),
}

fn io(e: impl std::fmt::Display) -> FileError {
    FileError::Io(e.to_string())
}

/// A transfer running in the background: await it for the outcome, or cancel it.
pub struct Transfer<T> {
    task: tokio::task::JoinHandle<Result<T, FileError>>,
    cancel: Cancel,
}

impl<T> Transfer<T> {
    /// A handle that cancels the transfer (from anywhere, any time).
    pub fn canceller(&self) -> Cancel {
        self.cancel.clone()
    }
}

impl<T> std::future::Future for Transfer<T> {
    type Output = Result<T, FileError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.task)
            .poll(cx)
            .map(|joined| joined.unwrap_or(Err(FileError::Cancelled)))
    }
}

/// Cancels a [`Transfer`]. What was transferred stays, so a new transfer of the same file
/// resumes from it.
#[derive(Clone)]
pub struct Cancel(Arc<watch::Sender<bool>>);

impl Cancel {
    fn new() -> Self {
        Self(Arc::new(watch::channel(false).0))
    }

    /// Stops the transfer; it ends with [`FileError::Cancelled`].
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }

    fn cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once cancelled.
    async fn wait(&self) {
        let mut cancelled = self.0.subscribe();
        let _ = cancelled.wait_for(|c| *c).await;
    }
}

/// Called with each step of a transfer.
pub type OnProgress = Box<dyn FnMut(Progress) + Send>;

/// One attempt's end: try again on the next connection, or stop.
enum Attempt {
    Retry(String),
    Fail(FileError),
}

impl From<FileError> for Attempt {
    fn from(e: FileError) -> Self {
        Attempt::Fail(e)
    }
}

/// A node's refusal: retryable ones are tried again.
fn refused(code: ErrorCode) -> Attempt {
    if code.is_retryable() {
        Attempt::Retry(code.to_string())
    } else {
        Attempt::Fail(FileError::Refused(code))
    }
}

/// Waits for a live connection.
async fn online(inner: &Arc<Inner>, cancel: &Cancel) -> Result<Arc<Link>, FileError> {
    let mut state = inner.state.subscribe();
    loop {
        if cancel.cancelled() {
            return Err(FileError::Cancelled);
        }
        if *inner.closing.borrow() {
            return Err(FileError::Closed);
        }
        if let Some(link) = inner.link() {
            if link.conn.close_reason().is_none() {
                return Ok(link);
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), state.changed()).await;
    }
}

/// Whom a file is sent to.
#[derive(Clone, Debug)]
pub(crate) enum Recipient {
    /// A friend: sealed with the friendship key.
    Friend(UserId),
    /// A group: sealed with its key of the epoch it is at.
    Group(GroupId),
}

/// What a download asks the node for.
enum Source {
    /// A blob of its uploader's (a friend's, or yours).
    Owner(UserId),
    /// The file of a group's entry.
    Group(GroupId, Seq),
}

/// What every attempt of one transfer shares.
struct Job {
    /// Upload: the file read. Download: the `.part` file written.
    local: PathBuf,
    /// Download: where the blob is asked for.
    source: Source,
    key: FriendKey,
    info: FileInfo,
    file: FileRef,
    cancel: Cancel,
    report: TransferReport,
    on_progress: OnProgress,
}

impl Job {
    fn progress(&mut self, done: u64) {
        let total = self.file.size;
        (self.on_progress)(Progress { done, total });
    }
}

type AttemptFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Attempt>> + Send + 'a>>;

/// Runs `attempt` on each new connection until it finishes, fails for good or is
/// cancelled; an interrupted attempt is tried again after a short pause.
async fn until_done(
    inner: &Arc<Inner>,
    job: &mut Job,
    attempt: for<'a> fn(Arc<Link>, &'a mut Job) -> AttemptFuture<'a>,
) -> Result<(), FileError> {
    let mut pause = RETRY_PAUSE;
    loop {
        let link = online(inner, &job.cancel).await?;
        let moved = job.report.sent_or_received;
        match attempt(link, job).await {
            Ok(()) => return Ok(()),
            Err(Attempt::Fail(e)) => return Err(e),
            Err(Attempt::Retry(why)) => {
                pause = next_pause(pause, job.report.sent_or_received > moved);
                tracing::debug!(%why, ?pause, "transfer interrupted; resuming");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// The pause before the next attempt: back to the shortest after one that moved bytes,
/// twice the last (at most [`MAX_RETRY_PAUSE`]) after one that did not.
fn next_pause(last: Duration, progressed: bool) -> Duration {
    if progressed {
        RETRY_PAUSE
    } else {
        (last * 2).min(MAX_RETRY_PAUSE)
    }
}

/// Uploads the file at `path` and sends `to` the message that names it. A group that
/// moved to a new key epoch meanwhile (`StaleEpoch`) gets the file sealed, uploaded and
/// sent once more under the new key, which is fetched first.
pub(crate) fn send_file(
    inner: Arc<Inner>,
    to: Recipient,
    path: PathBuf,
    media_type: String,
    on_progress: OnProgress,
) -> Transfer<FileSent> {
    let cancel = Cancel::new();
    let canceller = cancel.clone();
    let task = tokio::spawn(async move {
        let mut on_progress = on_progress;
        let mut refetched = false;
        loop {
            let sealing = Sealing::of(&inner, &to).await?;
            let (file, info, report, back) = upload(
                &inner,
                &path,
                &media_type,
                sealing.key().clone(),
                cancel.clone(),
                on_progress,
            )
            .await?;
            on_progress = back;
            let id = ClientMsgId(crate::state::random_u128());
            let body = postcard::to_stdvec(&info).map_err(io)?;
            let sent = match &sealing {
                Sealing::Friend(friend, key) => {
                    let sealed = crate::seal::seal(key, &inner.user, friend, id, &body)
                        .map_err(|_| SendError::Seal)?;
                    inner
                        .enqueue_chat(friend, id, sealed, Some(file), &body)
                        .await?
                        .await
                }
                Sealing::Group(group, epoch, key) => {
                    let sealed =
                        crate::seal::seal_group(key, group, &inner.user, *epoch, id, &body)
                            .map_err(|_| SendError::Seal)?;
                    let request = ConversationRequest::GroupFile {
                        id,
                        sent_at_ms: crate::state::now_ms(),
                        epoch: *epoch,
                        body: sealed,
                        file,
                    };
                    let conversation = crate::outbox::Conversation::Group(group.clone());
                    inner
                        .enqueue(conversation, id, &request, &body)
                        .await?
                        .await
                }
            };
            match (&sealing, sent) {
                (Sealing::Group(group, ..), Err(SendError::Rejected(ErrorCode::StaleEpoch)))
                    if !refetched =>
                {
                    refetched = true;
                    inner.refetch_group_keys(group).await;
                }
                (_, sent) => {
                    return Ok(FileSent {
                        sent: sent?,
                        file,
                        report,
                    })
                }
            }
        }
    });
    Transfer {
        task,
        cancel: canceller,
    }
}

/// How a file and its message are sealed: with the friendship key, or with a group's key
/// of the epoch it is at.
enum Sealing {
    Friend(UserId, FriendKey),
    Group(GroupId, u32, FriendKey),
}

impl Sealing {
    /// The key to seal with for `to` now.
    async fn of(inner: &Inner, to: &Recipient) -> Result<Self, FileError> {
        match to {
            Recipient::Friend(friend) => match inner.key(friend) {
                Some(key) => Ok(Sealing::Friend(friend.clone(), key)),
                None => Err(FileError::NoKey(friend.to_string())),
            },
            Recipient::Group(group) => match inner.group_seal_key(group).await {
                Some((epoch, key)) => Ok(Sealing::Group(group.clone(), epoch, key)),
                None => Err(FileError::NoKey(group.to_string())),
            },
        }
    }

    fn key(&self) -> &FriendKey {
        match self {
            Sealing::Friend(_, key) | Sealing::Group(_, _, key) => key,
        }
    }
}

/// Seals the file at `path` under `key` and uploads it; gives back the progress callback
/// for a later attempt.
async fn upload(
    inner: &Arc<Inner>,
    path: &Path,
    media_type: &str,
    key: FriendKey,
    cancel: Cancel,
    on_progress: OnProgress,
) -> Result<(FileRef, FileInfo, TransferReport, OnProgress), FileError> {
    let (info, file) = {
        let (path, key, media_type) = (path.to_owned(), key.clone(), media_type.to_owned());
        tokio::task::spawn_blocking(move || prepare(&path, &media_type, &key))
            .await
            .map_err(io)?
            .map_err(io)?
    };
    let mut job = Job {
        local: path.to_owned(),
        source: Source::Owner(inner.user.clone()),
        key,
        info,
        file,
        cancel,
        report: TransferReport {
            size: file.size,
            ..TransferReport::default()
        },
        on_progress,
    };
    until_done(inner, &mut job, |link, job| {
        Box::pin(upload_once(link, job))
    })
    .await?;
    if job.cancel.cancelled() {
        return Err(FileError::Cancelled);
    }
    Ok((file, job.info, job.report, job.on_progress))
}

/// One upload attempt: asks the node where to start, sends the rest, waits for `Stored`.
async fn upload_once(link: Arc<Link>, job: &mut Job) -> Result<(), Attempt> {
    let file = job.file;
    let lost = |e: &dyn std::fmt::Display| Attempt::Retry(e.to_string());
    let (mut send, mut recv) = link.conn.open_bi().await.map_err(|e| lost(&e))?;
    let _ = send.set_priority(FILE_PRIORITY);
    let upload = ConversationRequest::Upload {
        blob: file.blob,
        size: file.size,
    };
    crate::frames::write_frame(&mut send, &upload)
        .await
        .map_err(|e| lost(&e))?;
    let offset = match crate::frames::read_frame::<FileResponse>(&mut recv).await {
        Ok(Some(FileResponse::Ready { offset, .. })) if offset <= file.size => offset,
        Ok(Some(FileResponse::Error { code, .. })) => return Err(refused(code)),
        Ok(_) => return Err(Attempt::Fail(FileError::Refused(ErrorCode::Malformed))),
        Err(e) => return Err(lost(&e)),
    };
    job.report.starts.push(offset);
    job.progress(offset);
    let mut plain_file = tokio::fs::File::open(&job.local).await.map_err(io)?;
    let size = job.info.size;
    for index in offset / SEALED_CHUNK_LEN as u64..chunk_count(size) {
        let plain = read_chunk(&mut plain_file, size, index).await.map_err(io)?;
        let sealed = seal_chunk(&job.key, &job.info, index, &plain).map_err(io)?;
        let start = index * SEALED_CHUNK_LEN as u64;
        let skip = offset.saturating_sub(start) as usize;
        // A stalled network must not keep a cancel waiting.
        tokio::select! {
            biased;
            _ = job.cancel.wait() => {
                let _ = send.reset(0u32.into());
                return Err(Attempt::Fail(FileError::Cancelled));
            }
            wrote = send.write_all(&sealed[skip..]) => wrote.map_err(|e| lost(&e))?,
        }
        job.report.sent_or_received += (sealed.len() - skip) as u64;
        job.progress(start + sealed.len() as u64);
    }
    send.finish().map_err(|e| lost(&e))?;
    match crate::frames::read_frame::<FileResponse>(&mut recv).await {
        Ok(Some(FileResponse::Stored)) => Ok(()),
        Ok(Some(FileResponse::Error { code, .. })) => Err(refused(code)),
        Ok(_) => Err(Attempt::Fail(FileError::Refused(ErrorCode::Malformed))),
        Err(e) => Err(lost(&e)),
    }
}

/// Downloads `offer` to `path`, resuming from `<path>.part` if an earlier download left
/// one, and checks the whole file's hash before it takes the name `path`.
pub(crate) fn download(
    inner: Arc<Inner>,
    offer: FileOffer,
    path: PathBuf,
    on_progress: OnProgress,
) -> Transfer<TransferReport> {
    let cancel = Cancel::new();
    let canceller = cancel.clone();
    let task = tokio::spawn(async move {
        let (key, source) = match &offer.group {
            None => (inner.key(&offer.from), Source::Owner(offer.from.clone())),
            Some(g) => (
                inner.group_key(&g.group, g.epoch).await,
                Source::Group(g.group.clone(), g.seq),
            ),
        };
        let key = key.ok_or_else(|| match &offer.group {
            None => FileError::NoKey(offer.from.to_string()),
            Some(g) => FileError::NoKey(format!("{} at epoch {}", g.group, g.epoch)),
        })?;
        let part = part_path(&path);
        let mut job = Job {
            local: part.clone(),
            source,
            key,
            info: offer.info.clone(),
            file: offer.file,
            cancel,
            report: TransferReport {
                size: offer.file.size,
                ..TransferReport::default()
            },
            on_progress,
        };
        until_done(&inner, &mut job, |link, job| {
            Box::pin(download_once(link, job))
        })
        .await?;
        let (len, sha256) = {
            let part = part.clone();
            tokio::task::spawn_blocking(move || hash_file(&part))
                .await
                .map_err(io)?
                .map_err(io)?
        };
        if (len, sha256) != (offer.info.size, offer.info.sha256) {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(FileError::Corrupt(
                "the file does not match its hash".into(),
            ));
        }
        tokio::fs::rename(&part, &path).await.map_err(io)?;
        Ok(job.report)
    });
    Transfer {
        task,
        cancel: canceller,
    }
}

/// Where a download collects its chunks until the file is whole.
pub fn part_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// One download attempt: from the whole chunks already in the `.part` file on, each
/// chunk opened (checked) before it is written.
async fn download_once(link: Arc<Link>, job: &mut Job) -> Result<(), Attempt> {
    let lost = |e: &dyn std::fmt::Display| Attempt::Retry(e.to_string());
    let (size, sealed_size) = (job.info.size, job.file.size);
    let chunks = chunk_count(size);
    // Whole chunks already here: a torn last write is cut off and fetched again.
    let mut out =
        tokio::fs::File::from_std(crate::private_file::open_part(&job.local).map_err(io)?);
    let have = out.metadata().await.map_err(io)?.len().min(size);
    let mut index = have / CHUNK_LEN as u64;
    if index >= chunks && have == size && size > 0 {
        return Ok(());
    }
    out.set_len(index * CHUNK_LEN as u64).await.map_err(io)?;
    let offset = index * SEALED_CHUNK_LEN as u64;
    let (mut send, mut recv) = link.conn.open_bi().await.map_err(|e| lost(&e))?;
    let request = match &job.source {
        Source::Owner(owner) => ConversationRequest::Download {
            blob: job.file.blob,
            owner: owner.clone(),
            offset,
        },
        Source::Group(group, seq) => ConversationRequest::GroupDownload {
            group: group.clone(),
            seq: *seq,
            offset,
        },
    };
    crate::frames::write_frame(&mut send, &request)
        .await
        .map_err(|e| lost(&e))?;
    let _ = send.finish();
    match crate::frames::read_frame::<FileResponse>(&mut recv).await {
        Ok(Some(FileResponse::Ready { offset: at, size }))
            if (at, size) == (offset, sealed_size) => {}
        Ok(Some(FileResponse::Error { code, .. })) => return Err(refused(code)),
        Ok(_) => return Err(Attempt::Fail(FileError::Refused(ErrorCode::Malformed))),
        Err(e) => return Err(lost(&e)),
    }
    job.report.starts.push(offset);
    let mut buf = Vec::with_capacity(SEALED_CHUNK_LEN);
    while index < chunks {
        let want = plain_len(size, index) + quiver_proto::files::TAG_LEN;
        while buf.len() < want {
            let chunk = tokio::select! {
                biased;
                _ = job.cancel.wait() => {
                    let _ = recv.stop(0u32.into());
                    out.flush().await.map_err(io)?;
                    return Err(Attempt::Fail(FileError::Cancelled));
                }
                chunk = recv.read_chunk(want - buf.len(), true) => chunk,
            };
            match chunk {
                Ok(Some(chunk)) => {
                    job.report.sent_or_received += chunk.bytes.len() as u64;
                    buf.extend_from_slice(&chunk.bytes);
                }
                Ok(None) => return Err(Attempt::Retry("the node ended the download early".into())),
                Err(e) => {
                    out.flush().await.map_err(io)?;
                    return Err(lost(&e));
                }
            }
        }
        let Some(plain) = open_chunk(&job.key, &job.info, index, &buf) else {
            drop(out);
            let _ = tokio::fs::remove_file(&job.local).await;
            return Err(Attempt::Fail(FileError::Corrupt(format!(
                "chunk {index} does not authenticate"
            ))));
        };
        out.write_all(&plain).await.map_err(io)?;
        buf.clear();
        index += 1;
        job.progress((index * SEALED_CHUNK_LEN as u64).min(sealed_size));
    }
    out.flush().await.map_err(io)?;
    out.sync_all().await.map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_name_is_saved_and_shown_as_a_plain_one() {
        let named = |name: &str| FileInfo {
            name: name.into(),
            media_type: String::new(),
            size: 0,
            sha256: [0; 32],
        };
        assert_eq!(named("photo.jpg").safe_name(), "photo.jpg");
        assert_eq!(
            named("../../.ssh/authorized_keys").safe_name(),
            "authorized_keys"
        );
        assert_eq!(named("C:\\x\\evil.exe").safe_name(), "evil.exe");
        assert_eq!(named("gpj\u{202e}.exe").safe_name(), "gpj.exe");
        assert_eq!(named("a\x1b[2Jb\n").safe_name(), "a[2Jb");
        for empty in ["", ".", "..", "dir/", "\u{202e}"] {
            assert_eq!(named(empty).safe_name(), "file", "{empty:?}");
        }
        let long = named(&"é".repeat(300)).safe_name();
        assert!(long.len() <= 255 && long.chars().all(|c| c == 'é'));
    }

    #[test]
    fn retries_back_off_until_bytes_move() {
        let mut pause = RETRY_PAUSE;
        for _ in 0..20 {
            pause = next_pause(pause, false);
        }
        assert_eq!(pause, MAX_RETRY_PAUSE);
        assert_eq!(next_pause(RETRY_PAUSE, false), RETRY_PAUSE * 2);
        assert_eq!(next_pause(pause, true), RETRY_PAUSE);
    }
}
