//! Conversions between wire types and domain types shared by every service.
//! Each returns a field violation naming `field` when the input is invalid.

use chrono::{DateTime, Datelike, NaiveDate, SubsecRound, Utc};
use patron_domain::{ApiError, Money};
use patron_proto::{common, google::r#type::Date};
use prost_types::Timestamp;

/// Earliest and latest instants accepted (years 1900..=9999).
const MIN_SECONDS: i64 = -2_208_988_800;
const MAX_SECONDS: i64 = 253_402_300_799;

/// A timestamp, truncated to microseconds (the storage precision).
pub fn timestamp(ts: &Timestamp, field: &str) -> Result<DateTime<Utc>, ApiError> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(ApiError::invalid_field(
            field,
            "nanos must be in 0..999,999,999",
        ));
    }
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) {
        return Err(ApiError::invalid_field(
            field,
            "must be between the years 1900 and 9999",
        ));
    }
    DateTime::from_timestamp(ts.seconds, ts.nanos as u32)
        .map(|t| t.trunc_subsecs(6))
        .ok_or_else(|| ApiError::invalid_field(field, "is not a valid timestamp"))
}

/// A required timestamp.
pub fn required_timestamp(ts: Option<&Timestamp>, field: &str) -> Result<DateTime<Utc>, ApiError> {
    match ts {
        Some(ts) => timestamp(ts, field),
        None => Err(ApiError::invalid_field(field, "is required")),
    }
}

/// An optional timestamp; absent stays `None`.
pub fn optional_timestamp(
    ts: Option<&Timestamp>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    ts.map(|t| timestamp(t, field)).transpose()
}

pub fn to_timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A full calendar date; an absent or all-zero date is `None`.
pub fn date(d: Option<&Date>, field: &str) -> Result<Option<NaiveDate>, ApiError> {
    match d {
        None => Ok(None),
        Some(Date {
            year: 0,
            month: 0,
            day: 0,
        }) => Ok(None),
        Some(d) => {
            let month = u32::try_from(d.month).unwrap_or(0);
            let day = u32::try_from(d.day).unwrap_or(0);
            NaiveDate::from_ymd_opt(d.year, month, day)
                .filter(|_| d.year >= 1)
                .map(Some)
                .ok_or_else(|| {
                    ApiError::invalid_field(field, "must be a full, valid date (year, month, day)")
                })
        }
    }
}

pub fn to_date(d: NaiveDate) -> Date {
    Date {
        year: d.year(),
        month: d.month() as i32,
        day: d.day() as i32,
    }
}

/// Money with google.type.Money rules.
pub fn money(m: &common::Money, field: &str) -> Result<Money, ApiError> {
    Money::from_parts(&m.currency_code, m.units, m.nanos).map_err(|e| {
        let mut v = patron_domain::Violations::new();
        v.extend_within(field, e);
        v.into_error()
    })
}

pub fn required_money(m: Option<&common::Money>, field: &str) -> Result<Money, ApiError> {
    match m {
        Some(m) => money(m, field),
        None => Err(ApiError::invalid_field(field, "is required")),
    }
}

pub fn to_money(m: Money) -> common::Money {
    let (units, nanos) = m.to_parts();
    common::Money {
        currency_code: m.currency.to_string(),
        units,
        nanos,
    }
}

/// Today's date in UTC.
pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// Now, truncated to the storage precision (microseconds).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_at_microsecond_precision() {
        let ts = Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        };
        let t = timestamp(&ts, "t").unwrap();
        assert_eq!(
            to_timestamp(t),
            Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_456_000
            }
        );
    }

    #[test]
    fn bad_timestamps_name_the_field() {
        let err = timestamp(
            &Timestamp {
                seconds: 0,
                nanos: -1,
            },
            "occurred_at",
        )
        .unwrap_err();
        assert_eq!(err.violations[0].field, "occurred_at");
        assert!(
            timestamp(
                &Timestamp {
                    seconds: i64::MAX,
                    nanos: 0
                },
                "t"
            )
            .is_err()
        );
        assert!(required_timestamp(None, "t").is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(date(None, "d").unwrap(), None);
        assert_eq!(
            date(
                Some(&Date {
                    year: 0,
                    month: 0,
                    day: 0
                }),
                "d"
            )
            .unwrap(),
            None
        );
        let d = date(
            Some(&Date {
                year: 1990,
                month: 2,
                day: 28,
            }),
            "d",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            to_date(d),
            Date {
                year: 1990,
                month: 2,
                day: 28
            }
        );
        let err = date(
            Some(&Date {
                year: 1990,
                month: 2,
                day: 30,
            }),
            "birth_date",
        )
        .unwrap_err();
        assert_eq!(err.violations[0].field, "birth_date");
        assert!(
            date(
                Some(&Date {
                    year: 0,
                    month: 5,
                    day: 1
                }),
                "d"
            )
            .is_err()
        );
    }

    #[test]
    fn money_violations_are_nested_under_the_field() {
        let m = common::Money {
            currency_code: "XYZ".into(),
            units: 1,
            nanos: 0,
        };
        let err = money(&m, "transactions[0].amount").unwrap_err();
        assert_eq!(
            err.violations[0].field,
            "transactions[0].amount.currency_code"
        );
        let ok = common::Money {
            currency_code: "EUR".into(),
            units: 12,
            nanos: 340_000_000,
        };
        assert_eq!(to_money(money(&ok, "a").unwrap()), ok);
    }
}
