//! Header names as parsed off the wire, remembered per thread.
//!
//! `HeaderName::from_bytes` lower-cases the name into a scratch buffer, matches it against
//! the standard names and, for any other name, allocates: about 117 instructions per field
//! under callgrind, ~800 per proxied HTTP/1.1 request (the request's fields, then the
//! response's). The same few dozen spellings (`Content-Type`, `user-agent`, `X-Request-Id`)
//! arrive on every request, so a small direct-mapped cache of the raw spelling answers most of
//! them with a hash of its first and last bytes and a few integer compares.

use std::cell::RefCell;

use http::header::{HeaderName, InvalidHeaderName};

/// Slots per thread: more than the distinct names a service's traffic usually carries.
const SLOTS: usize = 128;
/// Longer names are parsed every time: rare, and they would make every key larger.
const MAX_LEN: usize = 32;

/// A spelling of up to `MAX_LEN` bytes, exactly: its length and up to four overlapping
/// little-endian words that together cover every byte (see [`Key::of`]). Comparing two is a
/// few integer compares, with no call to `memcmp` and no copy of the bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    len: usize,
    words: [u64; 4],
}

struct Slot {
    key: Key,
    name: HeaderName,
}

thread_local! {
    static SLOTS_BY_HASH: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
}

/// The header name `raw` spells (any case), as `HeaderName::from_bytes` would give it.
#[inline]
pub fn parse(raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    let Some(key) = Key::of(raw) else {
        return HeaderName::from_bytes(raw);
    };
    let at = key.slot();
    let hit = SLOTS_BY_HASH
        .try_with(|slots| match slots.borrow().get(at) {
            Some(Some(s)) if s.key == key => Some(s.name.clone()),
            _ => None,
        })
        .ok()
        .flatten();
    match hit {
        Some(name) => Ok(name),
        None => remember(at, key, raw),
    }
}

#[cold]
fn remember(at: usize, key: Key, raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    let name = HeaderName::from_bytes(raw)?;
    let _ = SLOTS_BY_HASH.try_with(|slots| {
        let mut slots = slots.borrow_mut();
        if slots.is_empty() {
            slots.resize_with(SLOTS, || None);
        }
        if let Some(s) = slots.get_mut(at) {
            *s = Some(Slot {
                key,
                name: name.clone(),
            });
        }
    });
    Ok(name)
}

impl Key {
    /// `None` for the empty name and names longer than `MAX_LEN`.
    #[inline]
    fn of(raw: &[u8]) -> Option<Key> {
        let len = raw.len();
        let word = |at: usize| -> u64 {
            raw.get(at..at + 8)
                .and_then(|w| w.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        let half = |at: usize| -> u64 {
            raw.get(at..at + 4)
                .and_then(|w| w.try_into().ok())
                .map_or(0, |w| u64::from(u32::from_le_bytes(w)))
        };
        let byte = |at: usize| raw.get(at).map_or(0, |b| u64::from(*b));
        let words = match len {
            // The first and last eight bytes cover 8..=16; two more words cover up to 32.
            8..=16 => [word(0), word(len - 8), 0, 0],
            17..=MAX_LEN => [word(0), word(len - 8), word(8), word(len - 16)],
            4..=7 => [half(0), half(len - 4), 0, 0],
            1..=3 => [byte(0) | byte(len / 2) << 8 | byte(len - 1) << 16, 0, 0, 0],
            _ => return None,
        };
        Some(Key { len, words })
    }

    fn slot(&self) -> usize {
        let [a, b, ..] = self.words;
        let x = (a ^ b.rotate_left(29) ^ self.len as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (x >> 57) as usize % SLOTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_what_from_bytes_gives_cached_or_not() {
        let spellings: [&[u8]; 9] = [
            b"Content-Type",
            b"content-type",
            b"X-Request-Id",
            b"x-b3-traceid",
            b"a",
            b"X-A-Name-Of-Exactly-32-Bytes-Xyz",
            b"X-A-Name-Longer-Than-32-Bytes-Is-Not-Cached",
            b"te",
            b"Te",
        ];
        for round in 0..3 {
            for raw in spellings {
                assert_eq!(
                    parse(raw).unwrap(),
                    HeaderName::from_bytes(raw).unwrap(),
                    "round {round}: {}",
                    String::from_utf8_lossy(raw)
                );
            }
        }
    }

    #[test]
    fn a_key_covers_every_byte_of_its_name() {
        for len in 1..=MAX_LEN {
            let base = vec![b'a'; len];
            let key = Key::of(&base).unwrap();
            for at in 0..len {
                let mut other = base.clone();
                other[at] = b'b';
                assert!(Key::of(&other).unwrap() != key, "len {len}, byte {at}");
            }
        }
        assert!(Key::of(b"").is_none());
        assert!(Key::of(&[b'a'; MAX_LEN + 1]).is_none());
    }

    #[test]
    fn invalid_names_stay_invalid_and_colliding_names_stay_apart() {
        for _ in 0..2 {
            assert!(parse(b"").is_err());
            assert!(parse(b"bad name").is_err());
            assert!(parse(b"bad:name").is_err());
            assert!(parse(b"x\0").is_err());
        }
        // Far more names than slots: every answer is still the name asked for.
        let names: Vec<String> = (0..1000).map(|i| format!("x-field-{i}")).collect();
        for _ in 0..2 {
            for n in &names {
                assert_eq!(parse(n.as_bytes()).unwrap().as_str(), n.as_str());
            }
        }
    }
}
