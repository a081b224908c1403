//! The shape of what the event store writes: event ids (`<stream_id>/<ms>-<seq>`), the
//! checks that keep stream and session ids inside their key's hash tag, the fields and
//! kinds of a stream entry, and an entry rebuilt as a [`StoredEvent`].

use std::time::Duration;

use redis::streams::StreamId;

use super::StoredEvent;
use crate::{events::RedisEventStoreError, ids::fingerprint};

/// Separates the stream id from the Redis entry id in an event id.
pub(super) const SEPARATOR: char = '/';
/// Longest stream or session id accepted; rmcp's stream ids are UUIDs or
/// `<session id>:common`, our session ids 40 characters.
const MAX_ID_LEN: usize = 200;
/// Suffix of a session's standalone (GET) stream.
pub(super) const COMMON_SUFFIX: &str = ":common";
/// The entry id of a request stream's priming event, which is never stored: below
/// every id `XADD *` gives.
pub(super) const PRIMED: EntryId = EntryId { ms: 0, seq: 1 };

/// Stream entry fields.
pub(super) const FIELD_KIND: &str = "k";
pub(super) const FIELD_MESSAGE: &str = "m";
pub(super) const FIELD_RETRY: &str = "r";
/// Kinds: no message (a retry hint), a message, a message that ends its stream.
pub(super) const KIND_BARE: &str = "b";
pub(super) const KIND_MESSAGE: &str = "m";
pub(super) const KIND_FINAL: &str = "f";

/// The stream of `event_id` when it is a minted priming id (`<stream_id>/0-1`): the
/// first event of a request stream started on this replica.
pub fn primed_stream(event_id: &str) -> Option<&str> {
    let (stream_id, entry) = event_id.split_once(SEPARATOR)?;
    (EntryId::parse(entry) == Some(PRIMED) && is_keyable(stream_id)).then_some(stream_id)
}

/// A Redis stream entry id, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct EntryId {
    pub(super) ms: u64,
    pub(super) seq: u64,
}

impl EntryId {
    pub(super) const ZERO: Self = Self { ms: 0, seq: 0 };

    pub(super) fn parse(s: &str) -> Option<Self> {
        let (ms, seq) = s.split_once('-')?;
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The smallest id after this one, for exclusive ranges on any Redis version.
    pub(super) fn next(self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => Self { ms: self.ms, seq },
            None => Self {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Whether `id` can be part of a key: `[A-Za-z0-9_.:-]`, 1 to [`MAX_ID_LEN`] characters.
pub(super) fn is_keyable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub(super) fn check_stream_id(stream_id: &str) -> Result<(), RedisEventStoreError> {
    if is_keyable(stream_id) {
        Ok(())
    } else {
        Err(RedisEventStoreError::InvalidStreamId(fingerprint(
            stream_id,
        )))
    }
}

pub(super) fn check_session_id(session_id: &str) -> Result<(), RedisEventStoreError> {
    if is_keyable(session_id) {
        Ok(())
    } else {
        Err(RedisEventStoreError::InvalidSessionId(fingerprint(
            session_id,
        )))
    }
}

/// Splits `<stream_id>/<ms>-<seq>`, checking both parts.
pub(super) fn parse_event_id(event_id: &str) -> Result<(&str, EntryId), RedisEventStoreError> {
    let malformed = || RedisEventStoreError::MalformedEventId(fingerprint(event_id));
    let (stream_id, entry) = event_id.split_once(SEPARATOR).ok_or_else(malformed)?;
    let entry = EntryId::parse(entry).ok_or_else(malformed)?;
    check_stream_id(stream_id)?;
    Ok((stream_id, entry))
}

pub(super) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// One stored entry, rebuilt.
pub(super) struct DecodedEntry {
    pub(super) id: EntryId,
    /// The event under its original event id.
    pub(super) event: StoredEvent,
    pub(super) is_final: bool,
}

/// Rebuilds the event of a stream entry under its original event id; `None` for an
/// entry this store did not write.
pub(super) fn decode_entry(stream_id: &str, entry: &StreamId) -> Option<DecodedEntry> {
    let Some(id) = EntryId::parse(&entry.id) else {
        tracing::warn!(
            stream = %fingerprint(stream_id),
            entry = %entry.id,
            "skipping stream entry with an odd id"
        );
        return None;
    };
    let kind: String = entry.get(FIELD_KIND).unwrap_or_default();
    let message: String = entry.get(FIELD_MESSAGE).unwrap_or_default();
    let retry: String = entry.get(FIELD_RETRY).unwrap_or_default();
    Some(DecodedEntry {
        id,
        is_final: kind == KIND_FINAL,
        event: StoredEvent {
            event_id: format!("{stream_id}{SEPARATOR}{id}"),
            message: (kind != KIND_BARE).then_some(message),
            retry: retry.parse().ok().map(Duration::from_millis),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip() {
        let (stream, entry) = parse_event_id("5f0c-aa_b.c:common/1700000000000-7").unwrap();
        assert_eq!(stream, "5f0c-aa_b.c:common");
        assert_eq!(
            entry,
            EntryId {
                ms: 1_700_000_000_000,
                seq: 7
            }
        );
        assert_eq!(entry.to_string(), "1700000000000-7");
    }

    #[test]
    fn malformed_event_ids_are_rejected() {
        for id in [
            "",
            "/",
            "abc",
            "abc/",
            "/1-0",
            "abc/1",
            "abc/1-",
            "abc/-1",
            "abc/1-x",
            "abc/+1-0",
            "abc/1-0/2-0",
            "a{b}/1-0",
            "a b/1-0",
            "abc/99999999999999999999-0",
        ] {
            assert!(parse_event_id(id).is_err(), "{id}");
        }
        assert!(parse_event_id(&format!("{}/1-0", "a".repeat(MAX_ID_LEN + 1))).is_err());
    }

    #[test]
    fn a_minted_priming_id_names_its_stream() {
        assert_eq!(primed_stream("abc-1/0-1"), Some("abc-1"));
        for id in ["abc/0-2", "abc/1-1", "a{b}/0-1", "abc", "/0-1"] {
            assert_eq!(primed_stream(id), None, "{id}");
        }
    }

    #[test]
    fn next_entry_id_is_the_smallest_later_one() {
        let id = EntryId { ms: 5, seq: 9 };
        assert_eq!(id.next(), EntryId { ms: 5, seq: 10 });
        let id = EntryId {
            ms: 5,
            seq: u64::MAX,
        };
        assert_eq!(id.next(), EntryId { ms: 6, seq: 0 });
        assert!(EntryId { ms: 5, seq: 10 } > EntryId { ms: 4, seq: 99 });
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> StreamId {
        StreamId {
            id: id.to_owned(),
            map: fields
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        redis::Value::BulkString(v.as_bytes().to_vec()),
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Stream entries carry no version: what the previous release writes (`k`, `m`,
    /// `r`) is read as it was, and an entry of a later release (an extra field, a kind
    /// this one does not know) is replayed as a message rather than dropped.
    #[test]
    fn entries_of_the_previous_and_a_later_release_are_read() {
        let written = entry(
            "1700000000000-3",
            &[
                ("k", KIND_FINAL),
                ("m", r#"{"jsonrpc":"2.0"}"#),
                ("r", "1500"),
            ],
        );
        let decoded = decode_entry("s1", &written).unwrap();
        assert!(decoded.is_final);
        assert_eq!(decoded.event.event_id, "s1/1700000000000-3");
        assert_eq!(
            decoded.event.message.as_deref(),
            Some(r#"{"jsonrpc":"2.0"}"#)
        );
        assert_eq!(decoded.event.retry, Some(Duration::from_millis(1500)));

        let bare = decode_entry("s1", &entry("1-0", &[("k", KIND_BARE), ("r", "10")])).unwrap();
        assert_eq!(bare.event.message, None);

        let later = entry("2-0", &[("k", "x"), ("m", "{}"), ("trace", "00-ab-cd-01")]);
        let decoded = decode_entry("s1", &later).unwrap();
        assert!(!decoded.is_final);
        assert_eq!(decoded.event.message.as_deref(), Some("{}"));
        assert_eq!(decoded.event.retry, None);
    }
}
