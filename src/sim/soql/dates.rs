//! SOQL's relative date literals (`TODAY`, `LAST_N_DAYS:30`, `THIS_MONTH`, …): each is a range
//! of time `[start, end)` that starts at midnight, resolved when the query is parsed.
//!
//! Contract (SOQL and SOSL Reference, "Date Formats and Date Literals in WHERE"):
//! * Ranges are computed in the querying user's time zone and locale; the simulated org's users
//!   are `Etc/UTC` and `en_US` (see `rest/identity.rs`), so days start at 00:00:00 UTC and
//!   weeks on Sunday.
//! * `=` finds values within the range, `!=` outside it, `<` before its start, `<=` before its
//!   end, `>` from its end on, `>=` from its start on (applied in `filter.rs`).
//! * Served: `YESTERDAY`, `TODAY`, `TOMORROW`; `LAST_WEEK`, `THIS_WEEK`, `NEXT_WEEK`;
//!   `LAST_MONTH`, `THIS_MONTH`, `NEXT_MONTH`; `LAST_QUARTER`, `THIS_QUARTER`, `NEXT_QUARTER`
//!   (calendar quarters); `LAST_YEAR`, `THIS_YEAR`, `NEXT_YEAR`; `LAST_90_DAYS` (today and the
//!   90 days before: 91 days), `NEXT_90_DAYS` (from tomorrow); and with `:n`:
//!   `LAST_N_DAYS` (today and the n days before), `NEXT_N_DAYS` (n days from tomorrow),
//!   `N_DAYS_AGO` (the one day n days before today), `LAST_N_WEEKS`, `NEXT_N_WEEKS`,
//!   `N_WEEKS_AGO`, `LAST_N_MONTHS`, `NEXT_N_MONTHS`, `N_MONTHS_AGO`, `LAST_N_QUARTERS`,
//!   `NEXT_N_QUARTERS`, `N_QUARTERS_AGO`, `LAST_N_YEARS`, `NEXT_N_YEARS`, `N_YEARS_AGO` (whole
//!   periods before or after the current one, which they exclude). The fiscal literals are not
//!   served (a Known difference).

use crate::salesforce::sftime::{civil_from_days, days_from_civil};

const DAY_MS: i64 = 86_400_000;

/// How a literal is written: alone, or with `:n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arity {
    Fixed,
    WithN,
}

/// Whether `word` is a date literal, and how it is written.
pub(super) fn arity(word: &str) -> Option<Arity> {
    let w = word.to_ascii_uppercase();
    let fixed = [
        "YESTERDAY",
        "TODAY",
        "TOMORROW",
        "LAST_WEEK",
        "THIS_WEEK",
        "NEXT_WEEK",
        "LAST_MONTH",
        "THIS_MONTH",
        "NEXT_MONTH",
        "LAST_QUARTER",
        "THIS_QUARTER",
        "NEXT_QUARTER",
        "LAST_YEAR",
        "THIS_YEAR",
        "NEXT_YEAR",
        "LAST_90_DAYS",
        "NEXT_90_DAYS",
    ];
    if fixed.contains(&w.as_str()) {
        return Some(Arity::Fixed);
    }
    let unit = ["DAYS", "WEEKS", "MONTHS", "QUARTERS", "YEARS"]
        .iter()
        .any(|u| {
            w == format!("LAST_N_{u}") || w == format!("NEXT_N_{u}") || w == format!("N_{u}_AGO")
        });
    unit.then_some(Arity::WithN)
}

/// The first day (day number) of the month `months` after the month of day `day`.
fn month_start(day: i64, months: i64) -> i64 {
    let (y, m, _) = civil_from_days(day);
    let index = y * 12 + i64::from(m) - 1 + months;
    days_from_civil(index.div_euclid(12), (index.rem_euclid(12) + 1) as u32, 1)
}

/// `[start, end)` in epoch ms of the literal `word` (`n` for the `:n` forms) at `now_ms`.
pub(super) fn range(word: &str, n: i64, now_ms: i64) -> Option<(i64, i64)> {
    let w = word.to_ascii_uppercase();
    let today = now_ms.div_euclid(DAY_MS);
    // 1970-01-01 was a Thursday: four days after a Sunday.
    let week = today - (today + 4).rem_euclid(7);
    let (_, m, _) = civil_from_days(today);
    let quarter_months = i64::from((m - 1) % 3);
    let months = |from: i64, to: i64| (month_start(today, from), month_start(today, to));
    let quarters = |from: i64, to: i64| {
        (
            month_start(today, 3 * from - quarter_months),
            month_start(today, 3 * to - quarter_months),
        )
    };
    let years = |from: i64, to: i64| {
        let this = month_start(today, -(i64::from(m) - 1));
        (month_start(this, 12 * from), month_start(this, 12 * to))
    };
    let (start, end) = match w.as_str() {
        "YESTERDAY" => (today - 1, today),
        "TODAY" => (today, today + 1),
        "TOMORROW" => (today + 1, today + 2),
        "LAST_WEEK" => (week - 7, week),
        "THIS_WEEK" => (week, week + 7),
        "NEXT_WEEK" => (week + 7, week + 14),
        "LAST_MONTH" => months(-1, 0),
        "THIS_MONTH" => months(0, 1),
        "NEXT_MONTH" => months(1, 2),
        "LAST_QUARTER" => quarters(-1, 0),
        "THIS_QUARTER" => quarters(0, 1),
        "NEXT_QUARTER" => quarters(1, 2),
        "LAST_YEAR" => years(-1, 0),
        "THIS_YEAR" => years(0, 1),
        "NEXT_YEAR" => years(1, 2),
        "LAST_90_DAYS" => (today - 90, today + 1),
        "NEXT_90_DAYS" => (today + 1, today + 91),
        "LAST_N_DAYS" => (today - n, today + 1),
        "NEXT_N_DAYS" => (today + 1, today + 1 + n),
        "N_DAYS_AGO" => (today - n, today - n + 1),
        "LAST_N_WEEKS" => (week - 7 * n, week),
        "NEXT_N_WEEKS" => (week + 7, week + 7 + 7 * n),
        "N_WEEKS_AGO" => (week - 7 * n, week - 7 * n + 7),
        "LAST_N_MONTHS" => months(-n, 0),
        "NEXT_N_MONTHS" => months(1, 1 + n),
        "N_MONTHS_AGO" => months(-n, 1 - n),
        "LAST_N_QUARTERS" => quarters(-n, 0),
        "NEXT_N_QUARTERS" => quarters(1, 1 + n),
        "N_QUARTERS_AGO" => quarters(-n, 1 - n),
        "LAST_N_YEARS" => years(-n, 0),
        "NEXT_N_YEARS" => years(1, 1 + n),
        "N_YEARS_AGO" => years(-n, 1 - n),
        _ => return None,
    };
    Some((start * DAY_MS, end * DAY_MS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salesforce::sftime::{format_date, parse_datetime};

    /// The range as dates, its end exclusive.
    fn dates(word: &str, n: i64, now: &str) -> (String, String) {
        let now = parse_datetime(now).expect("now");
        let (s, e) = range(word, n, now).expect(word);
        (format_date(s), format_date(e))
    }

    #[test]
    fn ranges_start_at_midnight_utc_and_weeks_on_sunday() {
        // 2026-12-05 is a Saturday.
        let now = "2026-12-05T23:59:59Z";
        let d = |s: &str, e: &str| (s.to_owned(), e.to_owned());
        assert_eq!(dates("today", 0, now), d("2026-12-05", "2026-12-06"));
        assert_eq!(dates("YESTERDAY", 0, now), d("2026-12-04", "2026-12-05"));
        assert_eq!(dates("THIS_WEEK", 0, now), d("2026-11-29", "2026-12-06"));
        assert_eq!(dates("LAST_WEEK", 0, now), d("2026-11-22", "2026-11-29"));
        assert_eq!(dates("THIS_MONTH", 0, now), d("2026-12-01", "2027-01-01"));
        assert_eq!(dates("NEXT_MONTH", 0, now), d("2027-01-01", "2027-02-01"));
        assert_eq!(dates("THIS_QUARTER", 0, now), d("2026-10-01", "2027-01-01"));
        assert_eq!(dates("LAST_QUARTER", 0, now), d("2026-07-01", "2026-10-01"));
        assert_eq!(dates("NEXT_YEAR", 0, now), d("2027-01-01", "2028-01-01"));
        assert_eq!(dates("LAST_90_DAYS", 0, now), d("2026-09-06", "2026-12-06"));
        assert_eq!(dates("LAST_N_DAYS", 1, now), d("2026-12-04", "2026-12-06"));
        assert_eq!(dates("NEXT_N_DAYS", 2, now), d("2026-12-06", "2026-12-08"));
        assert_eq!(dates("N_DAYS_AGO", 3, now), d("2026-12-02", "2026-12-03"));
        assert_eq!(
            dates("LAST_N_MONTHS", 2, now),
            d("2026-10-01", "2026-12-01")
        );
        assert_eq!(
            dates("N_MONTHS_AGO", 12, now),
            d("2025-12-01", "2026-01-01")
        );
        assert_eq!(dates("LAST_N_YEARS", 2, now), d("2024-01-01", "2026-01-01"));
        assert_eq!(dates("NEXT_N_WEEKS", 1, now), d("2026-12-06", "2026-12-13"));
        // A Sunday is the first day of its own week.
        assert_eq!(
            dates("THIS_WEEK", 0, "2026-11-29T00:00:00Z"),
            d("2026-11-29", "2026-12-06")
        );
        assert_eq!(arity("last_n_days"), Some(Arity::WithN));
        assert_eq!(arity("TODAY"), Some(Arity::Fixed));
        assert_eq!(arity("THIS_FISCAL_YEAR"), None);
        assert_eq!(range("THIS_FISCAL_YEAR", 0, 0), None);
    }
}
