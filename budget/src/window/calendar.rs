//! Calendar arithmetic on days since the unix epoch (Howard Hinnant's civil-from-days
//! algorithms), so no date crate is needed.

use super::{DAY_MS, Period, UtcOffset};

/// Start and end (milliseconds since the epoch) of the `period` holding `now`.
pub(crate) fn period_bounds(period: Period, offset: UtcOffset, now: i64) -> (i64, i64) {
    let local_day = (now + offset.as_millis()).div_euclid(DAY_MS);
    let (start, end) = match period {
        Period::Day => (local_day, local_day + 1),
        Period::Week => {
            // 1970-01-01 was a Thursday: Monday-based weekday 3.
            let start = local_day - (local_day + 3).rem_euclid(7);
            (start, start + 7)
        }
        Period::Month => {
            let (year, month, _) = civil_from_days(local_day);
            let next = if month == 12 {
                days_from_civil(year + 1, 1, 1)
            } else {
                days_from_civil(year, month + 1, 1)
            };
            (days_from_civil(year, month, 1), next)
        }
    };
    (
        start * DAY_MS - offset.as_millis(),
        end * DAY_MS - offset.as_millis(),
    )
}

/// Days since 1970-01-01 of the proleptic Gregorian date `year-month-day`.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` that is `days` after 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn ms(year: i64, month: u32, day: u32, hour: i64) -> i64 {
        days_from_civil(year, month, day) * DAY_MS + hour * H
    }

    #[test]
    fn civil_round_trips() {
        for days in [-1_000_000, -719_468, -1, 0, 1, 11_016, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn day_week_month_bounds() {
        let now = ms(2024, 2, 29, 13); // a Thursday in a leap February
        assert_eq!(
            period_bounds(Period::Day, UtcOffset::UTC, now),
            (ms(2024, 2, 29, 0), ms(2024, 3, 1, 0))
        );
        assert_eq!(
            period_bounds(Period::Week, UtcOffset::UTC, now),
            (ms(2024, 2, 26, 0), ms(2024, 3, 4, 0))
        );
        assert_eq!(
            period_bounds(Period::Month, UtcOffset::UTC, now),
            (ms(2024, 2, 1, 0), ms(2024, 3, 1, 0))
        );
        let december = ms(2023, 12, 31, 23);
        assert_eq!(
            period_bounds(Period::Month, UtcOffset::UTC, december),
            (ms(2023, 12, 1, 0), ms(2024, 1, 1, 0))
        );
    }

    #[test]
    fn offsets_move_the_boundaries() {
        // 20:00 UTC on the 29th is already the 1st of March in UTC+5.
        let now = ms(2024, 2, 29, 20);
        let plus5 = UtcOffset::hours(5);
        assert_eq!(
            period_bounds(Period::Month, plus5, now),
            (ms(2024, 2, 29, 19), ms(2024, 3, 31, 19))
        );
        let minus8 = UtcOffset::hours(-8);
        assert_eq!(
            period_bounds(Period::Day, minus8, ms(2024, 3, 1, 3)),
            (ms(2024, 2, 29, 8), ms(2024, 3, 1, 8))
        );
    }
}
