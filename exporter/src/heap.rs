//! The process's heap policy under glibc malloc: freed memory goes back to the system after a crowd
//! of connections or after the node shrank. It decides
//! when to trim from counts it is given; it reads no files and holds no global state.

/// Give free heap pages back to the system (every arena).
pub(crate) fn trim() {
    // SAFETY: malloc_trim only walks glibc's own heap; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Watches how many consumers (pods, containers, processes) the published snapshot holds, and says
/// when they fell to half of the most seen since the last trim, by at least `MIN_DROP`: the series,
/// the ledger entries and the exposition of the ones gone were freed, and the heap can shrink.
#[derive(Debug, Default)]
pub(crate) struct ShrinkWatch {
    high_water: usize,
}

/// Fewer consumers gone than this is not worth a trim.
const MIN_DROP: usize = 1000;

impl ShrinkWatch {
    /// Record the current count; true when the heap should be trimmed now.
    pub(crate) fn shrank(&mut self, consumers: usize) -> bool {
        self.high_water = self.high_water.max(consumers);
        let shrank = consumers <= self.high_water / 2 && self.high_water - consumers >= MIN_DROP;
        if shrank {
            self.high_water = consumers;
        }
        shrank
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shrink_to_half_by_a_thousand_trims_once() {
        let mut w = ShrinkWatch::default();
        assert!(!w.shrank(50_000));
        assert!(!w.shrank(30_000)); // not yet half
        assert!(w.shrank(100));
        assert!(!w.shrank(100)); // once
                                 // A small node halving is not worth it.
        assert!(!w.shrank(800));
        assert!(!w.shrank(300));
        // Growing again and shrinking again trims again.
        assert!(!w.shrank(10_000));
        assert!(w.shrank(0));
    }
}
