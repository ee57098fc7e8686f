//! The process's heap policy under glibc malloc: freed memory goes back to the system after a crowd
//! of connections or after the node shrank (long-lived maps give back their room, the heap is
//! trimmed). It decides
//! when to trim from counts it is given; it reads no files and holds no global state.

/// Give free heap pages back to the system (every arena).
pub(crate) fn trim() {
    // SAFETY: malloc_trim only walks glibc's own heap; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A long-lived map uses less than this fraction of its room before the room is given back.
const SPARSE_FILL_DIVISOR: usize = 4;
/// Maps this small keep their room: giving it back is not worth a rehash.
const KEEP_ROOM_ENTRIES: usize = 1024;

/// Give back the room of a long-lived map whose entries went (a node that shrank): a `HashMap` keeps
/// its table at the largest size it reached, which `trim` cannot return since it is still in use.
/// Keeps room for twice the entries left. Returns whether it shrank.
pub(crate) fn release_room<K: std::hash::Hash + Eq, V>(
    map: &mut std::collections::HashMap<K, V>,
) -> bool {
    let room = map.capacity();
    if room <= KEEP_ROOM_ENTRIES || map.len() * SPARSE_FILL_DIVISOR >= room {
        return false;
    }
    map.shrink_to(map.len() * 2);
    map.capacity() < room
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
    fn a_map_that_emptied_gives_its_room_back_and_a_full_or_small_one_keeps_it() {
        let mut map: std::collections::HashMap<u32, [u8; 64]> =
            (0..50_000).map(|i| (i, [0; 64])).collect();
        assert!(!release_room(&mut map), "full");
        map.retain(|k, _| *k < 100);
        assert!(release_room(&mut map));
        assert!(map.capacity() < 1_000, "{}", map.capacity());
        assert_eq!(map.len(), 100);
        assert!(map.contains_key(&99));
        let mut small: std::collections::HashMap<u32, u8> = (0..500).map(|i| (i, 0)).collect();
        small.clear();
        assert!(!release_room(&mut small), "small maps keep their room");
    }

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
