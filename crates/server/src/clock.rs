//! Wall-clock time as the database stores it: milliseconds since the Unix epoch.
//!
//! One integer type for every timestamp keeps SQL portable between SQLite and PostgreSQL
//! and makes comparisons (expiry, pause windows) plain integer arithmetic.

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn datetime(ms: Millis) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 in UTC, as the API returns timestamps (`2026-11-29T05:04:50.123Z`).
pub fn rfc3339(ms: Millis) -> String {
    datetime(ms)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// The date folder name for a recording time: `YYYY_MM_DD` (UTC).
pub fn date_folder(ms: Millis) -> String {
    let d = datetime(ms).date();
    format!("{:04}_{:02}_{:02}", d.year(), u8::from(d.month()), d.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(date_folder(1_764_392_690_000), "2025_11_29");
        // Out-of-range values clamp instead of panicking.
        assert_eq!(date_folder(i64::MAX), "1970_01_01");
    }
}
