//! Per-thread reuse of the memory every request needs: header maps, and the small byte blocks
//! that back heads and header values. A worker is one thread with its own runtime, so what one
//! request gives back is what the next request on that thread takes: no lock, no malloc, and
//! memory that is still in the cache.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

/// Spare maps kept per thread: about what a worker has in flight between two polls, so that an
/// idle worker holds a few tens of KiB.
const SPARE_MAPS: usize = 16;
/// A map that grew past this many fields (a request with an unusual number of headers) is
/// freed rather than kept.
const MAX_KEPT_FIELDS: usize = 64;
/// Small copies are cut from slabs of this size. A slab is freed when the last block cut from
/// it is dropped, so a long-lived block pins at most this much.
const SLAB: usize = 4096;
/// Longer copies get an allocation of their own: they would use up a slab in a few requests.
const MAX_SLAB_COPY: usize = 1024;
/// Spare read buffers kept per thread. A connection holds one only from a read until its bytes
/// are parsed or copied out, so a worker uses a few at a time however many connections it has.
const SPARE_READ_BUFS: usize = 32;

thread_local! {
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
    static SLAB_LEFT: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    static READ_BUFS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A zero-filled (or previously used) buffer of `len` bytes to read into: a spare one of that
/// length if this thread has one, else a new one. Its contents are not meaningful.
pub fn read_buf(len: usize) -> Vec<u8> {
    READ_BUFS
        .try_with(|b| {
            let mut b = b.borrow_mut();
            match b.last() {
                Some(spare) if spare.len() == len => b.pop(),
                _ => None,
            }
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| vec![0; len])
}

/// Gives a read buffer back to this thread's spares (or frees it when they are full). Callers
/// give back only buffers of the one size they ask for; [`read_buf`] checks anyway.
pub fn give_back_read_buf(buf: Vec<u8>) {
    let _ = READ_BUFS.try_with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < SPARE_READ_BUFS {
            b.push(buf);
        }
    });
}

/// An empty header map with room for `fields` without growing: a spare one if this thread has
/// one, else a new one.
pub fn header_map(fields: usize) -> HeaderMap {
    let spare = MAPS.try_with(|m| m.borrow_mut().pop()).ok().flatten();
    match spare {
        Some(mut map) => {
            if map.capacity() < fields {
                map.reserve(fields);
            }
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Gives a map that is done with back to this thread, emptied. Maps that grew large, and maps
/// beyond the spares this thread keeps, are freed.
pub fn give_back(mut map: HeaderMap) {
    if map.capacity() > MAX_KEPT_FIELDS {
        return;
    }
    map.clear();
    // At thread exit the spares are gone already: the map is then simply freed.
    let _ = MAPS.try_with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < SPARE_MAPS {
            m.push(map);
        }
    });
}

/// `src` as `Bytes`. Short copies share a per-thread slab (one allocation per few requests
/// instead of one per copy, and slicing the result needs no further allocation); long ones
/// are copied on their own.
pub fn copy(src: &[u8]) -> Bytes {
    if src.len() > MAX_SLAB_COPY {
        return Bytes::copy_from_slice(src);
    }
    SLAB_LEFT
        .try_with(|left| {
            let mut left = left.borrow_mut();
            if left.capacity() < src.len() {
                *left = BytesMut::with_capacity(SLAB);
            }
            left.extend_from_slice(src);
            left.split().freeze()
        })
        .unwrap_or_else(|_| Bytes::copy_from_slice(src))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{self, HeaderValue};

    #[test]
    fn copies_are_independent_and_exact() {
        let a = copy(b"first");
        let b = copy(b"second");
        let long = copy(&[7u8; MAX_SLAB_COPY + 1]);
        assert_eq!(&a[..], b"first");
        assert_eq!(&b[..], b"second");
        assert_eq!(long.len(), MAX_SLAB_COPY + 1);
        // Slices outlive the copy they came from.
        let s = a.slice(1..3);
        drop(a);
        assert_eq!(&s[..], b"ir");
        assert!(copy(b"").is_empty());
    }

    #[test]
    fn copies_cross_slab_boundaries() {
        let blocks: Vec<Bytes> = (0..3 * SLAB / 100)
            .map(|i| copy(format!("{i:0>100}").as_bytes()))
            .collect();
        for (i, b) in blocks.iter().enumerate() {
            assert_eq!(&b[..], format!("{i:0>100}").as_bytes());
        }
    }

    #[test]
    fn a_map_given_back_comes_back_empty_with_its_room() {
        let mut map = header_map(20);
        map.insert(header::HOST, HeaderValue::from_static("a"));
        let room = map.capacity();
        give_back(map);
        let again = header_map(4);
        assert!(again.is_empty());
        assert!(again.capacity() >= room.min(20));
        // A request for more room than a spare has still gets it.
        give_back(again);
        assert!(header_map(200).capacity() >= 200);
    }

    #[test]
    fn large_maps_are_not_kept() {
        MAPS.with(|m| m.borrow_mut().clear());
        give_back(HeaderMap::with_capacity(MAX_KEPT_FIELDS * 4));
        assert_eq!(MAPS.with(|m| m.borrow().len()), 0);
        for _ in 0..SPARE_MAPS + 4 {
            give_back(HeaderMap::with_capacity(8));
        }
        assert_eq!(MAPS.with(|m| m.borrow().len()), SPARE_MAPS);
    }
}
