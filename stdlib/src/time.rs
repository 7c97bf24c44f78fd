//! Time as text: an instant (milliseconds since the Unix epoch, UTC) to RFC 3339 and back.
//! One definition for the compiler (`time "…"` literals) and the runtime (JSON input and
//! output, history).

/// RFC 3339 in UTC with milliseconds: `2026-11-23T23:12:32.000Z`.
pub fn format_time(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let secs_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs_of_day / 3600,
        (secs_of_day / 60) % 60,
        secs_of_day % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC only).
pub fn parse_time(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !text.ends_with('Z') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let fraction = &text[19..text.len() - 1];
    let millis = if fraction.is_empty() {
        0
    } else {
        let digits = fraction.strip_prefix('.')?;
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        format!("{:0<3}", &digits[..digits.len().min(3)])
            .parse::<i64>()
            .ok()?
    };
    let days = days_from_civil(year, month, day);
    // No 31 February: the day must exist in its month.
    if civil_from_days(days) != (year, month, day) {
        return None;
    }
    Some(((days * 86_400 + hour * 3600 + minute * 60 + second) * 1000) + millis)
}

// Howard Hinnant's civil-date algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_days_that_do_not_exist() {
        let ms = parse_time("2026-12-01T09:00:00Z").expect("a time");
        assert_eq!(format_time(ms), "2026-12-01T09:00:00.000Z");
        assert_eq!(parse_time("2026-12-01T09:00:00.250Z"), Some(ms + 250));
        assert_eq!(
            parse_time("2028-02-29T00:00:00Z")
                .map(format_time)
                .as_deref(),
            Some("2028-02-29T00:00:00.000Z")
        );
        assert_eq!(parse_time("2026-02-29T00:00:00Z"), None);
        assert_eq!(parse_time("2026-04-31T00:00:00Z"), None);
        assert_eq!(parse_time("2026-12-01T09:00:00+01:00"), None);
        assert_eq!(parse_time("2026-12-01"), None);
    }
}
