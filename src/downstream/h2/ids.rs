//! Stream ids a connection remembers after their streams are gone: which ones were reset
//! (frames the client sent before it saw the reset are dropped, not errors), and which ones
//! the client skipped (a HEADERS there later opens a stream below one already opened).

/// A ring of the latest stream ids, allocated on first use: a connection that never resets
/// a stream holds none.
pub(super) struct Recent {
    ids: Vec<u32>,
    cap: usize,
    next: usize,
}

impl Recent {
    pub(super) fn new(cap: usize) -> Recent {
        Recent {
            ids: Vec::new(),
            cap: cap.max(1),
            next: 0,
        }
    }

    pub(super) fn add(&mut self, id: u32) {
        if self.ids.len() < self.cap {
            self.ids.push(id);
        } else if let Some(slot) = self.ids.get_mut(self.next % self.cap) {
            *slot = id;
        }
        self.next = self.next.wrapping_add(1);
    }

    pub(super) fn has(&self, id: u32) -> bool {
        id != 0 && self.ids.contains(&id)
    }
}

/// Ranges of client stream ids that were never opened because the client opened a higher
/// one first. RFC 9113 §5.1.1 closes them implicitly, and a HEADERS on one is "an unexpected
/// stream identifier": a connection error of type PROTOCOL_ERROR, where a HEADERS on a stream
/// that did open and end is STREAM_CLOSED (§5.1). Clients count up by two, so there are
/// none in practice; the latest `SKIPPED_RANGES` are kept, and an id in an older range is
/// judged as closed (still a connection error, with the other code).
#[derive(Default)]
pub(super) struct Skipped {
    /// Inclusive `(first, last)` odd ids, oldest first.
    ranges: Vec<(u32, u32)>,
}

const SKIPPED_RANGES: usize = 16;

impl Skipped {
    /// Stream `id` opens after `previous`, the highest id opened before it (0 for none).
    pub(super) fn opened(&mut self, previous: u32, id: u32) {
        let first = if previous == 0 { 1 } else { previous + 2 };
        if id > first {
            if self.ranges.len() == SKIPPED_RANGES {
                self.ranges.remove(0);
            }
            self.ranges.push((first, id - 2));
        }
    }

    pub(super) fn has(&self, id: u32) -> bool {
        self.ranges.iter().any(|&(a, b)| (a..=b).contains(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_memory_keeps_the_latest_ids() {
        let mut r = Recent::new(64);
        assert!(!r.has(0));
        for id in 1..=74 {
            r.add(id);
        }
        assert!(r.has(74));
        assert!(!r.has(1));
    }

    #[test]
    fn skipped_ids_are_those_below_an_opened_one_never_opened() {
        let mut s = Skipped::default();
        s.opened(0, 1);
        s.opened(1, 3);
        assert!(!s.has(1) && !s.has(3), "ids counted up by two skip nothing");
        s.opened(3, 9);
        assert!(s.has(5) && s.has(7));
        assert!(!s.has(3) && !s.has(9) && !s.has(11));
        let mut first = Skipped::default();
        first.opened(0, 5);
        assert!(first.has(1) && first.has(3) && !first.has(5));
        for i in 0..20u32 {
            let base = 101 + i * 10;
            first.opened(base, base + 6);
        }
        assert!(!first.has(1), "only the latest ranges are kept");
        assert!(first.has(293) && !first.has(297));
    }
}
