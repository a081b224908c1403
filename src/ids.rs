//! Unguessable identifiers for sessions and handles.

/// Random bytes in every minted id: 160 bits, above the 128 the MCP security rules ask for.
const ID_BYTES: usize = 20;

/// Mints an id of 160 bits from the operating system's CSPRNG, as 40 lowercase hex
/// characters (visible ASCII, safe inside Redis keys and HTTP headers).
///
/// # Panics
/// When the operating system has no entropy source at all, which leaves no safe way
/// to continue.
pub fn mint() -> String {
    let mut bytes = [0u8; ID_BYTES];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    hex(&bytes)
}

/// `bytes` as lowercase hex: how ids, fingerprints and key digests are written.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Whether `id` has the shape [`mint`] produces; anything else is rejected before it
/// reaches a store or a key.
pub fn is_well_formed(id: &str) -> bool {
    id.len() == ID_BYTES * 2 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What logs and metrics say instead of an id: the first 12 hex digits of its SHA-256.
/// Enough to follow one session through the logs, useless for presenting it (an id is
/// a bearer credential for its state).
pub fn fingerprint(id: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(id.as_bytes())[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_short_and_reveal_nothing_of_the_id() {
        let id = mint();
        assert_eq!(fingerprint(&id), fingerprint(&id));
        assert_eq!(fingerprint(&id).len(), 12);
        assert!(!id.contains(&fingerprint(&id)));
        assert_ne!(fingerprint(&id), fingerprint(&mint()));
    }

    #[test]
    fn hex_is_two_lowercase_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn minted_ids_are_well_formed_and_distinct() {
        let a = mint();
        let b = mint();
        assert!(is_well_formed(&a), "{a}");
        assert_ne!(a, b);
        assert!(!is_well_formed("abc"));
        assert!(!is_well_formed(&a.to_uppercase()));
        assert!(!is_well_formed(&format!("{}}}", &a[..39])));
    }
}
