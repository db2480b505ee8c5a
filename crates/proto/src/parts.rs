//! The part plan: how a file of a given size is cut into upload parts.
//!
//! The server picks the number of parts *n*; the client cuts the file into parts of
//! `ceil(filesize / n)` bytes with the last one shorter. Both sides must agree, so the rule
//! lives here once.

/// S3's (and the contract's) minimum size of every part but the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's (and the contract's) maximum number of parts.
pub const MAX_PARTS: u32 = 10_000;
/// The largest asset the API accepts: 5 TiB.
pub const MAX_FILESIZE: u64 = 5 * 1024 * 1024 * 1024 * 1024;

/// How an asset of `filesize` bytes is cut: `count` parts of `part_size` bytes, the last
/// one holding the remainder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlan {
    pub filesize: u64,
    pub count: u32,
    pub part_size: u64,
}

impl PartPlan {
    /// Plans parts of at least `target_part_size` bytes (and under twice that), never more than `max_parts` and never
    /// a non-final part under [`MIN_PART_SIZE`]. `filesize` must be at least 1 and
    /// `max_parts` at least 1; when `max_parts` cannot hold `filesize` at 5 TiB parts the
    /// plan uses fewer, larger parts (the caller bounds `filesize`).
    pub fn new(filesize: u64, target_part_size: u64, max_parts: u32) -> PartPlan {
        let filesize = filesize.max(1);
        let max_parts = u64::from(max_parts.clamp(1, MAX_PARTS));
        let target = target_part_size.max(MIN_PART_SIZE);
        // Rounding the count down keeps every part at least `target` bytes long.
        let wanted = (filesize / target).clamp(1, max_parts);
        let part_size = filesize.div_ceil(wanted);
        // With parts of `part_size` bytes fewer than `wanted` parts may be needed; the
        // client derives the size from the count, and ceil(filesize / count) is again
        // `part_size` (see the tests), so both sides agree.
        let count = filesize.div_ceil(part_size);
        PartPlan {
            filesize,
            count: u32::try_from(count).unwrap_or(MAX_PARTS),
            part_size,
        }
    }

    /// The plan a client derives from the number of URLs the server gave it.
    pub fn from_count(filesize: u64, count: u32) -> PartPlan {
        let count = count.max(1);
        PartPlan {
            filesize,
            count,
            part_size: filesize.div_ceil(u64::from(count)).max(1),
        }
    }

    /// Byte offset of 1-based part `number`.
    pub fn offset(&self, number: u32) -> u64 {
        u64::from(number.saturating_sub(1)) * self.part_size
    }

    /// Length of 1-based part `number` (0 when out of range).
    pub fn len(&self, number: u32) -> u64 {
        if number == 0 || number > self.count {
            return 0;
        }
        let start = self.offset(number);
        self.part_size.min(self.filesize - start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(filesize: u64, target: u64, max_parts: u32) {
        let plan = PartPlan::new(filesize, target, max_parts);
        assert!(
            plan.count >= 1 && plan.count <= max_parts.max(1),
            "{plan:?}"
        );
        let total: u64 = (1..=plan.count).map(|n| plan.len(n)).sum();
        assert_eq!(total, filesize, "{plan:?}");
        for n in 1..plan.count {
            assert!(plan.len(n) >= MIN_PART_SIZE, "part {n} too small: {plan:?}");
        }
        assert!(plan.len(plan.count) >= 1, "empty last part: {plan:?}");
        assert_eq!(PartPlan::from_count(filesize, plan.count), plan);
    }

    #[test]
    fn plans_add_up_and_respect_limits() {
        let mib = 1024 * 1024;
        for filesize in [
            1,
            2,
            5 * mib - 1,
            5 * mib,
            5 * mib + 1,
            10 * mib + 7,
            1 << 31,
        ] {
            for target in [0, mib, 5 * mib, 8 * mib, 25 * mib, 100 * mib] {
                for max_parts in [1, 2, 3, 1000, 10_000] {
                    check(filesize, target, max_parts);
                }
            }
        }
        check(MAX_FILESIZE, 5 * mib, 10_000);
        check(MAX_FILESIZE, 5 * mib, 1_000);
    }

    #[test]
    fn plans_add_up_over_a_sweep_of_sizes() {
        // Deterministic pseudo-random sweep (an LCG) across six orders of magnitude.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let filesize = 1 + (x >> 20) % (64 * 1024 * 1024 * 1024);
            let target = MIN_PART_SIZE + (x >> 7) % (200 * 1024 * 1024);
            let max_parts = 1 + ((x >> 3) % 10_000) as u32;
            check(filesize, target, max_parts);
        }
    }

    #[test]
    fn exact_multiples_have_equal_parts() {
        let plan = PartPlan::new(100 * 1024 * 1024, 25 * 1024 * 1024, 10_000);
        assert_eq!(plan.count, 4);
        assert_eq!(plan.len(4), 25 * 1024 * 1024);
        assert_eq!(plan.len(5), 0);
    }
}
