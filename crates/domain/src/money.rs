//! Exact money. An amount is an integer count of nanos (10^-9 units) in one
//! ISO 4217 currency, so sums are exact and never touch floating point.
//! Floats appear only in model outputs (expected values), converted back with
//! explicit rounding.

use std::fmt;

use crate::error::ApiError;

/// Active ISO 4217 currency codes (plus the precious-metal and SDR codes
/// that appear in ledgers).
const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VED", "VES", "VND", "VUV", "WST", "XAF", "XAG", "XAU", "XCD", "XCG", "XDR", "XOF", "XPD",
    "XPF", "XPT", "YER", "ZAR", "ZMW", "ZWG",
];

const NANOS_PER_UNIT: i64 = 1_000_000_000;

/// An ISO 4217 currency code, validated on construction.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, ApiError> {
        if ISO_4217.binary_search(&code).is_err() {
            return Err(ApiError::invalid_field(
                "currency_code",
                format!("{code:?} is not an ISO 4217 currency code"),
            ));
        }
        let b = code.as_bytes();
        Ok(Self([b[0], b[1], b[2]]))
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from ASCII codes in ISO_4217.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An exact amount of money.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Money {
    pub currency: Currency,
    /// The amount in 10^-9 units. Fits amounts up to about 9.2 billion units.
    pub nanos: i64,
}

impl Money {
    pub fn zero(currency: Currency) -> Self {
        Self { currency, nanos: 0 }
    }

    /// From google.type.Money parts, with its sign and range rules.
    pub fn from_parts(currency_code: &str, units: i64, nanos: i32) -> Result<Self, ApiError> {
        let currency = Currency::parse(currency_code)?;
        if !(-999_999_999..=999_999_999).contains(&nanos) {
            return Err(ApiError::invalid_field(
                "nanos",
                "must be between -999,999,999 and +999,999,999",
            ));
        }
        if (units > 0 && nanos < 0) || (units < 0 && nanos > 0) {
            return Err(ApiError::invalid_field(
                "nanos",
                "must have the same sign as units",
            ));
        }
        let total = units
            .checked_mul(NANOS_PER_UNIT)
            .and_then(|n| n.checked_add(i64::from(nanos)))
            .ok_or_else(|| ApiError::invalid_field("units", "amount is too large"))?;
        Ok(Self {
            currency,
            nanos: total,
        })
    }

    /// google.type.Money parts: (units, nanos) with matching signs.
    pub fn to_parts(self) -> (i64, i32) {
        let units = self.nanos / NANOS_PER_UNIT;
        // The remainder is within +-999,999,999 by construction.
        let nanos = (self.nanos % NANOS_PER_UNIT) as i32;
        (units, nanos)
    }

    /// The amount in units as a float, for models. Loses precision beyond 2^53 nanos.
    pub fn to_f64(self) -> f64 {
        self.nanos as f64 / NANOS_PER_UNIT as f64
    }

    /// From a model output in units, rounded to the nearest nano and saturated.
    pub fn from_f64(currency: Currency, units: f64) -> Self {
        let nanos = if units.is_finite() {
            (units * NANOS_PER_UNIT as f64)
                .round()
                .clamp(i64::MIN as f64, i64::MAX as f64) as i64
        } else {
            0
        };
        Self { currency, nanos }
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        Some(Money {
            currency: self.currency,
            nanos: self.nanos.checked_add(other.nanos)?,
        })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        let units = abs / NANOS_PER_UNIT as u64;
        let frac = abs % NANOS_PER_UNIT as u64;
        // Two decimals unless more precision is present.
        let mut frac_str = format!("{frac:09}");
        while frac_str.len() > 2 && frac_str.ends_with('0') {
            frac_str.pop();
        }
        write!(f, "{sign}{units}.{frac_str} {}", self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn currency_list_is_sorted_for_binary_search() {
        let mut sorted = ISO_4217.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        // VED sorts before VES; keep the table in order.
        assert_eq!(sorted.len(), ISO_4217.len());
    }

    #[test]
    fn unknown_currency_is_rejected_with_the_field() {
        let err = Money::from_parts("EURO", 1, 0).unwrap_err();
        assert_eq!(err.violations[0].field, "currency_code");
        assert!(Money::from_parts("usd", 1, 0).is_err());
    }

    #[test]
    fn sign_and_range_rules() {
        assert!(Money::from_parts("EUR", 1, -5).is_err());
        assert!(Money::from_parts("EUR", -1, 5).is_err());
        assert!(Money::from_parts("EUR", 0, 1_000_000_000).is_err());
        assert!(Money::from_parts("EUR", i64::MAX, 0).is_err());
        let m = Money::from_parts("EUR", -3, -500_000_000).unwrap();
        assert_eq!(m.nanos, -3_500_000_000);
        assert_eq!(m.to_string(), "-3.50 EUR");
    }

    proptest! {
        #[test]
        fn parts_round_trip(units in -9_000_000_000i64..9_000_000_000, nanos in 0i32..1_000_000_000) {
            let nanos = if units < 0 { -nanos } else { nanos };
            let m = Money::from_parts("USD", units, nanos).unwrap();
            prop_assert_eq!(m.to_parts(), (units, nanos));
        }
    }
}
