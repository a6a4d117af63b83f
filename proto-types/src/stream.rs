//! The node's per-stream state machines, sans-IO: bytes in, requests out.
//!
//! An [`Inbound`] owns everything a node decides about one client stream before it acts:
//! where a frame ends, whether its announced length is allowed (checked before a payload
//! byte is kept), whether it decodes, and whether it may come at this point of the stream
//! (the [`Phase`]). The node asks [`Inbound::wants`] how many bytes to read next, hands
//! them to [`Inbound::feed`], and takes [`Step`]s from [`Inbound::next_step`]. The first error
//! is final: the stream is to be closed with its code, and every later call says so again.
//!
//! Because it is pure, it is what the `stream` fuzz target drives with arbitrary bytes in
//! arbitrary chunks.

use crate::files::{BlobId, FileRef};
use crate::frame::{decode_payload, parse_header, FrameError, HEADER_LEN};
use crate::{ClientMsgId, ControlRequest, ConversationRequest, ErrorCode, GroupId, Seq, UserId};
use serde::de::DeserializeOwned;

/// What may come when on one kind of stream.
pub trait Phase {
    /// The frames of this stream.
    type Frame: DeserializeOwned;
    /// What the node is asked to do.
    type Step;
    /// Checks `frame` against the stream's state so far and moves it on.
    fn step(&mut self, frame: Self::Frame) -> Result<Self::Step, ErrorCode>;
}

/// A client's control stream: one `Hello` first, then acks and read marks.
#[derive(Debug, Default)]
pub struct ControlPhase {
    greeted: bool,
}

/// A request on the control stream, in an order the node accepts.
#[derive(Debug, PartialEq, Eq)]
pub enum ControlStep {
    /// The first frame.
    Hello {
        /// The client's protocol version.
        version: u16,
        /// Its token.
        token: String,
    },
    /// The device has this entry.
    Ack(Seq),
    /// The user read this chat.
    Read(Seq),
    /// The device has this entry of a group's log.
    GroupAck(GroupId, Seq),
    /// The user read a group's log up to here.
    GroupRead(GroupId, Seq),
}

impl ControlPhase {
    /// A control stream whose `Hello` was already handled elsewhere (a node attaching a
    /// device to its feed on the home node sends only acks and read marks).
    pub fn greeted() -> Self {
        Self { greeted: true }
    }
}

impl From<ControlStep> for ControlRequest {
    /// The frame that carries the step (to pass it on to another node).
    fn from(step: ControlStep) -> Self {
        match step {
            ControlStep::Hello { version, token } => ControlRequest::Hello { version, token },
            ControlStep::Ack(seq) => ControlRequest::Ack { seq },
            ControlStep::Read(seq) => ControlRequest::Read { seq },
            ControlStep::GroupAck(group, seq) => ControlRequest::GroupAck { group, seq },
            ControlStep::GroupRead(group, seq) => ControlRequest::GroupRead { group, seq },
        }
    }
}

impl Phase for ControlPhase {
    type Frame = ControlRequest;
    type Step = ControlStep;

    fn step(&mut self, frame: ControlRequest) -> Result<ControlStep, ErrorCode> {
        match (self.greeted, frame) {
            (false, ControlRequest::Hello { version, token }) => {
                self.greeted = true;
                Ok(ControlStep::Hello { version, token })
            }
            (true, ControlRequest::Ack { seq }) => Ok(ControlStep::Ack(seq)),
            (true, ControlRequest::Read { seq }) => Ok(ControlStep::Read(seq)),
            (true, ControlRequest::GroupAck { group, seq }) => {
                Ok(ControlStep::GroupAck(group, seq))
            }
            (true, ControlRequest::GroupRead { group, seq }) => {
                Ok(ControlStep::GroupRead(group, seq))
            }
            _ => Err(ErrorCode::UnexpectedFrame),
        }
    }
}

/// A client-opened stream after the control stream: one `Open` naming the peer first, then
/// chats to that peer; or one `Upload` / `Download` and no frame after it (raw file bytes
/// follow, which the node reads itself).
#[derive(Debug, Default)]
pub struct ConversationPhase {
    state: StreamKind,
}

#[derive(Debug, Default)]
enum StreamKind {
    #[default]
    Unknown,
    Conversation(UserId),
    Group,
    Transfer,
}

impl ConversationPhase {
    /// A stream whose peer is already known (a node forwarding a conversation says whom
    /// it is for in its own opening frame).
    pub fn opened(peer: UserId) -> Self {
        Self {
            state: StreamKind::Conversation(peer),
        }
    }

    /// A group stream whose group is already known (a node forwarding it says which in
    /// its own opening frame).
    pub fn opened_group() -> Self {
        Self {
            state: StreamKind::Group,
        }
    }

    /// The peer, once `Open` was read.
    pub fn peer(&self) -> Option<&UserId> {
        match &self.state {
            StreamKind::Conversation(peer) => Some(peer),
            _ => None,
        }
    }
}

/// A request on a client-opened stream, in an order the node accepts.
#[derive(Debug, PartialEq, Eq)]
pub enum ConversationStep {
    /// The first frame: chats on this stream go to `peer`.
    Open(UserId),
    /// A sealed message for the stream's peer.
    Chat {
        /// Client-made id.
        id: ClientMsgId,
        /// Sender's clock, milliseconds since the Unix epoch.
        sent_at_ms: u64,
        /// Sealed body.
        body: Vec<u8>,
        /// The file it carries.
        file: Option<FileRef>,
    },
    /// The first frame: upload a blob; its bytes follow raw.
    Upload {
        /// The blob's SHA-256.
        blob: BlobId,
        /// Its sealed size.
        size: u64,
    },
    /// The first frame: download a blob from `offset`.
    Download {
        /// The blob.
        blob: BlobId,
        /// Its uploader.
        owner: UserId,
        /// First byte wanted.
        offset: u64,
    },
    /// The first frame: chats on this stream go to a group.
    OpenGroup(GroupId),
    /// A sealed message for the stream's group.
    GroupChat {
        /// Client-made id.
        id: ClientMsgId,
        /// Sender's clock, milliseconds since the Unix epoch.
        sent_at_ms: u64,
        /// The key epoch it is sealed at.
        epoch: u32,
        /// Sealed body.
        body: Vec<u8>,
        /// The file it carries (a `GroupFile` frame).
        file: Option<FileRef>,
    },
    /// The first frame: download the file of a group's entry from `offset`.
    GroupDownload {
        /// The group it was sent to.
        group: GroupId,
        /// The entry that names it.
        seq: Seq,
        /// First byte wanted.
        offset: u64,
    },
    /// The first and only frame: a page of the user's inbox.
    History {
        /// Only entries about this peer.
        peer: Option<UserId>,
        /// Only entries below this `seq`.
        before: Option<Seq>,
        /// Entries wanted.
        limit: u32,
    },
    /// The first and only frame: a page of a group's log.
    GroupHistory {
        /// The group.
        group: GroupId,
        /// Only entries below this `seq`.
        before: Option<Seq>,
        /// Entries wanted.
        limit: u32,
    },
}

impl From<ConversationStep> for ConversationRequest {
    /// The frame that carries the step (to pass it on to another node).
    fn from(step: ConversationStep) -> Self {
        match step {
            ConversationStep::Open(peer) => ConversationRequest::Open { peer },
            ConversationStep::Chat {
                id,
                sent_at_ms,
                body,
                file,
            } => ConversationRequest::Chat {
                id,
                sent_at_ms,
                body,
                file,
            },
            ConversationStep::Upload { blob, size } => ConversationRequest::Upload { blob, size },
            ConversationStep::Download {
                blob,
                owner,
                offset,
            } => ConversationRequest::Download {
                blob,
                owner,
                offset,
            },
            ConversationStep::OpenGroup(group) => ConversationRequest::OpenGroup { group },
            ConversationStep::GroupChat {
                id,
                sent_at_ms,
                epoch,
                body,
                file: None,
            } => ConversationRequest::GroupChat {
                id,
                sent_at_ms,
                epoch,
                body,
            },
            ConversationStep::GroupChat {
                id,
                sent_at_ms,
                epoch,
                body,
                file: Some(file),
            } => ConversationRequest::GroupFile {
                id,
                sent_at_ms,
                epoch,
                body,
                file,
            },
            ConversationStep::GroupDownload { group, seq, offset } => {
                ConversationRequest::GroupDownload { group, seq, offset }
            }
            ConversationStep::History {
                peer,
                before,
                limit,
            } => ConversationRequest::History {
                peer,
                before,
                limit,
            },
            ConversationStep::GroupHistory {
                group,
                before,
                limit,
            } => ConversationRequest::GroupHistory {
                group,
                before,
                limit,
            },
        }
    }
}

impl Phase for ConversationPhase {
    type Frame = ConversationRequest;
    type Step = ConversationStep;

    fn step(&mut self, frame: ConversationRequest) -> Result<ConversationStep, ErrorCode> {
        use ConversationRequest as R;
        match (&self.state, frame) {
            (StreamKind::Unknown, R::Open { peer }) => {
                self.state = StreamKind::Conversation(peer.clone());
                Ok(ConversationStep::Open(peer))
            }
            (StreamKind::Unknown, R::Upload { blob, size }) => {
                self.state = StreamKind::Transfer;
                Ok(ConversationStep::Upload { blob, size })
            }
            (
                StreamKind::Unknown,
                R::Download {
                    blob,
                    owner,
                    offset,
                },
            ) => {
                self.state = StreamKind::Transfer;
                Ok(ConversationStep::Download {
                    blob,
                    owner,
                    offset,
                })
            }
            (
                StreamKind::Conversation(_),
                R::Chat {
                    id,
                    sent_at_ms,
                    body,
                    file,
                },
            ) => Ok(ConversationStep::Chat {
                id,
                sent_at_ms,
                body,
                file,
            }),
            (StreamKind::Unknown, R::OpenGroup { group }) => {
                self.state = StreamKind::Group;
                Ok(ConversationStep::OpenGroup(group))
            }
            (
                StreamKind::Group,
                R::GroupChat {
                    id,
                    sent_at_ms,
                    epoch,
                    body,
                },
            ) => Ok(ConversationStep::GroupChat {
                id,
                sent_at_ms,
                epoch,
                body,
                file: None,
            }),
            (
                StreamKind::Group,
                R::GroupFile {
                    id,
                    sent_at_ms,
                    epoch,
                    body,
                    file,
                },
            ) => Ok(ConversationStep::GroupChat {
                id,
                sent_at_ms,
                epoch,
                body,
                file: Some(file),
            }),
            (StreamKind::Unknown, R::GroupDownload { group, seq, offset }) => {
                self.state = StreamKind::Transfer;
                Ok(ConversationStep::GroupDownload { group, seq, offset })
            }
            (
                StreamKind::Unknown,
                R::History {
                    peer,
                    before,
                    limit,
                },
            ) => {
                self.state = StreamKind::Transfer;
                Ok(ConversationStep::History {
                    peer,
                    before,
                    limit,
                })
            }
            (
                StreamKind::Unknown,
                R::GroupHistory {
                    group,
                    before,
                    limit,
                },
            ) => {
                self.state = StreamKind::Transfer;
                Ok(ConversationStep::GroupHistory {
                    group,
                    before,
                    limit,
                })
            }
            _ => Err(ErrorCode::UnexpectedFrame),
        }
    }
}

/// One inbound stream: frame boundaries, limits, decoding and the phase.
#[derive(Debug)]
pub struct Inbound<P: Phase> {
    phase: P,
    max_frame: usize,
    /// The header, then the payload, of the frame being read.
    buf: Vec<u8>,
    /// The payload length, once the header is complete and allowed.
    len: Option<usize>,
    failed: Option<ErrorCode>,
}

impl<P: Phase> Inbound<P> {
    /// A stream in `phase` whose frames may be at most `max_frame` bytes.
    pub fn new(phase: P, max_frame: usize) -> Self {
        Self {
            phase,
            max_frame,
            buf: Vec::new(),
            len: None,
            failed: None,
        }
    }

    /// The phase, for what it knows (a conversation's peer).
    pub fn phase(&self) -> &P {
        &self.phase
    }

    /// How many more bytes complete the header or the frame being read; feeding at most
    /// this much keeps the buffer within one frame. 0 after an error.
    pub fn wants(&self) -> usize {
        if self.failed.is_some() {
            return 0;
        }
        match self.len {
            None => HEADER_LEN - self.buf.len(),
            Some(len) => HEADER_LEN + len - self.buf.len(),
        }
    }

    /// Bytes held now (never more than a header and one allowed payload, when fed no
    /// more than [`Inbound::wants`] at a time).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether the stream may end here: between frames, with nothing half read.
    pub fn at_boundary(&self) -> bool {
        self.buf.is_empty() && self.failed.is_none()
    }

    /// Takes bytes read from the stream. Bytes beyond [`Inbound::wants`] are kept for the
    /// frames after; a caller that feeds more than it was asked for holds them.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Frees the buffer if it holds no partial frame; it grows again as frames come.
    pub fn release_buffer(&mut self) {
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
    }

    /// The next request, `Ok(None)` when more bytes are needed, or the code to close the
    /// stream with. After an error, always that error.
    pub fn next_step(&mut self) -> Result<Option<P::Step>, ErrorCode> {
        if let Some(code) = self.failed {
            return Err(code);
        }
        match self.advance() {
            Ok(step) => Ok(step),
            Err(code) => {
                self.failed = Some(code);
                self.buf = Vec::new();
                self.len = None;
                Err(code)
            }
        }
    }

    fn advance(&mut self) -> Result<Option<P::Step>, ErrorCode> {
        let len = match self.len {
            Some(len) => len,
            None => {
                let Some(header) = self.buf.first_chunk::<HEADER_LEN>() else {
                    return Ok(None);
                };
                let len = parse_header(*header, self.max_frame).map_err(code_of)?;
                self.len = Some(len);
                len
            }
        };
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let frame = decode_payload::<P::Frame>(&self.buf[HEADER_LEN..HEADER_LEN + len]);
        self.buf.drain(..HEADER_LEN + len);
        self.len = None;
        self.phase.step(frame.map_err(code_of)?).map(Some)
    }
}

fn code_of(e: FrameError) -> ErrorCode {
    match e {
        FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        FrameError::Malformed(_) => ErrorCode::Malformed,
    }
}

/// Drives both stream machines with `data` and checks what must hold for any input: no
/// panic; chunking does not change the outcome; the buffer stays within one frame when fed
/// what it asks for; an error is final; no chat before `Open`, no second `Open` or `Hello`.
/// The first byte picks the chunk sizes; the rest is the stream. Shared by the `stream`
/// fuzz target and the test suite's bounded run.
pub fn exercise(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let max = 64 + usize::from(seed) * 16;
    check(ConversationPhase::default(), stream, seed, max, |steps| {
        let opens = steps
            .iter()
            .filter(|s| matches!(s, ConversationStep::Open(_)))
            .count();
        assert!(opens <= 1, "one Open at most");
        if let Some(first) = steps.first() {
            let opening = matches!(
                first,
                ConversationStep::Open(_)
                    | ConversationStep::Upload { .. }
                    | ConversationStep::Download { .. }
            );
            assert!(opening, "Open, Upload or Download first");
            if !matches!(first, ConversationStep::Open(_)) {
                assert_eq!(steps.len(), 1, "nothing after a transfer's first frame");
            }
        }
    });
    check(ControlPhase::default(), stream, seed, max, |steps| {
        let hellos = steps
            .iter()
            .filter(|s| matches!(s, ControlStep::Hello { .. }))
            .count();
        assert!(hellos <= 1, "one Hello at most");
        if let Some(first) = steps.first() {
            assert!(matches!(first, ControlStep::Hello { .. }), "Hello first");
        }
    });
}

fn check<P: Phase + Default>(
    phase: P,
    stream: &[u8],
    seed: u8,
    max: usize,
    order: impl Fn(&[P::Step]),
) where
    P::Step: PartialEq + std::fmt::Debug,
{
    // All at once.
    let mut whole = Inbound::new(P::default(), max);
    whole.feed(stream);
    let (whole_steps, whole_end) = drain(&mut whole);
    // In chunks of at most what it asks for, sized by the seed.
    let mut chunked = Inbound::new(phase, max);
    let mut steps = Vec::new();
    let mut end = None;
    let mut rest = stream;
    let mut size = usize::from(seed % 7) + 1;
    while end.is_none() {
        let (more, e) = drain(&mut chunked);
        steps.extend(more);
        end = e;
        if end.is_some() || rest.is_empty() {
            break;
        }
        let take = size.min(chunked.wants()).min(rest.len()).max(1);
        chunked.feed(&rest[..take]);
        rest = &rest[take..];
        assert!(
            chunked.buffered() <= HEADER_LEN + max,
            "buffer within one frame"
        );
        size = size % 13 + 1;
    }
    assert_eq!(steps, whole_steps, "chunking changes nothing");
    assert_eq!(end, whole_end, "the same end");
    if let Some(code) = end {
        assert_eq!(chunked.next_step().err(), Some(code), "errors are final");
        assert_eq!(chunked.wants(), 0);
    }
    order(&steps);
}

/// Every step available now, and the error that ended the stream, if one did.
fn drain<P: Phase>(inbound: &mut Inbound<P>) -> (Vec<P::Step>, Option<ErrorCode>) {
    let mut steps = Vec::new();
    loop {
        match inbound.next_step() {
            Ok(Some(step)) => steps.push(step),
            Ok(None) => return (steps, None),
            Err(code) => return (steps, Some(code)),
        }
    }
}

#[cfg(test)]
mod tests;
