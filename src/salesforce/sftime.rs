//! Salesforce date and datetime text, without a calendar dependency.
//!
//! Contract:
//! * [`format_datetime`] renders epoch milliseconds the way the REST API does:
//!   `2024-01-31T12:05:09.042+0000` (always UTC, always milliseconds).
//! * [`parse_datetime`] accepts that form and ISO 8601 / RFC 3339 variants: `Z`, `+HH:MM`,
//!   `+HHMM` or `+HH` offsets, optional fraction (any number of digits, truncated to
//!   milliseconds), and a bare date `2024-01-31` (midnight UTC). It returns epoch milliseconds.
//! * [`format_date`] / [`parse_date`] handle `YYYY-MM-DD` as epoch milliseconds at midnight UTC.
//! * Errors are plain strings that quote the input and say what is wrong.

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// `2024-01-31T12:05:09.042+0000`.
pub fn format_datetime(epoch_ms: i64) -> String {
    let days = epoch_ms.div_euclid(MS_PER_DAY);
    let ms = epoch_ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (min, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}+0000")
}

/// `2024-01-31T12:05:09Z`: a SOQL datetime literal (SOQL and SOSL Reference, "Date Formats and
/// Date Literals": `YYYY-MM-DDThh:mm:ssZ`, no fraction), the instant rounded down to its second.
pub fn format_datetime_utc(epoch_ms: i64) -> String {
    let text = format_datetime(epoch_ms.div_euclid(1000) * 1000);
    format!("{}Z", &text[..19])
}

/// `2024-01-31` (the UTC date of the instant).
pub fn format_date(epoch_ms: i64) -> String {
    let (y, m, d) = civil_from_days(epoch_ms.div_euclid(MS_PER_DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

fn digits(s: &str, what: &str, input: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{input}`: {what} is not a number"));
    }
    s.parse()
        .map_err(|_| format!("`{input}`: {what} is out of range"))
}

/// `YYYY-MM-DD` → epoch milliseconds at midnight UTC.
pub fn parse_date(input: &str) -> Result<i64, String> {
    let bytes = input.as_bytes();
    if bytes.len() != 10 || !input.is_ascii() || bytes[4] != b'-' || bytes[7] != b'-' {
        return Err(format!("`{input}` is not a date like 2024-01-31"));
    }
    let y = i64::from(digits(&input[0..4], "the year", input)?);
    let m = digits(&input[5..7], "the month", input)?;
    let d = digits(&input[8..10], "the day", input)?;
    if !(1..=12).contains(&m) {
        return Err(format!("`{input}`: month {m} does not exist"));
    }
    if d == 0 || d > days_in_month(y, m) {
        return Err(format!("`{input}`: day {d} does not exist in that month"));
    }
    Ok(days_from_civil(y, m, d) * MS_PER_DAY)
}

/// A Salesforce or ISO 8601 datetime (or a bare date) → epoch milliseconds.
pub fn parse_datetime(input: &str) -> Result<i64, String> {
    let input = input.trim();
    if input.len() < 10 || !input.is_char_boundary(10) {
        return Err(format!(
            "`{input}` is not a datetime like 2024-01-31T12:05:09.042+0000"
        ));
    }
    let rest = &input[10..];
    let date = parse_date(&input[..10]).map_err(|e| {
        if rest.is_empty() {
            e
        } else {
            format!("`{input}`: {e}")
        }
    })?;
    if rest.is_empty() {
        return Ok(date);
    }
    let rest = rest
        .strip_prefix('T')
        .or_else(|| rest.strip_prefix(' '))
        .ok_or_else(|| format!("`{input}`: expected `T` after the date"))?;
    if rest.len() < 8
        || !rest.is_char_boundary(8)
        || rest.as_bytes()[2] != b':'
        || rest.as_bytes()[5] != b':'
    {
        return Err(format!("`{input}`: the time must be HH:MM:SS"));
    }
    let h = digits(&rest[0..2], "the hour", input)?;
    let min = digits(&rest[3..5], "the minute", input)?;
    let s = digits(&rest[6..8], "the second", input)?;
    if h > 23 || min > 59 || s > 60 {
        return Err(format!("`{input}`: the time is out of range"));
    }
    let mut rest = &rest[8..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let end = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        if end == 0 {
            return Err(format!("`{input}`: empty fraction of a second"));
        }
        let padded: String = frac[..end].chars().chain("000".chars()).take(3).collect();
        millis = i64::from(digits(&padded, "the fraction", input)?);
        rest = &frac[end..];
    }
    let offset_minutes: i64 = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(format!("`{input}`: unexpected `{rest}` after the time")),
            };
            let body = rest[1..].replace(':', "");
            if !body.is_ascii() {
                return Err(format!("`{input}`: the offset must be ±HH:MM or ±HHMM"));
            }
            let (oh, om) = match body.len() {
                2 => (digits(&body, "the offset", input)?, 0),
                4 => (
                    digits(&body[0..2], "the offset", input)?,
                    digits(&body[2..4], "the offset", input)?,
                ),
                _ => return Err(format!("`{input}`: the offset must be ±HH:MM or ±HHMM")),
            };
            if oh > 23 || om > 59 {
                return Err(format!("`{input}`: the offset is out of range"));
            }
            sign * i64::from(oh * 60 + om)
        }
    };
    let seconds = i64::from(h) * 3600 + i64::from(min) * 60 + i64::from(s);
    Ok(date + seconds * 1000 + millis - offset_minutes * 60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_rest_api() {
        assert_eq!(format_datetime(0), "1970-01-01T00:00:00.000+0000");
        assert_eq!(
            format_datetime(1_706_702_709_042),
            "2024-01-31T12:05:09.042+0000"
        );
        assert_eq!(format_date(1_706_702_709_042), "2024-01-31");
        assert_eq!(format_datetime(-1), "1969-12-31T23:59:59.999+0000");
    }

    #[test]
    fn parses_every_accepted_form() {
        let t = 1_706_702_709_042;
        for s in [
            "2024-01-31T12:05:09.042+0000",
            "2024-01-31T12:05:09.042Z",
            "2024-01-31T12:05:09.042+00:00",
            "2024-01-31T13:05:09.042+01:00",
            "2024-01-31T07:05:09.042-05",
            "2024-01-31T12:05:09.042999Z",
            "2024-01-31 12:05:09.042",
        ] {
            assert_eq!(parse_datetime(s), Ok(t), "{s}");
        }
        assert_eq!(parse_datetime("2024-01-31"), Ok(1_706_659_200_000));
        assert_eq!(parse_datetime("2024-01-31T12:05:09Z"), Ok(t - 42));
        assert_eq!(parse_datetime("2024-01-31T12:05:09.5Z"), Ok(t - 42 + 500));
    }

    #[test]
    fn round_trips_across_centuries() {
        for ms in [
            0,
            951_782_400_000,
            4_102_444_799_999,
            -2_208_988_800_000,
            1_709_164_800_123,
        ] {
            assert_eq!(parse_datetime(&format_datetime(ms)), Ok(ms));
        }
    }

    #[test]
    fn errors_quote_the_input() {
        for s in [
            "yesterday",
            "2024-02-30",
            "2023-02-29T00:00:00Z",
            "2024-13-01",
            "2024-01-31T25:00:00Z",
            "2024-01-31T12:00",
            "2024-01-31T12:00:00+5",
            "2024-01-31T12:00:00.Z",
            "2024-01-31X12:00:00Z",
            "2024-01-3é",
            "2024-01-31T12:00:0é",
            "2024-01-31T12:00:00+0é",
            "2024-01-31T12:00:00+0é0",
        ] {
            let err = parse_datetime(s).unwrap_err();
            assert!(err.contains(s.trim()), "{s}: {err}");
        }
        assert_eq!(parse_date("2024-02-29"), Ok(1_709_164_800_000));
    }
}
