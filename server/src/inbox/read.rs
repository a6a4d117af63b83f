//! Reading an inbox back: durable entries by `seq`, as entries or with the push frame cut
//! from the stored record (so a push writes the stored bytes without encoding the entry
//! again). Only what the durable head covers is read: the rest may not be in the file yet.

use super::{Inbox, InboxError};
use crate::log::Place;
use quiver_proto::{Entry, Seq, UserId};

/// A record's owner, its entry, and the entry's own encoding — the record is the owner's
/// encoding followed by the entry's, so that is the payload of the entry's push frame.
fn decode_parts(record: &[u8]) -> Result<(&str, Entry, &[u8]), InboxError> {
    let corrupt = |e: postcard::Error| InboxError::Corrupt(e.to_string());
    let (owner, encoded) = postcard::take_from_bytes::<&str>(record).map_err(corrupt)?;
    match postcard::take_from_bytes::<Entry>(encoded).map_err(corrupt)? {
        (entry, []) => Ok((owner, entry, encoded)),
        (_, rest) => Err(InboxError::Corrupt(format!(
            "{} bytes after an entry",
            rest.len()
        ))),
    }
}

/// A durable entry and its push frame ([`Inbox::read_framed`]): pushing it writes the
/// stored bytes, without encoding the entry again.
#[derive(Debug, Clone)]
pub struct Framed {
    /// The entry.
    pub entry: Entry,
    /// Its frame (header and payload), as a session writes it to a push stream.
    pub frame: bytes::Bytes,
}

impl Framed {
    /// `entry` with its frame encoded: for an entry that did not come from a local log.
    pub fn encode(entry: Entry) -> Result<Self, quiver_proto::FrameError> {
        let frame = quiver_proto::encode_frame(&entry)?.into();
        Ok(Self { entry, frame })
    }
}

impl Inbox {
    /// Durable entries of `owner` from `from` through `to`, in order, at most `limit`.
    /// Entries retention removed are left out.
    pub fn read(
        &self,
        owner: &UserId,
        from: Seq,
        to: Seq,
        limit: usize,
    ) -> Result<Vec<Entry>, InboxError> {
        self.read_mapped(owner, from, to, limit, |entry, _| Ok(entry))
    }

    /// [`Inbox::read`], each entry with its push frame cut from the stored record.
    pub fn read_framed(
        &self,
        owner: &UserId,
        from: Seq,
        to: Seq,
        limit: usize,
    ) -> Result<Vec<Framed>, InboxError> {
        self.read_mapped(owner, from, to, limit, |entry, encoded| {
            let frame = quiver_proto::frame_encoded(encoded)
                .map_err(|e| InboxError::Corrupt(e.to_string()))?;
            Ok(Framed {
                entry,
                frame: frame.into(),
            })
        })
    }

    fn read_mapped<T>(
        &self,
        owner: &UserId,
        from: Seq,
        to: Seq,
        limit: usize,
        map: impl Fn(Entry, &[u8]) -> Result<T, InboxError>,
    ) -> Result<Vec<T>, InboxError> {
        let places: Vec<(Seq, Place)> = {
            let owners = self.shard(owner);
            let Some(state) = owners.get(owner) else {
                return Ok(Vec::new());
            };
            // Only durable entries: the rest may not be in the file yet.
            let to = to.min(*state.durable.borrow());
            (from.0.max(state.floor + 1)..=to.0)
                .filter_map(|seq| state.place(Seq(seq)).map(|place| (Seq(seq), place)))
                .take(limit)
                .collect()
        };
        let mut entries = Vec::with_capacity(places.len());
        for (seq, place) in places {
            entries.extend(self.entry_at(owner, seq, place, &map)?);
        }
        Ok(entries)
    }

    /// One durable entry of `owner`'s log, unless retention removed it.
    pub fn get(&self, owner: &UserId, seq: Seq) -> Result<Option<Entry>, InboxError> {
        let place = self
            .shard(owner)
            .get(owner)
            .filter(|s| seq <= *s.durable.borrow())
            .and_then(|s| s.place(seq));
        match place {
            Some(place) => self.entry_at(owner, seq, place, |entry, _| Ok(entry)),
            None => Ok(None),
        }
    }

    /// `map` of the entry at `place` and its encoding; `None` if its segment was removed
    /// since it was looked up.
    fn entry_at<T>(
        &self,
        owner: &UserId,
        seq: Seq,
        place: Place,
        map: impl Fn(Entry, &[u8]) -> Result<T, InboxError>,
    ) -> Result<Option<T>, InboxError> {
        let read = self.log.read_with(place, |record| {
            let (stored_owner, entry, encoded) = decode_parts(record)?;
            if stored_owner != owner.as_str() || entry.seq != seq {
                return Err(InboxError::Corrupt(format!(
                    "index of {owner} at {seq} names another record"
                )));
            }
            map(entry, encoded)
        });
        match read {
            Ok(mapped) => mapped.map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
