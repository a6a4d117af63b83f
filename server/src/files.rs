//! File transfer streams: an upload into this node's blob store, a download out of it, or
//! either relayed byte for byte to the home node of the user whose blob it is.
//!
//! A client's stream and a peer node's forwarded stream are served by the same functions:
//! after the first frame the protocol is the same ([`quiver_proto::files`]).

use crate::blobs::UploadStart;
use crate::live::Slot;
use crate::metrics::MeshKind;
use crate::net::{pump, varint, write_frame};
use crate::router::Home;
use crate::shared::Shared;
use quiver_proto::files::{BlobId, FileResponse};
use quiver_proto::mesh::MeshOpen;
use quiver_proto::{ErrorCode, UserId};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// File bytes go out below chat: QUIC sends higher-priority streams' data first.
const FILE_PRIORITY: i32 = -1;

/// Bytes read from disk or written to it at a time.
const IO_CHUNK: usize = 256 * 1024;

/// A place among `user`'s open transfers on this node, if under the cap.
pub(crate) fn transfer_slot(shared: &Shared, user: &UserId) -> Option<Slot<UserId>> {
    let cap = shared.config.files.max_open_transfers;
    shared.live.transfers.take(user, cap)
}

/// Serves `user`'s upload of `blob` here, or relays it to `user`'s home node.
pub async fn upload(
    shared: Arc<Shared>,
    user: UserId,
    blob: BlobId,
    size: u64,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let Some(_open) = transfer_slot(&shared, &user) else {
        let code = ErrorCode::TooManyStreams;
        return refuse(&shared, send, Some(recv), code, "too many transfers open").await;
    };
    match shared.router.home(&user).await {
        Ok(Home::Peer(node)) => {
            let open = MeshOpen::Upload { user, blob, size };
            relay(&shared, &node, open, send, recv).await
        }
        Ok(Home::Here) => store(&shared, &user, blob, size, send, recv).await,
        Err(code) => {
            refuse(
                &shared,
                send,
                Some(recv),
                code,
                "the user's home is unknown",
            )
            .await
        }
    }
}

/// Who may download a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Its owner and their friends: checked where the blob is.
    Friends,
    /// Whoever the caller says: a group's home node has checked that the blob was sent to
    /// a group where the reader sees it.
    Granted,
}

/// Serves `user`'s download of `owner`'s `blob` from `offset`, here or from `owner`'s home.
#[allow(clippy::too_many_arguments)]
pub async fn download(
    shared: Arc<Shared>,
    user: UserId,
    owner: UserId,
    blob: BlobId,
    offset: u64,
    access: Access,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let Some(_open) = transfer_slot(&shared, &user) else {
        let code = ErrorCode::TooManyStreams;
        return refuse(&shared, send, Some(recv), code, "too many transfers open").await;
    };
    match shared.router.home(&owner).await {
        Ok(Home::Peer(node)) => {
            let open = match access {
                Access::Friends => MeshOpen::Download {
                    user,
                    owner,
                    blob,
                    offset,
                },
                Access::Granted => MeshOpen::GrantedDownload {
                    user,
                    owner,
                    blob,
                    offset,
                },
            };
            relay(&shared, &node, open, send, recv).await
        }
        Ok(Home::Here) => serve(&shared, &user, &owner, blob, offset, access, send).await,
        // An unknown owner gets the same answer as an unknown blob; a directory that does
        // not answer now (Unavailable) is worth a retry.
        Err(ErrorCode::NotFriends) => {
            let code = ErrorCode::NotFound;
            refuse(&shared, send, Some(recv), code, "no such file").await
        }
        Err(code) => {
            refuse(
                &shared,
                send,
                Some(recv),
                code,
                "the owner's node is unknown",
            )
            .await
        }
    }
}

/// Writes the upload's bytes to the blob store, then checks and keeps them.
async fn store(
    shared: &Arc<Shared>,
    user: &UserId,
    blob: BlobId,
    size: u64,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    if !shared.router.disk().has_room() {
        let code = ErrorCode::StorageFull;
        return refuse(shared, send, Some(recv), code, "the node is short of disk").await;
    }
    let blobs = &shared.blobs;
    let claim = blobs.claim(user, blob).await;
    let (offset, path) = match blobs.begin_upload(user, blob, size, &claim) {
        Ok(UploadStart::Complete) => (size, None),
        Ok(UploadStart::Partial { offset, path }) => (offset, Some(path)),
        Err(code) => {
            let why = match code {
                ErrorCode::FileTooLarge => "the file is over the node's maximum size",
                ErrorCode::QuotaExceeded => "the file would go over your storage quota",
                _ => "the upload was refused",
            };
            return refuse(shared, send, Some(recv), code, why).await;
        }
    };
    tracing::debug!(%user, %blob, offset, size, "upload");
    if write_frame(&mut send, &FileResponse::Ready { offset, size })
        .await
        .is_err()
    {
        return;
    }
    // Opened when the first bytes arrive: a stream that sends none holds no descriptor.
    let mut file: Option<tokio::io::BufWriter<tokio::fs::File>> = None;
    let idle = Duration::from_secs(shared.config.files.transfer_idle_secs);
    let mut have = offset;
    loop {
        let chunk = tokio::select! {
            chunk = tokio::time::timeout(idle, recv.read_chunk(IO_CHUNK, true)) => match chunk {
                Ok(chunk) => chunk,
                Err(_) => {
                    // Idle too long: keep what arrived, for the resume, and let go.
                    if let Some(file) = &mut file {
                        let _ = file.flush().await;
                    }
                    let code = ErrorCode::Unavailable;
                    shared.metrics.error(code);
                    let _ = recv.stop(varint(code));
                    let _ = send.reset(varint(code));
                    return;
                }
            },
            _ = claim.superseded() => {
                // A newer stream of the same client resumes it; what is here is kept.
                if let Some(file) = &mut file {
                    let _ = file.flush().await;
                }
                let _ = recv.stop(varint(ErrorCode::Unavailable));
                return;
            }
        };
        let bytes = match chunk {
            Ok(Some(chunk)) => chunk.bytes,
            Ok(None) => break,
            Err(_) => {
                // The client went away: keep what arrived, for the resume.
                if let Some(file) = &mut file {
                    let _ = file.flush().await;
                }
                return;
            }
        };
        let over = have + bytes.len() as u64 > size;
        if file.is_none() && !over {
            if let Some(path) = &path {
                file = match open_partial(path).await {
                    Ok(opened) => Some(tokio::io::BufWriter::with_capacity(IO_CHUNK, opened)),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot open a partial upload");
                        let code = ErrorCode::Unavailable;
                        return refuse(shared, send, Some(recv), code, "storage").await;
                    }
                };
            }
        }
        // The disk reserve is crossed: keep what is here, for a resume once there is room.
        let full = !over && !shared.router.disk().has_room();
        let written = match &mut file {
            Some(file) if !over && !full => file.write_all(&bytes).await.is_ok(),
            _ => false,
        };
        if !written {
            let (code, why) = if over {
                (ErrorCode::Malformed, "more bytes than announced")
            } else if full {
                (ErrorCode::StorageFull, "the node is short of disk")
            } else {
                (ErrorCode::Unavailable, "storage")
            };
            if let Some(file) = &mut file {
                let _ = file.flush().await;
            }
            return refuse(shared, send, Some(recv), code, why).await;
        }
        have += bytes.len() as u64;
        shared
            .metrics
            .file_bytes_received
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }
    if let Some(file) = &mut file {
        if file.flush().await.is_err() {
            return refuse(shared, send, None, ErrorCode::Unavailable, "storage").await;
        }
    }
    if have < size {
        return refuse(
            shared,
            send,
            None,
            ErrorCode::Malformed,
            "fewer bytes than announced",
        )
        .await;
    }
    let answer = match &path {
        None => Ok(()),
        Some(_) => blobs.finish_upload(user, blob, size, &claim).await,
    };
    drop(claim);
    match answer {
        Ok(()) => {
            if write_frame(&mut send, &FileResponse::Stored).await.is_ok() {
                let _ = send.finish();
            }
        }
        Err(code) => refuse(shared, send, None, code, "the bytes do not match their id").await,
    }
}

/// Opens (or makes, `0600`) a partial upload to append to.
async fn open_partial(path: &std::path::Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .await
}

/// Sends `owner`'s blob from `offset` to `user`, who must be `owner` or a friend unless
/// `access` was granted.
async fn serve(
    shared: &Arc<Shared>,
    user: &UserId,
    owner: &UserId,
    blob: BlobId,
    offset: u64,
    access: Access,
    mut send: quinn::SendStream,
) {
    let allowed = access == Access::Granted
        || user == owner
        || shared.router.check_friends(user, owner).await.is_ok();
    let found = match allowed {
        true => shared.blobs.find(owner, &blob),
        false => Err(ErrorCode::NotFound),
    };
    let (path, size) = match found {
        Ok(found) if offset <= found.1 => found,
        Ok(_) => {
            return refuse(
                shared,
                send,
                None,
                ErrorCode::Malformed,
                "offset past the end",
            )
            .await
        }
        Err(code) => return refuse(shared, send, None, code, "no such file").await,
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        // Collected between the lookup and the open.
        Err(_) => return refuse(shared, send, None, ErrorCode::NotFound, "no such file").await,
    };
    let _ = send.set_priority(FILE_PRIORITY);
    if file.seek(std::io::SeekFrom::Start(offset)).await.is_err()
        || write_frame(&mut send, &FileResponse::Ready { offset, size })
            .await
            .is_err()
    {
        return;
    }
    let mut buf = vec![0u8; IO_CHUNK];
    let mut left = size - offset;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match file.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => {
                tracing::error!(%blob, "blob shorter than its size");
                let _ = send.reset(varint(ErrorCode::Internal));
                return;
            }
            Ok(n) => n,
        };
        let idle = Duration::from_secs(shared.config.files.transfer_idle_secs);
        match tokio::time::timeout(idle, send.write_all(&buf[..n])).await {
            Ok(Ok(())) => {}
            // The reader went away; it resumes from what it has.
            Ok(Err(_)) => return,
            // The reader stopped reading: let the file go.
            Err(_) => {
                let _ = send.reset(varint(ErrorCode::Unavailable));
                return;
            }
        }
        left -= n as u64;
        shared
            .metrics
            .file_bytes_sent
            .fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = send.finish();
}

/// Passes a transfer on to `node` and its bytes both ways, untouched.
pub(crate) async fn relay(
    shared: &Arc<Shared>,
    node: &str,
    open: MeshOpen,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let Some(mesh) = shared.router.mesh() else {
        return refuse(shared, send, Some(recv), ErrorCode::Unavailable, "no mesh").await;
    };
    shared.metrics.mesh_request(MeshKind::File);
    let (up, down) = match mesh.open(node, &open).await {
        Ok(link) => link,
        Err(code) => {
            return refuse(
                shared,
                send,
                Some(recv),
                code,
                "the home node is unreachable",
            )
            .await
        }
    };
    let _ = send.set_priority(FILE_PRIORITY);
    tokio::join!(pump(recv, up, IO_CHUNK), pump(down, send, IO_CHUNK));
}

/// Refuses a transfer with one `Error` frame and closes the stream.
pub(crate) async fn refuse(
    shared: &Arc<Shared>,
    mut send: quinn::SendStream,
    recv: Option<quinn::RecvStream>,
    code: ErrorCode,
    message: &str,
) {
    shared.metrics.error(code);
    if let Some(mut recv) = recv {
        let _ = recv.stop(varint(code));
    }
    let error = FileResponse::Error {
        code,
        message: message.into(),
    };
    if write_frame(&mut send, &error).await.is_ok() {
        let _ = send.finish();
    }
}
