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
/// S3's (and the contract's) largest single part: 5 GiB.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;

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

    /// The plan of a device that asked for `requested` parts (the create's `parts` field),
    /// if the store can take it: every part but the last at least `min_part_size` bytes
    /// (S3's 5 MiB; the local store has no minimum), none over [`MAX_PART_SIZE`], at most
    /// `max_parts` parts, and exactly `requested` of them when cut the contract's way
    /// (`ceil(filesize / n)` each, the last shorter; a count that would leave the last part
    /// empty cannot be sent). `None`: the server's own plan stands.
    pub fn requested(
        filesize: u64,
        requested: i64,
        min_part_size: u64,
        max_parts: u32,
    ) -> Option<PartPlan> {
        let count = u32::try_from(requested).ok()?;
        if filesize == 0 || count == 0 || count > max_parts.min(MAX_PARTS) {
            return None;
        }
        let plan = PartPlan::from_count(filesize, count);
        let fits = plan.part_size <= MAX_PART_SIZE
            && (count == 1 || plan.part_size >= min_part_size)
            && filesize.div_ceil(plan.part_size) == u64::from(count);
        fits.then_some(plan)
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
    fn a_device_gets_the_count_it_asks_for_when_the_store_can_take_it() {
        let mib = 1024 * 1024;
        // The camera in the field: "parts": 2 for a 24.6 MB JPEG.
        let plan = PartPlan::requested(24_638_557, 2, MIN_PART_SIZE, MAX_PARTS).expect("fits");
        assert_eq!(plan.count, 2);
        assert_eq!(plan.len(1), 12_319_279);
        assert_eq!(plan.len(2), 24_638_557 - 12_319_279);
        assert_eq!(PartPlan::from_count(24_638_557, 2), plan);
        // One part is always fine below 5 GiB, however small.
        assert!(PartPlan::requested(10, 1, MIN_PART_SIZE, MAX_PARTS).is_some());
        // Parts under S3's minimum: refused on S3, taken where there is no minimum.
        assert_eq!(
            PartPlan::requested(24_638_557, 10, MIN_PART_SIZE, MAX_PARTS),
            None
        );
        let small = PartPlan::requested(24_638_557, 10, 1, MAX_PARTS).expect("no minimum");
        assert_eq!(small.count, 10);
        // Zero, negative, more than the maximum, more than the bytes: the server's plan.
        for bad in [0, -2, i64::from(MAX_PARTS) + 1, i64::MAX] {
            assert_eq!(PartPlan::requested(100 * mib, bad, 1, MAX_PARTS), None);
        }
        assert_eq!(PartPlan::requested(100 * mib, 101, 1, 100), None);
        assert_eq!(PartPlan::requested(3, 4, 1, MAX_PARTS), None);
        // A count whose cut leaves the last part empty (10 bytes in 6: 2+2+2+2+2+0).
        assert_eq!(PartPlan::requested(10, 6, 1, MAX_PARTS), None);
        // A single part over 5 GiB.
        assert_eq!(
            PartPlan::requested(MAX_PART_SIZE + 1, 1, MIN_PART_SIZE, MAX_PARTS),
            None
        );
    }

    #[test]
    fn requested_plans_cut_the_file_exactly() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let filesize = 1 + (x >> 24) % (8 * 1024 * 1024 * 1024);
            let requested = 1 + ((x >> 5) % 2_000) as i64;
            let min = if x & 1 == 0 { MIN_PART_SIZE } else { 1 };
            let Some(plan) = PartPlan::requested(filesize, requested, min, MAX_PARTS) else {
                continue;
            };
            assert_eq!(i64::from(plan.count), requested, "{plan:?}");
            let total: u64 = (1..=plan.count).map(|n| plan.len(n)).sum();
            assert_eq!(total, filesize, "{plan:?}");
            for n in 1..plan.count {
                assert!(plan.len(n) >= min, "{plan:?}");
            }
            assert!(plan.len(plan.count) >= 1, "{plan:?}");
            assert_eq!(PartPlan::from_count(filesize, plan.count), plan);
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
