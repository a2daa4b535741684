//! Durations on the command line (`kvstore put --ttl 30s`, `kvstore
//! expire KEY 5m`): a whole number with a unit, `ms`, `s`, `m`, `h` or
//! `d`, or a plain whole number of seconds (as Redis's `EXPIRE` takes).
//! No fractions, no sign, no spaces, no compound forms (`1h30m`).

use std::time::Duration;

/// Parses `text`; the error is the reason clap shows after the value.
pub fn parse(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(USAGE.into()),
    };
    if digits.is_empty() {
        return Err(USAGE.into());
    }
    let ms = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per_unit))
        .ok_or_else(|| format!("too long: at most {} ms", u64::MAX))?;
    Ok(Duration::from_millis(ms))
}

const USAGE: &str =
    "expected a whole number with a unit, ms, s, m, h or d (500ms, 30s, 5m), or plain seconds";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_plain_seconds() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn anything_else_is_refused_with_the_forms_accepted() {
        for bad in ["", "s", "-5s", "1.5s", "5 m", "5M", "1h30m", "10x", "+3"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("500ms, 30s, 5m"), "{bad:?}: {err}");
        }
        assert!(parse("18446744073709551615d")
            .unwrap_err()
            .contains("too long"));
        assert!(parse("99999999999999999999999").is_err());
    }
}
