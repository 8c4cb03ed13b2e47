//! Which partition a key's calls go to: FNV-1a (32 bits) of the key as
//! its decimal text, modulo the partition count. NATS's own `partition()`
//! subject mapping hashes a token the same way, so a later server-side
//! mapping of `tp.call.k.{key}` would place every key where this does.

/// FNV-1a, 32 bits.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The partition of `key` among `partitions`.
pub fn of(key: u64, partitions: u32) -> u32 {
    let mut buf = [0u8; 20];
    let text = decimal(key, &mut buf);
    fnv1a32(text) % partitions.max(1)
}

fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The subject of a keyed call's partition.
pub fn subject(partition: u32) -> String {
    format!("{}{partition}", crate::names::KEYED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a32_is_the_published_function() {
        // The FNV test vectors (draft-eastlake-fnv): "" and "a", "foobar".
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn a_key_hashes_as_its_decimal_text() {
        for k in [0u64, 7, 10, 12345, u64::MAX] {
            assert_eq!(of(k, 64), fnv1a32(k.to_string().as_bytes()) % 64, "{k}");
        }
    }

    #[test]
    fn keys_spread_over_every_partition() {
        let mut seen = [0u32; 64];
        for k in 0..6400u64 {
            seen[of(k, 64) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (50..150).contains(&n)), "{seen:?}");
    }
}
