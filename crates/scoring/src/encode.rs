//! A computed score written straight from the models' figures into its
//! protobuf encoding: byte for byte what prost writes for the
//! `CustomerScore` that `scores::to_proto` builds (a property test holds the
//! two together).
//!
//! A recompute encodes a million scores. Building each message first costs a
//! dozen allocations (the id, the segment name, the churn reasons, seven
//! currency codes, the model version), freed again right after the encoding,
//! and prost walks each nested message twice (its length, then its bytes):
//! together more than a second of a core at a million customers, on the
//! recompute's critical path (its store step, beside PostgreSQL's COPY).
//!
//! Fields follow proto3 as prost writes them: in field-number order, a
//! scalar left out when it is zero, empty or false, a set message field
//! written even when empty.

use chrono::{DateTime, Utc};
use patron_domain::{Money, models::scores::CustomerScores, money::Currency};
use prost::encoding::{WireType, encoded_len_varint, key_len};

use crate::scores::{amount, churn_risk, lifecycle_stage, unit_amount, value_quadrant, value_tier};

/// Encodes the scores of one recompute (or one online batch): what they
/// share, and a buffer reused for each nested message.
pub(crate) struct ScoreEncoder<'a> {
    version: &'a str,
    as_of: (i64, i32),
    at: (i64, i32),
    nested: Vec<u8>,
}

fn timestamp(t: DateTime<Utc>) -> (i64, i32) {
    (t.timestamp(), t.timestamp_subsec_nanos() as i32)
}

/// A varint, written here rather than by `prost::encoding::encode_varint`,
/// which the compiler left out of line: a call per key and length, a
/// tenth of a recompute's encoding time.
#[inline(always)]
fn varint(mut v: u64, buf: &mut Vec<u8>) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// A field's key: its number and wire type.
#[inline(always)]
fn key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    varint(u64::from(tag << 3 | wire_type as u32), buf);
}

fn int64(tag: u32, v: i64, buf: &mut Vec<u8>) {
    if v != 0 {
        key(tag, WireType::Varint, buf);
        varint(v as u64, buf);
    }
}

fn int32(tag: u32, v: i32, buf: &mut Vec<u8>) {
    // Negative numbers take ten bytes, as for int64 (proto3's encoding).
    int64(tag, i64::from(v), buf);
}

fn double(tag: u32, v: f64, buf: &mut Vec<u8>) {
    if v != 0.0 {
        key(tag, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

fn string(tag: u32, v: &str, buf: &mut Vec<u8>) {
    if !v.is_empty() {
        key(tag, WireType::LengthDelimited, buf);
        varint(v.len() as u64, buf);
        buf.extend_from_slice(v.as_bytes());
    }
}

fn int64_len(tag: u32, v: i64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v as u64)
    }
}

/// A message field whose body is `body`.
fn message(tag: u32, body: &[u8], buf: &mut Vec<u8>) {
    key(tag, WireType::LengthDelimited, buf);
    varint(body.len() as u64, buf);
    buf.extend_from_slice(body);
}

/// A `Money` field, when there is an amount.
fn money(tag: u32, m: Option<Money>, buf: &mut Vec<u8>) {
    let Some(m) = m else { return };
    let code = m.currency.as_str();
    let (units, nanos) = m.to_parts();
    let len = key_len(1)
        + encoded_len_varint(code.len() as u64)
        + code.len()
        + int64_len(2, units)
        + int64_len(3, i64::from(nanos));
    key(tag, WireType::LengthDelimited, buf);
    varint(len as u64, buf);
    string(1, code, buf);
    int64(2, units, buf);
    int32(3, nanos, buf);
}

/// A `google.protobuf.Timestamp` field.
fn time(tag: u32, (seconds, nanos): (i64, i32), buf: &mut Vec<u8>) {
    let len = int64_len(1, seconds) + int64_len(2, i64::from(nanos));
    key(tag, WireType::LengthDelimited, buf);
    varint(len as u64, buf);
    int64(1, seconds, buf);
    int32(2, nanos, buf);
}

impl<'a> ScoreEncoder<'a> {
    pub(crate) fn new(version: &'a str, as_of: DateTime<Utc>, at: DateTime<Utc>) -> Self {
        Self {
            version,
            as_of: timestamp(as_of),
            at: timestamp(at),
            nested: Vec::with_capacity(128),
        }
    }

    /// Appends the encoded `CustomerScore` of customer `id` (see
    /// `scores::to_proto`) to `out`. A recompute encodes a chunk of scores
    /// into one buffer they then share (see `scores::score_rows`).
    pub(crate) fn encode(
        &mut self,
        s: &CustomerScores,
        id: &str,
        currency: Option<Currency>,
        ranks_stale: bool,
        out: &mut Vec<u8>,
    ) {
        string(1, id, out);

        let b = &mut self.nested;
        b.clear();
        int64(1, s.recency_days, b);
        int64(2, i64::from(s.frequency), b);
        money(3, amount(currency, s.monetary_nanos), b);
        int32(4, i32::from(s.r_score), b);
        int32(5, i32::from(s.f_score), b);
        int32(6, i32::from(s.m_score), b);
        string(7, s.segment.as_str(), b);
        double(8, s.weighted_score, b);
        if ranks_stale {
            key(9, WireType::Varint, b);
            b.push(1);
        }
        message(2, b, out);

        b.clear();
        money(1, amount(currency, s.monetary_nanos), b);
        money(2, unit_amount(currency, s.simple_clv), b);
        double(3, s.expected_purchases_365d, b);
        double(4, s.p_alive, b);
        money(5, unit_amount(currency, s.predicted_clv_365d), b);
        money(6, unit_amount(currency, s.expected_occasion_value), b);
        message(3, b, out);

        b.clear();
        double(1, s.churn_probability, b);
        int32(2, churn_risk(s) as i32, b);
        for reason in &s.churn_reasons {
            key(3, WireType::LengthDelimited, b);
            varint(reason.len() as u64, b);
            b.extend_from_slice(reason.as_bytes());
        }
        message(4, b, out);

        int32(5, value_tier(s) as i32, out);
        int32(6, value_quadrant(s) as i32, out);
        int32(7, lifecycle_stage(s) as i32, out);
        double(8, s.loyalty_index, out);

        b.clear();
        money(1, amount(currency, s.revenue_nanos), b);
        money(2, amount(currency, s.cost_nanos), b);
        money(3, amount(currency, s.margin_nanos), b);
        message(9, b, out);

        time(10, self.at, out);
        string(11, self.version, out);
        time(12, self.as_of, out);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use patron_domain::models::{
        rfm::Segment,
        scores::{ChurnRisk, LifecycleStage, ValueQuadrant, ValueTier},
    };
    use proptest::{prelude::*, strategy::ValueTree};
    use prost::Message;

    use super::*;

    fn amount() -> impl Strategy<Value = i128> {
        prop_oneof![
            Just(0i128),
            -5_000_000_000i128..5_000_000_000,
            any::<i64>().prop_map(i128::from),
            // Beyond i64: saturated, as `scores::money` does.
            Just(i128::MAX),
            Just(i128::MIN),
        ]
    }

    fn figure() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            Just(-0.0),
            -1e6..1e6f64,
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
        ]
    }

    fn scores() -> impl Strategy<Value = CustomerScores> {
        let reasons = [
            "LONG_SILENCE",
            "OVERDUE",
            "NO_REPEAT_PURCHASE",
            "DETRACTOR",
            "OPEN_COMPLAINT",
            "FALLING_SPEND",
            "LOW_RETURN_RATE",
        ];
        (
            (
                any::<i64>(),
                any::<u32>(),
                amount(),
                0u8..=5,
                0u8..=5,
                0u8..=5,
                0..Segment::ALL.len(),
                figure(),
            ),
            (figure(), figure(), figure(), figure(), figure(), figure()),
            (
                0..3usize,
                proptest::sample::subsequence(reasons.to_vec(), 0..=reasons.len()),
                0..4usize,
                0..5usize,
                0..6usize,
            ),
            (figure(), amount(), amount(), amount()),
        )
            .prop_map(
                |(
                    (recency, frequency, monetary, r, f, m, segment, weighted),
                    (simple, p_alive, expected, occasion, predicted, churn),
                    (risk, churn_reasons, tier, quadrant, stage),
                    (loyalty, revenue, cost, margin),
                )| CustomerScores {
                    customer: 0,
                    recency_days: recency,
                    frequency,
                    monetary_nanos: monetary,
                    r_score: r,
                    f_score: f,
                    m_score: m,
                    segment: Segment::ALL[segment],
                    weighted_score: weighted,
                    historical_value: 0.0,
                    simple_clv: simple,
                    p_alive,
                    expected_purchases_365d: expected,
                    expected_occasion_value: occasion,
                    predicted_clv_365d: predicted,
                    churn_probability: churn,
                    churn_risk: [ChurnRisk::Low, ChurnRisk::Medium, ChurnRisk::High][risk],
                    churn_reasons,
                    value_tier: [
                        None,
                        Some(ValueTier::Low),
                        Some(ValueTier::Medium),
                        Some(ValueTier::High),
                    ][tier],
                    value_quadrant: [
                        None,
                        Some(ValueQuadrant::Star),
                        Some(ValueQuadrant::Grow),
                        Some(ValueQuadrant::Maintain),
                        Some(ValueQuadrant::Minimal),
                    ][quadrant],
                    lifecycle: [
                        LifecycleStage::Prospect,
                        LifecycleStage::New,
                        LifecycleStage::Active,
                        LifecycleStage::Loyal,
                        LifecycleStage::AtRisk,
                        LifecycleStage::Churned,
                    ][stage],
                    loyalty_index: loyalty,
                    revenue_nanos: revenue,
                    cost_nanos: cost,
                    margin_nanos: margin,
                },
            )
    }

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        prop_oneof![
            Just(Utc.timestamp_opt(0, 0).unwrap()),
            (-2_000_000_000i64..4_000_000_000, 0u32..1_000_000_000)
                .prop_map(|(s, n)| Utc.timestamp_opt(s, n).unwrap()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Byte for byte the encoding of the message `to_proto` builds, for
        /// any figures (zeros, negative zero, NaN, amounts beyond i64), any
        /// labels and reasons, with and without a currency and a model.
        #[test]
        fn a_score_encodes_as_prost_encodes_its_message(
            s in scores(),
            id in "[a-z0-9-]{0,40}",
            currency in prop_oneof![Just(None), Just(Some("EUR")), Just(Some("JPY"))],
            version in prop_oneof![Just(String::new()), "[a-f0-9-]{36}"],
            as_of in instant(),
            at in instant(),
            ranks_stale in any::<bool>(),
        ) {
            let currency = currency.map(|c| Currency::parse(c).unwrap());
            let want = crate::scores::to_proto(&s, &id, currency, &version, as_of, at, ranks_stale)
                .encode_to_vec();
            let mut got = Vec::new();
            ScoreEncoder::new(&version, as_of, at).encode(&s, &id, currency, ranks_stale, &mut got);
            prop_assert_eq!(got, want);
        }
    }

    /// One encoder, many scores one after the other in one buffer: each
    /// is whole and on its own (the reused nested buffer carries nothing
    /// over, nothing is written before or over an earlier score).
    #[test]
    fn an_encoder_encodes_each_score_on_its_own() {
        let at = Utc.timestamp_opt(1_790_000_000, 5).unwrap();
        let mut encoder = ScoreEncoder::new("m1", at, at);
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let eur = Some(Currency::parse("EUR").unwrap());
        let mut out = Vec::new();
        let mut wanted = Vec::new();
        for _ in 0..200 {
            let s = scores().new_tree(&mut runner).unwrap().current();
            let want = crate::scores::to_proto(&s, "c-1", eur, "m1", at, at, false).encode_to_vec();
            let start = out.len();
            encoder.encode(&s, "c-1", eur, false, &mut out);
            assert_eq!(out[start..], want[..]);
            wanted.extend(want);
        }
        assert_eq!(out, wanted);
    }
}
