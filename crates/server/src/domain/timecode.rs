//! SMPTE timecodes and frame rates, as devices send them with real-time logging triggers
//! (c2c-api.md §5), and the one time line on which a clip's comments (frame numbers) and
//! markers (timecodes) are listed together.
//!
//! Drop-frame timecodes (`;` before the frames) are accepted and shown as sent; for
//! ordering, every timecode counts frames at the nominal (rounded) rate, drop-frame
//! corrections ignored: a difference of at most a few frames per hour, and the same for
//! every entry of a clip.

/// Frames per second, kept exactly as thousandths (29.97 → 29970) so it fits a BIGINT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(i64);

/// Slowest and fastest rates a device may report.
const MIN_RATE_MILLIS: i64 = 1_000;
const MAX_RATE_MILLIS: i64 = 1_000_000;

impl Rate {
    pub fn parse(fps: f64) -> Result<Rate, String> {
        let millis = (fps * 1000.0).round();
        if fps.is_finite() && (MIN_RATE_MILLIS as f64..=MAX_RATE_MILLIS as f64).contains(&millis) {
            Ok(Rate(millis as i64))
        } else {
            Err("must be a frame rate between 1 and 1000 frames per second".into())
        }
    }

    pub fn from_millis(millis: i64) -> Option<Rate> {
        (MIN_RATE_MILLIS..=MAX_RATE_MILLIS)
            .contains(&millis)
            .then_some(Rate(millis))
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// Frames in one timecode second: 29.97 counts 30 (`:29` is its last frame).
    fn nominal(self) -> i64 {
        (self.0 + 500) / 1000
    }

    /// `frame` (from 0) as `HH:MM:SS:FF` from the clip's start.
    pub fn timecode_of(self, frame: i64) -> String {
        let nominal = self.nominal();
        let (seconds, ff) = (frame / nominal, frame % nominal);
        format!(
            "{:02}:{:02}:{:02}:{:02}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60,
            ff
        )
    }

    /// Where `frame` falls, in milliseconds from 00:00:00:00.
    pub fn position_ms(self, frame: i64) -> i64 {
        frame.saturating_mul(1_000_000) / self.0
    }

    /// `29.97`, `25`.
    pub fn display(self) -> String {
        if self.0 % 1000 == 0 {
            (self.0 / 1000).to_string()
        } else {
            format!("{:.3}", self.0 as f64 / 1000.0)
                .trim_end_matches('0')
                .to_owned()
        }
    }
}

/// A well-formed SMPTE timecode for a given rate: `HH:MM:SS:FF` (`;FF`: drop frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timecode {
    text: String,
    frames: i64,
}

impl Timecode {
    pub fn parse(raw: &str, rate: Rate) -> Result<Timecode, String> {
        let bad = || "must be a timecode HH:MM:SS:FF within the rate".to_owned();
        let raw = raw.trim();
        let fields: Vec<&str> = raw.split([':', ';', '.']).collect();
        let [h, m, s, f] = fields.as_slice() else {
            return Err(bad());
        };
        let mut numbers = [0i64; 4];
        for (slot, field) in numbers.iter_mut().zip([h, m, s, f]) {
            if field.len() != 2 || !field.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            *slot = field.parse().map_err(|_| bad())?;
        }
        let [h, m, s, f] = numbers;
        if h >= 24 || m >= 60 || s >= 60 || f >= rate.nominal() {
            return Err(bad());
        }
        Ok(Timecode {
            text: raw.to_owned(),
            frames: ((h * 60 + m) * 60 + s) * rate.nominal() + f,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Frames from 00:00:00:00 at the rate it was parsed with.
    pub fn frames(&self) -> i64 {
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_kept_in_thousandths_and_bounded() {
        assert_eq!(Rate::parse(29.97).unwrap().millis(), 29_970);
        assert_eq!(Rate::parse(23.976).unwrap().display(), "23.976");
        assert_eq!(Rate::parse(25.0).unwrap().display(), "25");
        for bad in [0.0, -25.0, 0.5, 1000.5, f64::NAN, f64::INFINITY] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timecodes_parse_within_their_rate() {
        let rate = Rate::parse(25.0).unwrap();
        let tc = Timecode::parse("01:00:00:10", rate).unwrap();
        assert_eq!(tc.frames(), 3600 * 25 + 10);
        assert_eq!(tc.as_str(), "01:00:00:10");
        assert!(Timecode::parse("00:00:00:24", rate).is_ok());
        let drop = Rate::parse(29.97).unwrap();
        assert!(Timecode::parse("00:01:00;29", drop).is_ok());
        for bad in [
            "00:00:00:25",
            "24:00:00:00",
            "00:60:00:00",
            "00:00:60:00",
            "0:00:00:00",
            "00:00:00",
            "aa:bb:cc:dd",
            "",
            "00:00:00:00:00",
        ] {
            assert!(Timecode::parse(bad, rate).is_err(), "{bad}");
        }
    }

    #[test]
    fn frames_become_timecodes_and_positions() {
        let rate = Rate::parse(25.0).unwrap();
        assert_eq!(rate.timecode_of(0), "00:00:00:00");
        assert_eq!(rate.timecode_of(25 * 3661 + 7), "01:01:01:07");
        assert_eq!(rate.position_ms(50), 2000);
        let ntsc = Rate::parse(29.97).unwrap();
        assert_eq!(ntsc.timecode_of(30), "00:00:01:00");
        assert_eq!(ntsc.position_ms(2997), 100_000);
    }
}
