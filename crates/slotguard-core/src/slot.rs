//! Key → hash slot, exactly as Redis Cluster computes it.

use crc::{Crc, CRC_16_XMODEM};

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_XMODEM);

/// The part of `key` that Redis hashes: the content of the first `{...}` when
/// it is non-empty, else the whole key.
///
/// Only the *first* `{` counts, and the tag ends at the first `}` after it, so
/// `a{}{b}` hashes the whole key (its first tag is empty) and `{a}{b}` hashes `a`.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        let rest = &key[open + 1..];
        if let Some(close) = rest.iter().position(|&b| b == b'}') {
            if close > 0 {
                return &rest[..close];
            }
        }
    }
    key
}

/// The cluster hash slot of `key`: CRC16/XMODEM of its hash tag, mod 16384.
///
/// ```
/// use slotguard_core::key_slot;
/// assert_eq!(key_slot(b"foo"), 12182);
/// // keys sharing a hash tag share a slot
/// assert_eq!(key_slot(b"{user:1}:name"), key_slot(b"{user:1}:email"));
/// ```
pub fn key_slot(key: &[u8]) -> u16 {
    CRC16.checksum(hash_tag(key)) % SLOT_COUNT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_slots() {
        // values from `CLUSTER KEYSLOT`
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"{foo}bar"), 12182);
        assert_eq!(key_slot(b"{}foo"), key_slot(b"{}foo"));
    }

    #[test]
    fn hash_tag_rules() {
        assert_eq!(hash_tag(b"{a}b"), b"a");
        assert_eq!(hash_tag(b"{}"), b"{}");
        assert_eq!(hash_tag(b"a{}{b}"), b"a{}{b}");
        assert_eq!(hash_tag(b"{a}{b}"), b"a");
        assert_eq!(hash_tag(b"x{y"), b"x{y");
        assert_eq!(hash_tag(b"x}y{z}"), b"z");
        assert_eq!(hash_tag(b"{{a}}"), b"{a");
    }
}
