//! The stream reader's tests: frames split at every byte, phases, bounds.

use super::*;
use crate::encode_frame;

fn bytes(frames: &[ConversationRequest]) -> Vec<u8> {
    frames
        .iter()
        .flat_map(|f| encode_frame(f).unwrap())
        .collect()
}

fn chat(n: u8) -> ConversationRequest {
    ConversationRequest::Chat {
        id: ClientMsgId(n.into()),
        sent_at_ms: 0,
        body: vec![n; 3],
        file: None,
    }
}

#[test]
fn frames_come_out_whole_whatever_the_chunking() {
    let bob = UserId::parse("bob").unwrap();
    let input = bytes(&[
        ConversationRequest::Open { peer: bob.clone() },
        chat(1),
        chat(2),
    ]);
    for chunk in 1..input.len() {
        let mut s = Inbound::new(ConversationPhase::default(), 1024);
        let mut steps = Vec::new();
        for piece in input.chunks(chunk) {
            s.feed(piece);
            while let Some(step) = s.next_step().unwrap() {
                steps.push(step);
            }
        }
        assert_eq!(steps.len(), 3, "chunks of {chunk}");
        assert_eq!(steps[0], ConversationStep::Open(bob.clone()));
        assert!(s.at_boundary());
        assert_eq!(s.phase().peer(), Some(&bob));
    }
}

#[test]
fn releasing_the_buffer_frees_it_between_frames_and_loses_no_partial_frame() {
    let bob = UserId::parse("bob").unwrap();
    let input = bytes(&[ConversationRequest::Open { peer: bob }, chat(1)]);
    let open_len = input.len() - bytes(&[chat(1)]).len();
    let mut s = Inbound::new(ConversationPhase::default(), 1024);
    s.feed(&input[..open_len]);
    assert!(s.next_step().unwrap().is_some());
    s.release_buffer();
    assert_eq!(s.buf.capacity(), 0, "nothing pending: freed");
    // Half of the next frame is kept through a release.
    s.feed(&input[open_len..open_len + 3]);
    s.release_buffer();
    assert_eq!(s.next_step().unwrap(), None);
    s.feed(&input[open_len + 3..]);
    let step = s.next_step().unwrap().unwrap();
    assert_eq!(ConversationRequest::from(step), chat(1));
}

#[test]
fn steps_turn_back_into_the_frames_they_came_from() {
    let frames = [
        ConversationRequest::Open {
            peer: UserId::parse("bob").unwrap(),
        },
        chat(4),
    ];
    let mut s = Inbound::new(ConversationPhase::default(), 1024);
    s.feed(&bytes(&frames));
    for frame in frames {
        let step = s.next_step().unwrap().unwrap();
        assert_eq!(ConversationRequest::from(step), frame);
    }
}

#[test]
fn order_and_limits_are_enforced_and_errors_are_final() {
    let mut s = Inbound::new(ConversationPhase::default(), 1024);
    s.feed(&bytes(&[chat(1)]));
    assert_eq!(
        s.next_step(),
        Err(ErrorCode::UnexpectedFrame),
        "chat before open"
    );
    s.feed(&bytes(&[chat(2)]));
    assert_eq!(
        s.next_step(),
        Err(ErrorCode::UnexpectedFrame),
        "still closed"
    );
    assert_eq!(s.wants(), 0);

    let mut s = Inbound::new(ConversationPhase::default(), 1024);
    s.feed(&(100_000_000u32).to_be_bytes());
    assert_eq!(
        s.next_step(),
        Err(ErrorCode::FrameTooLarge),
        "before any payload"
    );
    assert_eq!(s.buffered(), 0);

    let mut s = Inbound::new(ControlPhase::default(), 1024);
    s.feed(&encode_frame(&ControlRequest::Ack { seq: Seq(1) }).unwrap());
    assert_eq!(
        s.next_step(),
        Err(ErrorCode::UnexpectedFrame),
        "ack before hello"
    );

    let mut s = Inbound::new(ControlPhase::default(), 1024);
    let hello = ControlRequest::Hello {
        version: 1,
        token: "t".into(),
    };
    s.feed(&encode_frame(&hello).unwrap());
    assert!(matches!(s.next_step(), Ok(Some(ControlStep::Hello { .. }))));
    s.feed(&encode_frame(&hello).unwrap());
    assert_eq!(
        s.next_step(),
        Err(ErrorCode::UnexpectedFrame),
        "hello twice"
    );

    let mut s = Inbound::new(ControlPhase::default(), 1024);
    s.feed(&[0, 0, 0, 2, 0xff, 0xff]);
    assert_eq!(s.next_step(), Err(ErrorCode::Malformed));
}

/// A bounded, deterministic version of the `stream` fuzz target: valid streams, their
/// prefixes, and byte-level mutations of them, through [`exercise`].
#[test]
fn mutated_streams_keep_every_invariant() {
    let bob = UserId::parse("bob").unwrap();
    let hello = ControlRequest::Hello {
        version: 1,
        token: "a.b".into(),
    };
    let mut valid = bytes(&[
        ConversationRequest::Open { peer: bob.clone() },
        chat(1),
        chat(2),
    ]);
    let transfer = bytes(&[
        ConversationRequest::Download {
            blob: BlobId([7; 32]),
            owner: bob,
            offset: 9,
        },
        chat(3),
    ]);
    let control: Vec<u8> = [hello, ControlRequest::Ack { seq: Seq(3) }]
        .iter()
        .flat_map(|f| encode_frame(f).unwrap())
        .collect();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for base in [std::mem::take(&mut valid), control, transfer] {
        for cut in 0..=base.len() {
            for seed in [0u8, 3, 200] {
                let mut input = vec![seed];
                input.extend_from_slice(&base[..cut]);
                exercise(&input);
            }
        }
        for _ in 0..20_000 {
            let mut input = vec![random() as u8];
            input.extend_from_slice(&base);
            for _ in 0..(random() % 4 + 1) {
                let at = (random() as usize) % input.len();
                input[at] = random() as u8;
            }
            exercise(&input);
        }
    }
}
