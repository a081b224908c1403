//! Redis Cluster hash slots: the slot of a key (CRC16 of its `{hash tag}`, or of the
//! whole key without one, modulo 16384), and a short tag for each slot, so a key of
//! our own can be put in the slot of keys we do not name (a session's streams).

use std::sync::OnceLock;

/// Hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The hash slot of `key`, as Redis Cluster computes it: only the part between the
/// first `{` and the first `}` after it counts when that part is not empty.
pub fn hash_slot(key: &str) -> u16 {
    crate::redis_pool::key_slot(key.as_bytes())
}

/// A tag (the text between braces) whose key is in `slot`: `w<n>` for the smallest
/// `n` that hashes there. The same on every replica and for every prefix.
pub(super) fn slot_tag(slot: u16) -> String {
    format!("w{}", tags()[usize::from(slot % SLOTS)])
}

/// For each slot, the smallest `n` whose tag `w<n>` hashes to it; found once, by
/// counting up until every slot has one (about 170 000 tries, a few milliseconds).
fn tags() -> &'static [u32] {
    static TAGS: OnceLock<Vec<u32>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags = vec![u32::MAX; usize::from(SLOTS)];
        let mut missing = tags.len();
        let mut tag = String::new();
        let mut n = 0u32;
        while missing > 0 {
            tag.clear();
            tag.push('w');
            tag.push_str(&n.to_string());
            let slot = usize::from(crc16(tag.as_bytes()) % SLOTS);
            if tags[slot] == u32::MAX {
                tags[slot] = n;
                missing -= 1;
            }
            n += 1;
        }
        tags
    })
}

pub(super) use crate::redis_pool::crc16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(hash_slot("foo"), 12182);
        assert_eq!(hash_slot("bar"), 5061);
        assert_eq!(hash_slot("{user1000}.following"), 3443);
        assert_eq!(hash_slot("{user1000}.following"), hash_slot("user1000"));
        assert_eq!(hash_slot("foo{}{bar}"), 8363, "an empty tag: the whole key");
        assert_eq!(hash_slot("foo{{bar}}zap"), 4015);
        assert_eq!(hash_slot("foo{{bar}}zap"), hash_slot("{bar"));
        assert_eq!(hash_slot("foo{bar}{zap}"), hash_slot("bar"));
        assert_eq!(hash_slot("p:{w0}:wake:r1"), 10141);
    }

    #[test]
    fn every_slot_has_a_tag_in_it() {
        for slot in 0..SLOTS {
            let key = format!("p:{{{}}}:wake:r1", slot_tag(slot));
            assert_eq!(hash_slot(&key), slot, "{key}");
        }
        assert!(tags().iter().all(|&n| n < 1_000_000));
    }
}
