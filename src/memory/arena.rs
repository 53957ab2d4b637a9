//! The arena allocator: every temporary buffer of a program gets an offset
//! in one arena, so that buffers whose lifetimes do not overlap share memory.

/// Every buffer starts at a multiple of this many bytes (a cache line, and
/// the alignment AVX-512 loads prefer).
pub const ALIGN: u64 = 64;

/// A buffer to place: its size and the steps of the program during which it
/// is live (from the step that writes it to the last step that reads it,
/// both included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Size in bytes.
    pub bytes: u64,
    /// The step that first writes it.
    pub first: usize,
    /// The step that last reads it.
    pub last: usize,
}

impl Buffer {
    fn overlaps_in_time(&self, other: &Buffer) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Where each buffer lives, and how large the arena must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArenaPlan {
    /// The byte offset of each buffer, in the order they were given.
    pub offsets: Vec<u64>,
    /// The arena's size: the highest end of any buffer.
    pub peak: u64,
}

/// Places `buffers` in one arena: largest first, each at the lowest aligned
/// offset that does not collide with an already placed buffer live at the
/// same time (greedy best-fit by size, which is close to optimal for the
/// chain-like lifetimes of neural networks).
pub fn place(buffers: &[Buffer]) -> ArenaPlan {
    let mut order: Vec<usize> = (0..buffers.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(buffers[i].bytes), buffers[i].first, i));
    let mut offsets = vec![0u64; buffers.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(buffers.len());
    let mut peak = 0;
    for i in order {
        let size = aligned(buffers[i].bytes);
        let mut busy: Vec<(u64, u64)> = placed
            .iter()
            .filter(|&&j| buffers[j].overlaps_in_time(&buffers[i]))
            .map(|&j| (offsets[j], offsets[j] + aligned(buffers[j].bytes)))
            .collect();
        busy.sort_unstable();
        let mut offset = 0;
        for (start, end) in busy {
            if offset + size <= start {
                break;
            }
            offset = offset.max(end);
        }
        offsets[i] = offset;
        peak = peak.max(offset + size);
        placed.push(i);
    }
    ArenaPlan { offsets, peak }
}

pub(super) fn aligned(bytes: u64) -> u64 {
    bytes.div_ceil(ALIGN) * ALIGN
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(bytes: u64, first: usize, last: usize) -> Buffer {
        Buffer { bytes, first, last }
    }

    /// No two buffers live at the same time share a byte.
    fn assert_valid(buffers: &[Buffer], plan: &ArenaPlan) {
        for (i, x) in buffers.iter().enumerate() {
            assert_eq!(plan.offsets[i] % ALIGN, 0);
            assert!(plan.offsets[i] + x.bytes <= plan.peak);
            for (j, y) in buffers.iter().enumerate().skip(i + 1) {
                if x.overlaps_in_time(y) {
                    let disjoint = plan.offsets[i] + x.bytes <= plan.offsets[j]
                        || plan.offsets[j] + y.bytes <= plan.offsets[i];
                    assert!(disjoint, "buffers {i} and {j} collide: {plan:?}");
                }
            }
        }
    }

    #[test]
    fn a_chain_needs_two_buffers() {
        // Each layer reads the previous output and writes the next: only two
        // are ever live, so the arena holds the two largest neighbours.
        let buffers = [b(1000, 0, 1), b(4000, 1, 2), b(1000, 2, 3), b(500, 3, 4)];
        let plan = place(&buffers);
        assert_valid(&buffers, &plan);
        assert_eq!(plan.peak, aligned(4000) + aligned(1000));
    }

    #[test]
    fn a_skip_connection_stays_live() {
        // Buffer 0 feeds a residual add at step 3, so it cannot be reused by 1 or 2.
        let buffers = [b(640, 0, 3), b(640, 1, 2), b(640, 2, 3), b(640, 3, 4)];
        let plan = place(&buffers);
        assert_valid(&buffers, &plan);
        assert_eq!(plan.peak, 3 * 640);
    }

    proptest! {
        #[test]
        fn plans_are_valid_and_no_worse_than_the_live_maximum(
            raw in proptest::collection::vec((1u64..5000, 0usize..40, 0usize..10), 1..60)
        ) {
            let buffers: Vec<Buffer> = raw.iter().map(|&(bytes, first, len)| b(bytes, first, first + len)).collect();
            let plan = place(&buffers);
            assert_valid(&buffers, &plan);
            // The peak can never be below the most bytes live at one step.
            let live_max = (0..50).map(|t| buffers.iter().filter(|x| x.first <= t && t <= x.last).map(|x| aligned(x.bytes)).sum::<u64>()).max().unwrap_or(0);
            prop_assert!(plan.peak >= live_max);
            // Nor above the sum of all buffers.
            prop_assert!(plan.peak <= buffers.iter().map(|x| aligned(x.bytes)).sum::<u64>());
        }
    }
}
