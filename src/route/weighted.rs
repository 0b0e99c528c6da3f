//! Weighted destination choice, as Istio configures it and Envoy executes it.
//!
//! Istio (`route.go` `applyHTTPRouteDestination`) turns a single destination into a plain
//! cluster route, so its weight is irrelevant, and drops weight-0 entries from a list of
//! several before emitting `weighted_clusters` with the raw weights. Envoy
//! (`weighted_cluster_specifier.cc` `pickWeightedCluster`) then takes `random % total` and
//! walks the clusters in configuration order over cumulative intervals. Reproducing that walk
//! exactly (rather than, say, a binary search or alias table) keeps a given random value
//! mapping to the same destination Envoy would pick, which matters when tests or operators
//! pin the value.

/// Envoy rejects a route whose weights sum above `u32::MAX` (`WeightedClusterSpecifierPlugin`).
const MAX_TOTAL: u64 = u32::MAX as u64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightError {
    #[error("no destinations (total destination weight = 0)")]
    Empty,
    #[error("total destination weight = 0")]
    ZeroTotal,
    #[error("total destination weight = {total} exceeds {max}", max = MAX_TOTAL)]
    TotalTooLarge { total: u64 },
}

/// An immutable weighted choice over destinations, built once per route.
#[derive(Debug, Clone)]
pub struct WeightedPick<T> {
    /// Kept entries only, in configuration order, with their raw weights.
    entries: Box<[(u32, T)]>,
    /// Sum of the kept raw weights. May be 0 only when there is a single entry.
    total: u64,
}

impl<T> WeightedPick<T> {
    pub fn new(entries: Vec<(u32, T)>) -> Result<Self, WeightError> {
        match entries.len() {
            0 => Err(WeightError::Empty),
            1 => {
                let total = entries.iter().map(|(w, _)| u64::from(*w)).sum();
                Ok(Self {
                    entries: entries.into_boxed_slice(),
                    total,
                })
            }
            _ => {
                let kept: Vec<(u32, T)> = entries.into_iter().filter(|(w, _)| *w > 0).collect();
                let total: u64 = kept.iter().map(|(w, _)| u64::from(*w)).sum();
                if total == 0 {
                    return Err(WeightError::ZeroTotal);
                }
                if total > MAX_TOTAL {
                    return Err(WeightError::TotalTooLarge { total });
                }
                Ok(Self {
                    entries: kept.into_boxed_slice(),
                    total,
                })
            }
        }
    }

    /// Index (into the kept entries) that Envoy would choose for random value `r`.
    pub fn pick_index(&self, r: u64) -> usize {
        if self.entries.len() <= 1 || self.total == 0 {
            return 0;
        }
        let selected = r % self.total;
        let mut end: u64 = 0;
        for (i, (w, _)) in self.entries.iter().enumerate() {
            end += u64::from(*w);
            if selected < end {
                return i;
            }
        }
        // Unreachable: `selected < total` and the intervals cover [0, total).
        self.entries.len() - 1
    }

    /// The kept entry at `i` (in configuration order); the first if out of range.
    pub fn get(&self, i: usize) -> &T {
        &self.entries.get(i).unwrap_or(&self.entries[0]).1
    }

    pub fn pick(&self, r: u64) -> &T {
        &self.entries[self.pick_index(r)].1
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false for a successfully built value; provided for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of the kept raw weights (the modulus Envoy uses). A lone entry may have total 0 and
    /// still receives all traffic.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Kept entries in configuration order, with their raw weights.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.entries.iter().map(|(w, t)| (*w, t))
    }

    /// Fraction of traffic entry `i` receives (0.0 for an out-of-range index).
    pub fn share(&self, i: usize) -> f64 {
        if i >= self.entries.len() {
            return 0.0;
        }
        if self.entries.len() == 1 {
            return 1.0;
        }
        f64::from(self.entries[i].0) / self.total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts<T>(p: &WeightedPick<T>, rs: impl Iterator<Item = u64>) -> Vec<usize> {
        let mut c = vec![0; p.len()];
        for r in rs {
            c[p.pick_index(r)] += 1;
        }
        c
    }

    #[test]
    fn ninety_five_five_over_one_hundred_values_is_exact() {
        let p = WeightedPick::new(vec![(95, "primary"), (5, "canary")]).unwrap();
        assert_eq!(p.total(), 100);
        assert_eq!(counts(&p, 0..100), vec![95, 5]);
        // Config order decides the intervals: [0,95) primary, [95,100) canary.
        assert_eq!(*p.pick(94), "primary");
        assert_eq!(*p.pick(95), "canary");
        assert_eq!(*p.pick(199), "canary");
    }

    #[test]
    fn weights_need_not_sum_to_one_hundred() {
        let p = WeightedPick::new(vec![(1, 'a'), (3, 'b')]).unwrap();
        assert_eq!(p.total(), 4);
        assert_eq!(counts(&p, 0..4), vec![1, 3]);
        assert_eq!(p.share(0), 0.25);
        assert_eq!(p.share(1), 0.75);
        assert_eq!(p.share(2), 0.0);
    }

    #[test]
    fn zero_weight_entry_among_several_is_dropped_and_never_picked() {
        // Flagger's steady state: primary 100, canary 0.
        let p = WeightedPick::new(vec![(100, "a"), (0, "b")]).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p.iter().collect::<Vec<_>>(), vec![(100, &"a")]);
        let edge = [u64::MAX, u64::MAX - 1, u64::MAX / 2, 1 << 63, 99, 100, 101];
        for r in (0..10_000).chain(edge) {
            assert_eq!(*p.pick(r), "a", "r = {r}");
        }
        assert_eq!(p.share(0), 1.0);
    }

    #[test]
    fn zeros_in_the_middle_keep_order_of_the_rest() {
        let p = WeightedPick::new(vec![(0, 'x'), (2, 'a'), (0, 'y'), (3, 'b')]).unwrap();
        assert_eq!(p.iter().collect::<Vec<_>>(), vec![(2, &'a'), (3, &'b')]);
        let picks: String = (0..5).map(|r| *p.pick(r)).collect();
        assert_eq!(picks, "aabbb");
    }

    #[test]
    fn single_entry_gets_everything_whatever_its_weight() {
        for w in [0, 1, 7, 100, u32::MAX] {
            let p = WeightedPick::new(vec![(w, "only")]).unwrap();
            assert_eq!(p.len(), 1);
            assert_eq!(*p.pick(0), "only");
            assert_eq!(*p.pick(u64::MAX), "only");
            assert_eq!(p.share(0), 1.0);
            assert_eq!(p.iter().next(), Some((w, &"only")));
        }
        assert_eq!(WeightedPick::new(vec![(0, ())]).unwrap().total(), 0);
    }

    #[test]
    fn rejects_empty_and_all_zero_and_oversized() {
        assert_eq!(
            WeightedPick::<()>::new(vec![]).unwrap_err(),
            WeightError::Empty
        );
        let err = WeightedPick::new(vec![(0, 'a'), (0, 'b')]).unwrap_err();
        assert_eq!(err, WeightError::ZeroTotal);
        assert_eq!(err.to_string(), "total destination weight = 0");
        assert_eq!(
            WeightedPick::new(vec![(u32::MAX, 'a'), (1, 'b')]).unwrap_err(),
            WeightError::TotalTooLarge {
                total: u64::from(u32::MAX) + 1
            }
        );
        // Exactly u32::MAX is accepted, as in Envoy.
        assert!(WeightedPick::new(vec![(u32::MAX - 1, 'a'), (1, 'b')]).is_ok());
    }

    #[test]
    fn max_random_value_and_large_weights() {
        let p = WeightedPick::new(vec![(u32::MAX - 1, 'a'), (1, 'b')]).unwrap();
        // u64::MAX % (2^32 - 1) == 0, which lands in the first interval.
        assert_eq!(*p.pick(u64::MAX), 'a');
        assert_eq!(*p.pick(u64::from(u32::MAX) - 1), 'b');
        let q = WeightedPick::new(vec![(3, 'a'), (5, 'b'), (7, 'c')]).unwrap();
        // u64::MAX % 15 == 0.
        assert_eq!(*q.pick(u64::MAX), 'a');
        assert_eq!(*q.pick(u64::MAX - 1), 'c');
        assert_eq!(counts(&q, 0..15), vec![3, 5, 7]);
        assert_eq!(counts(&q, u64::MAX - 14..=u64::MAX), vec![3, 5, 7]);
    }
}
