//! Human-readable durations on the command line: `10s`, `500ms`, `2m`, `1h`, or
//! a bare number of seconds (`2.5`).
//!
//! Shared by every flag that takes a duration, so `kvserver --shutdown-grace` and
//! `kv --timeout` read the same way.

use std::time::Duration;

/// Parses a duration as described in the module documentation. Zero is allowed;
/// negative, non-finite and unit-less garbage are not.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds_per_unit = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m or h)"
            ));
        }
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 10s or 500ms"))?;
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|_| format!("{text:?} is not a valid duration (negative or too large)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn garbage_is_refused_with_the_input_in_the_message() {
        for bad in ["", "s", "ten", "5 parsecs", "-1s", "inf", "1e400s"] {
            let error = parse_duration(bad).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
        }
    }

    #[test]
    fn a_finite_number_beyond_what_a_duration_holds_is_too_large() {
        // u64::MAX seconds is about 1.8e19.
        for big in [
            "100000000000000000000s",
            "10000000000000000h",
            "18446744073709551616",
        ] {
            let error = parse_duration(big).unwrap_err();
            assert_eq!(
                error,
                format!("{big:?} is not a valid duration (negative or too large)")
            );
        }
    }
}
