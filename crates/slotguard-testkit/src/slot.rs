//! Hash-slot computation, so tests can pick keys that land on a chosen node
//! without asking the server.

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);

/// The hash slot of `key`, following Redis' hash-tag rules: if the key contains
/// `{...}` with at least one byte between the first `{` and the next `}`, only
/// those bytes are hashed.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    CRC16.checksum(hashed) % SLOT_COUNT
}

fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let after = &key[open + 1..];
    let close = after.iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &after[..close])
}

/// A key (of the form `{sg:N}`) whose slot is `slot`.
///
/// Found by a short search; every slot is reachable within a few ten thousand tries.
pub fn key_in_slot(slot: u16) -> String {
    let slot = slot % SLOT_COUNT;
    let mut i: u64 = 0;
    loop {
        let key = format!("{{sg:{i}}}");
        if key_slot(key.as_bytes()) == slot {
            return key;
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis_reference_values() {
        // Values from the Redis Cluster specification / CLUSTER KEYSLOT.
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn key_in_slot_round_trips() {
        for slot in [0u16, 1, 5460, 16383] {
            assert_eq!(key_slot(key_in_slot(slot).as_bytes()), slot);
        }
    }
}
