//! The wire, byte for byte, as docs/PROTOCOL.md writes it down: every frame kind's tag,
//! every field's place and encoding. A change to a message's shape or to the order of an
//! enum's variants fails here first; the document and this file change together, or not
//! at all.

use quiver_proto::files::{BlobId, FileRef, FileResponse};
use quiver_proto::{
    encode_frame, ClientMsgId, ControlRequest, ControlResponse, ConversationRequest,
    ConversationResponse, DeviceId, Entry, EntryKind, ErrorCode, GroupChange, GroupId, ReceiptKind,
    ReceiptOf, Role, Seq, UserId, PROTOCOL_VERSION,
};
use serde::Serialize;

/// The payload of `msg`'s frame, checking the 4-byte big-endian length before it.
fn payload<T: Serialize>(msg: &T) -> Vec<u8> {
    let frame = encode_frame(msg).unwrap();
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4);
    frame[4..].to_vec()
}

fn bob() -> UserId {
    UserId::parse("bob").unwrap()
}

/// The parts, one after another.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn control_stream() {
    let hello = ControlRequest::Hello {
        version: PROTOCOL_VERSION,
        token: "tk".into(),
    };
    assert_eq!(payload(&hello), [0, 2, 2, b't', b'k']);
    assert_eq!(payload(&ControlRequest::Ack { seq: Seq(3) }), [1, 3]);
    // Integers are LEB128 varints: 300 = 0xac 0x02.
    assert_eq!(
        payload(&ControlRequest::Read { seq: Seq(300) }),
        [2, 0xac, 0x02]
    );
    let welcome = ControlResponse::Welcome {
        user: bob(),
        device: DeviceId(5),
        cursor: Seq(7),
    };
    assert_eq!(payload(&welcome), [0, 3, b'b', b'o', b'b', 5, 7]);
    let refused = ControlResponse::Error {
        code: ErrorCode::Unauthenticated,
        message: "x".into(),
    };
    assert_eq!(payload(&refused), [1, 3, 1, b'x']);
}

#[test]
fn conversation_stream() {
    let open = ConversationRequest::Open { peer: bob() };
    assert_eq!(payload(&open), [0, 3, b'b', b'o', b'b']);
    let chat = ConversationRequest::Chat {
        id: ClientMsgId(9),
        sent_at_ms: 1,
        body: vec![0xaa, 0xbb],
        file: None,
    };
    assert_eq!(payload(&chat), [1, 9, 1, 2, 0xaa, 0xbb, 0]);
    let with_file = ConversationRequest::Chat {
        id: ClientMsgId(9),
        sent_at_ms: 1,
        body: vec![],
        file: Some(FileRef {
            blob: BlobId([2; 32]),
            size: 5,
        }),
    };
    assert_eq!(
        payload(&with_file),
        cat(&[&[1, 9, 1, 0, 1], &[2; 32], &[5]])
    );
    let sent = ConversationResponse::Sent {
        id: ClientMsgId(9),
        seq: Seq(4),
    };
    assert_eq!(payload(&sent), [0, 9, 4]);
    let closing = ConversationResponse::Error {
        code: ErrorCode::RateLimited,
    };
    assert_eq!(payload(&closing), [1, 12]);
    let rejected = ConversationResponse::Rejected {
        id: ClientMsgId(9),
        code: ErrorCode::QuotaExceeded,
    };
    assert_eq!(payload(&rejected), [2, 9, 16]);
}

#[test]
fn file_streams() {
    let upload = ConversationRequest::Upload {
        blob: BlobId([2; 32]),
        size: 5,
    };
    assert_eq!(payload(&upload), cat(&[&[2], &[2; 32], &[5]]));
    let download = ConversationRequest::Download {
        blob: BlobId([2; 32]),
        owner: bob(),
        offset: 0,
    };
    assert_eq!(
        payload(&download),
        cat(&[&[3], &[2; 32], &[3, b'b', b'o', b'b', 0]])
    );
    let ready = FileResponse::Ready { offset: 1, size: 2 };
    assert_eq!(payload(&ready), [0, 1, 2]);
    assert_eq!(payload(&FileResponse::Stored), [1]);
    let error = FileResponse::Error {
        code: ErrorCode::NotFound,
        message: "no".into(),
    };
    assert_eq!(payload(&error), [2, 17, 2, b'n', b'o']);
}

#[test]
fn push_stream() {
    let chat = Entry {
        seq: Seq(4),
        peer: bob(),
        kind: EntryKind::Chat {
            id: ClientMsgId(9),
            sent_at_ms: 1,
            body: vec![0xaa],
            file: None,
        },
    };
    assert_eq!(
        payload(&chat),
        [4, 3, b'b', b'o', b'b', 0, 9, 1, 1, 0xaa, 0]
    );
    for (kind, tag) in [(ReceiptKind::Delivered, 0), (ReceiptKind::Read, 1)] {
        let receipt = Entry {
            seq: Seq(5),
            peer: bob(),
            kind: EntryKind::Receipt {
                kind,
                id: ClientMsgId(9),
                seq: Seq(4),
            },
        };
        assert_eq!(payload(&receipt), [5, 3, b'b', b'o', b'b', 1, tag, 9, 4]);
    }
    // Two DELIVERED in one entry: messages 9 and 10, at seqs 4 and 6 of bob's inbox.
    let receipts = Entry {
        seq: Seq(7),
        peer: bob(),
        kind: EntryKind::Receipts {
            kind: ReceiptKind::Delivered,
            messages: vec![
                ReceiptOf {
                    id: ClientMsgId(9),
                    seq: Seq(4),
                },
                ReceiptOf {
                    id: ClientMsgId(10),
                    seq: Seq(6),
                },
            ],
        },
    };
    assert_eq!(
        payload(&receipts),
        [7, 3, b'b', b'o', b'b', 5, 0, 2, 9, 4, 10, 6]
    );
}

#[test]
fn group_frames() {
    let group = GroupId::parse("g00000000000000ff").unwrap();
    let g = cat(&[&[17], group.as_str().as_bytes()]);
    let ack = ControlRequest::GroupAck {
        group: group.clone(),
        seq: Seq(3),
    };
    assert_eq!(payload(&ack), cat(&[&[3], &g, &[3]]));
    let read = ControlRequest::GroupRead {
        group: group.clone(),
        seq: Seq(3),
    };
    assert_eq!(payload(&read), cat(&[&[4], &g, &[3]]));
    let open = ConversationRequest::OpenGroup {
        group: group.clone(),
    };
    assert_eq!(payload(&open), cat(&[&[4], &g]));
    let chat = ConversationRequest::GroupChat {
        id: ClientMsgId(9),
        sent_at_ms: 1,
        epoch: 1,
        body: vec![0xaa, 0xbb],
    };
    assert_eq!(payload(&chat), [5, 9, 1, 1, 2, 0xaa, 0xbb]);
    let entry = Entry {
        seq: Seq(4),
        peer: bob(),
        kind: EntryKind::GroupChat {
            id: ClientMsgId(9),
            sent_at_ms: 1,
            epoch: 2,
            body: vec![0xaa],
        },
    };
    let pushed = ControlResponse::GroupEntry {
        group: group.clone(),
        entry,
    };
    let entry_bytes = [4, 3, b'b', b'o', b'b', 2, 9, 1, 2, 1, 0xaa];
    assert_eq!(payload(&pushed), cat(&[&[2], &g, &entry_bytes]));
    let file = FileRef {
        blob: BlobId([7; 32]),
        size: 5,
    };
    let file_chat = ConversationRequest::GroupFile {
        id: ClientMsgId(9),
        sent_at_ms: 1,
        epoch: 1,
        body: vec![0xaa, 0xbb],
        file,
    };
    assert_eq!(
        payload(&file_chat),
        cat(&[&[8, 9, 1, 1, 2, 0xaa, 0xbb], &[7; 32], &[5]])
    );
    let download = ConversationRequest::GroupDownload {
        group: group.clone(),
        seq: Seq(4),
        offset: 300,
    };
    assert_eq!(payload(&download), cat(&[&[9], &g, &[4, 0xac, 2]]));
    let file_entry = Entry {
        seq: Seq(4),
        peer: bob(),
        kind: EntryKind::GroupFile {
            id: ClientMsgId(9),
            sent_at_ms: 1,
            epoch: 2,
            body: vec![0xaa],
            file,
        },
    };
    assert_eq!(
        payload(&file_entry),
        cat(&[
            &[4, 3, b'b', b'o', b'b', 4, 9, 1, 2, 1, 0xaa],
            &[7; 32],
            &[5]
        ])
    );
    let changes = [
        (GroupChange::Created { name: "t".into() }, vec![0, 1, b't']),
        (
            GroupChange::Added {
                user: bob(),
                role: Role::Member,
            },
            vec![1, 3, b'b', b'o', b'b', 2],
        ),
        (
            GroupChange::Removed {
                user: bob(),
                epoch: 2,
            },
            vec![2, 3, b'b', b'o', b'b', 2],
        ),
        (GroupChange::Left { epoch: 3 }, vec![3, 3]),
        (GroupChange::Renamed { name: "t".into() }, vec![4, 1, b't']),
        (
            GroupChange::RoleChanged {
                user: bob(),
                role: Role::Owner,
            },
            vec![5, 3, b'b', b'o', b'b', 0],
        ),
    ];
    for (change, bytes) in changes {
        let entry = Entry {
            seq: Seq(1),
            peer: bob(),
            kind: EntryKind::Member(change),
        };
        assert_eq!(
            payload(&entry),
            cat(&[&[1, 3, b'b', b'o', b'b', 3], &bytes])
        );
    }
}

#[test]
fn every_error_code_has_the_number_the_document_gives() {
    use ErrorCode::*;
    let table = [
        (Malformed, 1),
        (FrameTooLarge, 2),
        (Unauthenticated, 3),
        (VersionMismatch, 4),
        (NotFriends, 5),
        (BodyTooLarge, 6),
        (UnexpectedFrame, 7),
        (InvalidSeq, 8),
        (Internal, 9),
        (Unavailable, 10),
        (ShuttingDown, 11),
        (RateLimited, 12),
        (TooManyStreams, 13),
        (TooManyConnections, 14),
        (FileTooLarge, 15),
        (QuotaExceeded, 16),
        (NotFound, 17),
        (Corrupt, 18),
        (StorageFull, 19),
        (NotMember, 20),
        (StaleEpoch, 21),
    ];
    for (code, n) in table {
        assert_eq!(code.to_u32(), n);
        assert_eq!(ErrorCode::from_u32(n), Some(code));
    }
    let known = (0..1000).filter_map(ErrorCode::from_u32).count();
    assert_eq!(known, table.len(), "a code the document does not list");
    let doc = include_str!("../../docs/PROTOCOL.md");
    for (code, n) in table {
        let row = format!("| {n} | `{code:?}` |");
        assert!(doc.contains(&row), "docs/PROTOCOL.md lacks the row {row}");
    }
}

#[test]
fn history_streams() {
    let page = ConversationRequest::History {
        peer: Some(bob()),
        before: Some(Seq(300)),
        limit: 500,
    };
    assert_eq!(
        payload(&page),
        [6, 1, 3, b'b', b'o', b'b', 1, 0xac, 0x02, 0xf4, 0x03]
    );
    let newest = ConversationRequest::History {
        peer: None,
        before: None,
        limit: 2,
    };
    assert_eq!(payload(&newest), [6, 0, 0, 2]);
    let group = GroupId::parse("g0123456789abcdef").unwrap();
    let g = payload(&group);
    let group_page = ConversationRequest::GroupHistory {
        group,
        before: None,
        limit: 2,
    };
    assert_eq!(payload(&group_page), cat(&[&[7], &g, &[0, 2]]));
    let entry = Entry {
        seq: Seq(3),
        peer: bob(),
        kind: EntryKind::Receipt {
            kind: ReceiptKind::Read,
            id: ClientMsgId(9),
            seq: Seq(4),
        },
    };
    let mut one = vec![3];
    one.extend(payload(&entry));
    assert_eq!(payload(&ConversationResponse::HistoryEntry { entry }), one);
    assert_eq!(
        payload(&ConversationResponse::HistoryEnd { next: Some(Seq(3)) }),
        [4, 1, 3]
    );
    assert_eq!(
        payload(&ConversationResponse::HistoryEnd { next: None }),
        [4, 0]
    );
}

/// A datagram's payload: the bare postcard encoding, no frame header.
fn raw<T: Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_stdvec(msg).unwrap()
}

#[test]
fn datagrams() {
    use quiver_proto::datagram::{ClientDatagram, NodeDatagram, PresenceState};
    let group = GroupId::parse("g0123456789abcdef").unwrap();
    let g = payload(&group);
    assert_eq!(
        raw(&ClientDatagram::Typing { to: bob() }),
        [0, 3, b'b', b'o', b'b']
    );
    assert_eq!(
        raw(&ClientDatagram::GroupTyping {
            group: group.clone()
        }),
        cat(&[&[1], &g])
    );
    let away = ClientDatagram::Presence {
        state: PresenceState::Away,
    };
    assert_eq!(raw(&away), [2, 1]);
    assert_eq!(
        raw(&NodeDatagram::Typing { from: bob() }),
        [0, 3, b'b', b'o', b'b']
    );
    let typing = NodeDatagram::GroupTyping { group, from: bob() };
    assert_eq!(raw(&typing), cat(&[&[1], &g, &[3, b'b', b'o', b'b']]));
    let offline = NodeDatagram::Presence {
        user: bob(),
        state: PresenceState::Offline,
        last_seen_ms: 300,
    };
    assert_eq!(raw(&offline), [2, 3, b'b', b'o', b'b', 2, 0xac, 0x02]);
}
