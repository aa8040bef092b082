//! The keys each revision created, packed: one history entry per revision
//! for the first writes of keys that had nothing stored.
//!
//! Why: a key's first write replaces nothing, so its entry in the history
//! would only say "written at revision r". Kept per key, that entry cost
//! more than the key itself (on disk, a million keys loaded in batches took
//! 2.46x their raw size against 1.39x before versions; in memory, one map
//! node and one copy of the key each). Packed per revision, a creation costs
//! its key and two or three bytes, and a batch of a thousand creations is
//! one entry. The history of a key's later writes (what they replaced) stays
//! one entry per write, since reads at a past revision look those up by key.
//!
//! The packed form, shared by every backend: for each created key in key
//! order, the write's place in its transaction and the key's length as
//! protobuf varints (prost's), then the key.

use std::iter::Peekable;

use bytes::{Buf, Bytes};

use super::apply::Changes;
use super::{Revision, StoreError};

/// One write of the change log: its revision, key and place in its
/// transaction.
pub(crate) type Change = (Revision, Bytes, u32);

/// The packed form of `created`, (key, place in the transaction) pairs of one
/// revision, each key once.
pub(crate) fn pack(created: &mut [(Bytes, u32)]) -> Vec<u8> {
    created.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let size = created.iter().map(|(key, _)| key.len() + 8).sum();
    let mut packed = Vec::with_capacity(size);
    for (key, seq) in created.iter() {
        prost::encoding::encode_varint(u64::from(*seq), &mut packed);
        prost::encoding::encode_varint(key.len() as u64, &mut packed);
        packed.extend_from_slice(key);
    }
    packed
}

/// The writes packed in `packed` at `revision`, in key order; the keys are
/// slices of `packed` (no copies).
pub(crate) fn unpack(revision: Revision, packed: Bytes) -> Unpacked {
    Unpacked {
        revision,
        rest: packed,
    }
}

/// The iterator of [`unpack`].
pub(crate) struct Unpacked {
    revision: Revision,
    rest: Bytes,
}

impl Iterator for Unpacked {
    type Item = Result<Change, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let revision = self.revision;
        let mut decode = || -> Result<Change, StoreError> {
            let corrupt = || {
                StoreError::Internal(format!(
                    "the keys created at revision {revision} are stored corrupt"
                ))
            };
            let seq = prost::encoding::decode_varint(&mut self.rest).map_err(|_| corrupt())?;
            let len = prost::encoding::decode_varint(&mut self.rest).map_err(|_| corrupt())?;
            let len = usize::try_from(len)
                .ok()
                .filter(|len| *len <= self.rest.remaining())
                .ok_or_else(corrupt)?;
            let seq = u32::try_from(seq).map_err(|_| corrupt())?;
            Ok((revision, self.rest.split_to(len), seq))
        };
        let change = decode();
        if change.is_err() {
            self.rest.clear();
        }
        Some(change)
    }
}

/// Calls `visit` with the writes of `history` and `created`, each in
/// (revision, key) order, merged into that order, until it breaks. (A key
/// is never in both at one revision: its first write is in `created`, every
/// later one in `history`.)
pub(crate) fn merge(
    history: impl Iterator<Item = Result<Change, StoreError>>,
    created: impl Iterator<Item = Result<Change, StoreError>>,
    visit: &mut Changes<'_>,
) -> Result<(), StoreError> {
    let mut history = history.peekable();
    let mut created = created.peekable();
    loop {
        let next = match (history.peek(), created.peek()) {
            (None, None) => return Ok(()),
            (Some(Ok(h)), Some(Ok(c))) => {
                if (h.0, &h.1) <= (c.0, &c.1) {
                    take(&mut history)?
                } else {
                    take(&mut created)?
                }
            }
            (Some(_), None) | (Some(Err(_)), _) => take(&mut history)?,
            (None, Some(_)) | (_, Some(Err(_))) => take(&mut created)?,
        };
        let (revision, key, seq) = next;
        if visit(revision, &key, seq).is_break() {
            return Ok(());
        }
    }
}

fn take(
    from: &mut Peekable<impl Iterator<Item = Result<Change, StoreError>>>,
) -> Result<Change, StoreError> {
    from.next()
        .unwrap_or_else(|| Err(StoreError::Internal("an empty change log was read".into())))
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use super::*;

    fn changes(list: &[(Revision, &str, u32)]) -> Vec<Result<Change, StoreError>> {
        list.iter()
            .map(|(r, k, s)| Ok((*r, Bytes::copy_from_slice(k.as_bytes()), *s)))
            .collect()
    }

    #[test]
    fn packed_keys_come_back_in_key_order_with_their_places() {
        let mut created = vec![
            (Bytes::from("b"), 0),
            (Bytes::from(vec![0u8; 300]), 7),
            (Bytes::from("a"), 1_000),
            (Bytes::new(), 2),
        ];
        let packed = pack(&mut created);
        let back: Vec<Change> = unpack(9, Bytes::from(packed))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            back,
            vec![
                (9, Bytes::new(), 2),
                (9, Bytes::from(vec![0u8; 300]), 7),
                (9, Bytes::from("a"), 1_000),
                (9, Bytes::from("b"), 0),
            ]
        );
    }

    #[test]
    fn a_corrupt_pack_is_an_error_not_a_panic() {
        let packed = pack(&mut [(Bytes::from("key"), 1)]);
        for cut in 1..packed.len() {
            let read: Vec<_> = unpack(3, Bytes::copy_from_slice(&packed[..cut])).collect();
            assert!(read.last().unwrap().is_err(), "cut at {cut}: {read:?}");
        }
        let read: Vec<_> = unpack(3, Bytes::from_static(&[0xff; 11])).collect();
        assert_eq!(read.len(), 1);
        assert!(read[0].is_err());
    }

    #[test]
    fn merged_changes_are_in_revision_then_key_order() {
        let history = changes(&[(2, "b", 1), (3, "a", 0), (5, "z", 0)]);
        let created = changes(&[(2, "a", 0), (2, "c", 2), (4, "x", 0), (5, "y", 1)]);
        let mut seen = Vec::new();
        merge(history.into_iter(), created.into_iter(), &mut |r, k, s| {
            seen.push((r, String::from_utf8(k.to_vec()).unwrap(), s));
            ControlFlow::Continue(())
        })
        .unwrap();
        let seen: Vec<_> = seen.iter().map(|(r, k, s)| (*r, k.as_str(), *s)).collect();
        assert_eq!(
            seen,
            [
                (2, "a", 0),
                (2, "b", 1),
                (2, "c", 2),
                (3, "a", 0),
                (4, "x", 0),
                (5, "y", 1),
                (5, "z", 0)
            ]
        );
    }

    #[test]
    fn merging_stops_when_asked_and_passes_errors_on() {
        let history = changes(&[(1, "a", 0), (2, "a", 0)]);
        let mut count = 0;
        merge(history.into_iter(), std::iter::empty(), &mut |_, _, _| {
            count += 1;
            ControlFlow::Break(())
        })
        .unwrap();
        assert_eq!(count, 1);
        let broken = vec![Err(StoreError::Internal("boom".into()))];
        let result = merge(std::iter::empty(), broken.into_iter(), &mut |_, _, _| {
            ControlFlow::Continue(())
        });
        assert!(result.is_err());
    }
}
