//! Messages written by hand: `patron.campaign.v1.StreamTargetsResponse`,
//! `patron.scoring.v1.BatchGetScoresResponse`, and [`ScoreReply`], the
//! `CustomerScore` that `GetScore` answers.
//!
//! On the wire each is exactly the generated message, so every client, in
//! any language, sees no difference. In Rust they can also carry entries that
//! are already encoded:
//! - a million-row target list is written straight from the server's rows
//!   into one buffer per message, instead of building (and allocating) a
//!   `Target` with its `fields` map for every row only to encode it and
//!   throw it away;
//! - a batch of scores is written from the encoded scores the cache and the
//!   store hold, instead of decoding each into a `CustomerScore` only to
//!   encode it again; `GetScore` answers the one score it looked up the
//!   same way.

use bytes::{Buf, BufMut, Bytes};
use prost::{
    DecodeError, Message,
    encoding::{DecodeContext, WireType, message, skip_field},
};

use crate::{campaign::Target, scoring::CustomerScore};

/// The `targets` field's number in campaign.proto.
pub const TARGETS_FIELD: u32 = 1;

/// A batch of targets: decoded ones in `targets` (what a client reads), plus
/// any already-encoded ones, which go on the wire after them.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct StreamTargetsResponse {
    pub targets: Vec<Target>,
    /// Encoded `targets` entries (field 1, length-delimited `Target`s), as
    /// [`TargetsEncoder`] writes them.
    encoded: Bytes,
}

impl StreamTargetsResponse {
    /// A response of targets encoded by a [`TargetsEncoder`].
    pub fn from_encoded(encoded: Bytes) -> Self {
        Self {
            targets: Vec::new(),
            encoded,
        }
    }
}

impl Message for StreamTargetsResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for target in &self.targets {
            message::encode(TARGETS_FIELD, target, buf);
        }
        buf.put_slice(&self.encoded);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag == TARGETS_FIELD {
            message::merge_repeated(wire_type, &mut self.targets, buf, ctx).map_err(|mut e| {
                e.push("StreamTargetsResponse", "targets");
                e
            })
        } else {
            skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        message::encoded_len_repeated(TARGETS_FIELD, &self.targets) + self.encoded.len()
    }

    fn clear(&mut self) {
        self.targets.clear();
        self.encoded = Bytes::new();
    }
}

/// Writes targets field by field into the body of a [`StreamTargetsResponse`],
/// byte for byte what prost writes for the same `Target` (empty strings are
/// left out, as proto3 does).
#[derive(Default)]
pub struct TargetsEncoder {
    body: Vec<u8>,
    /// The target being written (its length goes before it).
    current: Vec<u8>,
    targets: usize,
}

/// `Target`'s string fields (campaign.proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetText {
    CustomerId = 1,
    ExternalId = 2,
    DisplayName = 3,
    Email = 4,
    Phone = 5,
}

/// `Target.fields`, the map of the values the rule read.
const FIELDS_MAP: u32 = 6;

impl TargetsEncoder {
    /// Targets written since the last [`Self::finish`].
    pub fn len(&self) -> usize {
        self.targets
    }

    pub fn is_empty(&self) -> bool {
        self.targets == 0
    }

    /// One string field of the current target.
    pub fn text(&mut self, field: TargetText, value: &str) {
        put_string(&mut self.current, field as u32, value);
    }

    /// One `fields` entry of the current target.
    pub fn field(&mut self, key: &str, value: &str) {
        let len = string_len(1, key) + string_len(2, value);
        prost::encoding::encode_key(FIELDS_MAP, WireType::LengthDelimited, &mut self.current);
        prost::encoding::encode_varint(len as u64, &mut self.current);
        put_string(&mut self.current, 1, key);
        put_string(&mut self.current, 2, value);
    }

    /// Closes the current target; the next `text`/`field` start another.
    pub fn end_target(&mut self) {
        prost::encoding::encode_key(TARGETS_FIELD, WireType::LengthDelimited, &mut self.body);
        prost::encoding::encode_varint(self.current.len() as u64, &mut self.body);
        self.body.extend_from_slice(&self.current);
        self.current.clear();
        self.targets += 1;
    }

    /// The targets written so far, as one response; the encoder starts over.
    pub fn finish(&mut self) -> StreamTargetsResponse {
        self.targets = 0;
        let capacity = self.body.capacity();
        StreamTargetsResponse::from_encoded(Bytes::from(std::mem::replace(
            &mut self.body,
            Vec::with_capacity(capacity),
        )))
    }
}

/// The `scores` and `missing_ids` fields' numbers in scoring.proto.
pub const SCORES_FIELD: u32 = 1;
pub const MISSING_IDS_FIELD: u32 = 2;

/// Scores of a batch lookup: decoded ones in `scores` (what a client reads)
/// and, on the server, already-encoded ones appended with
/// [`push_encoded`](Self::push_encoded); on the wire the encoded ones follow
/// the decoded ones, in the order they were added.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct BatchGetScoresResponse {
    pub scores: Vec<CustomerScore>,
    pub missing_ids: Vec<String>,
    /// Encoded `CustomerScore`s, written as `scores` entries (field 1,
    /// length-delimited). Shared buffers (the cache's), so nothing is
    /// copied until the response is encoded into the transport's buffer.
    encoded: Vec<Bytes>,
}

impl BatchGetScoresResponse {
    /// An empty response with room for `n` encoded scores.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            encoded: Vec::with_capacity(n),
            ..Self::default()
        }
    }

    /// Appends one score, given as an encoded `CustomerScore`, as is. The
    /// bytes are not checked: the caller vouches that they are a
    /// `CustomerScore` this server encoded.
    pub fn push_encoded(&mut self, score: Bytes) {
        self.encoded.push(score);
    }
}

impl Message for BatchGetScoresResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for score in &self.scores {
            message::encode(SCORES_FIELD, score, buf);
        }
        for score in &self.encoded {
            prost::encoding::encode_key(SCORES_FIELD, WireType::LengthDelimited, buf);
            prost::encoding::encode_varint(score.len() as u64, buf);
            buf.put_slice(score);
        }
        prost::encoding::string::encode_repeated(MISSING_IDS_FIELD, &self.missing_ids, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let (merged, field) = match tag {
            SCORES_FIELD => (
                message::merge_repeated(wire_type, &mut self.scores, buf, ctx),
                "scores",
            ),
            MISSING_IDS_FIELD => (
                prost::encoding::string::merge_repeated(wire_type, &mut self.missing_ids, buf, ctx),
                "missing_ids",
            ),
            _ => return skip_field(wire_type, tag, buf, ctx),
        };
        merged.map_err(|mut e| {
            e.push("BatchGetScoresResponse", field);
            e
        })
    }

    fn encoded_len(&self) -> usize {
        message::encoded_len_repeated(SCORES_FIELD, &self.scores)
            + self
                .encoded
                .iter()
                .map(|s| {
                    prost::encoding::key_len(SCORES_FIELD)
                        + prost::encoding::encoded_len_varint(s.len() as u64)
                        + s.len()
                })
                .sum::<usize>()
            + prost::encoding::string::encoded_len_repeated(MISSING_IDS_FIELD, &self.missing_ids)
    }

    fn clear(&mut self) {
        self.scores.clear();
        self.missing_ids.clear();
        self.encoded.clear();
    }
}

/// `GetScore`'s answer: a `CustomerScore`, either decoded in `score` (what a
/// client reads) or, on the server, already encoded
/// ([`from_encoded`](Self::from_encoded)) and sent as it is. The generated
/// code uses this type wherever `GetScore` answers (proto/build.rs), so a
/// Rust client reads `response.into_inner().score`.
#[derive(Clone, Default, Debug)]
pub struct ScoreReply {
    pub score: CustomerScore,
    /// An encoded `CustomerScore`; when set, it is the whole message and
    /// `score` is not sent.
    encoded: Option<Bytes>,
}

impl ScoreReply {
    /// A reply of one encoded `CustomerScore`. The bytes are not checked:
    /// the caller vouches that they are a `CustomerScore` this server
    /// encoded.
    pub fn from_encoded(score: Bytes) -> Self {
        Self {
            score: CustomerScore::default(),
            encoded: Some(score),
        }
    }
}

impl From<CustomerScore> for ScoreReply {
    fn from(score: CustomerScore) -> Self {
        Self {
            score,
            encoded: None,
        }
    }
}

impl Message for ScoreReply {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match &self.encoded {
            Some(encoded) => buf.put_slice(encoded),
            None => self.score.encode_raw(buf),
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Decoding (a client's side) only ever fills `score`.
        self.score.merge_field(tag, wire_type, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        match &self.encoded {
            Some(encoded) => encoded.len(),
            None => self.score.encoded_len(),
        }
    }

    fn clear(&mut self) {
        self.score.clear();
        self.encoded = None;
    }
}

fn string_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        prost::encoding::key_len(tag)
            + prost::encoding::encoded_len_varint(value.len() as u64)
            + value.len()
    }
}

fn put_string(buf: &mut Vec<u8>, tag: u32, value: &str) {
    if !value.is_empty() {
        prost::encoding::encode_key(tag, WireType::LengthDelimited, buf);
        prost::encoding::encode_varint(value.len() as u64, buf);
        buf.extend_from_slice(value.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(id: &str, fields: &[(&str, &str)]) -> Target {
        Target {
            customer_id: id.into(),
            external_id: format!("ext-{id}"),
            display_name: String::new(),
            email: "a@example.com".into(),
            phone: String::new(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn encode(encoder: &mut TargetsEncoder, t: &Target) {
        encoder.text(TargetText::CustomerId, &t.customer_id);
        encoder.text(TargetText::ExternalId, &t.external_id);
        encoder.text(TargetText::DisplayName, &t.display_name);
        encoder.text(TargetText::Email, &t.email);
        encoder.text(TargetText::Phone, &t.phone);
        let mut fields: Vec<_> = t.fields.iter().collect();
        fields.sort();
        for (k, v) in fields {
            encoder.field(k, v);
        }
        encoder.end_target();
    }

    #[test]
    fn encoded_targets_are_what_prost_writes_and_reads() {
        // One map entry, so prost's (hash-ordered) map encoding is byte-stable.
        let one = vec![
            target("c1", &[("customer.region", "East")]),
            target("c2", &[("k", "")]),
        ];
        let mut encoder = TargetsEncoder::default();
        for t in &one {
            encode(&mut encoder, t);
        }
        assert_eq!(encoder.len(), 2);
        let ours = encoder.finish().encode_to_vec();
        let prost = StreamTargetsResponse {
            targets: one.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(ours, prost);
        assert!(encoder.is_empty());

        // Several entries, long values (multi-byte lengths), empty strings.
        let long = "x".repeat(300);
        let many = vec![
            target(
                "c3",
                &[("a", "1"), ("b", &long), ("", "empty key"), ("c", "")],
            ),
            target("", &[]),
        ];
        for t in &many {
            encode(&mut encoder, t);
        }
        let bytes = encoder.finish().encode_to_vec();
        let decoded = StreamTargetsResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.targets, many);
    }

    #[test]
    fn encoded_scores_are_what_prost_writes_and_reads() {
        use crate::scoring::{ChurnScore, RfmScore};
        let scores: Vec<CustomerScore> = (0..5)
            .map(|i| CustomerScore {
                customer_id: format!("c-{i}"),
                model_version: "m-1".into(),
                rfm: Some(RfmScore {
                    recency_days: i,
                    ..Default::default()
                }),
                churn: (i % 2 == 0).then(|| ChurnScore {
                    probability: 0.25 * i as f64,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let missing = vec!["gone-1".to_string(), String::new(), "gone-2".into()];
        // The generated form of the message, as any other client sees it.
        #[derive(Clone, PartialEq, prost::Message)]
        struct Generated {
            #[prost(message, repeated, tag = "1")]
            scores: Vec<CustomerScore>,
            #[prost(string, repeated, tag = "2")]
            missing_ids: Vec<String>,
        }
        let generated = Generated {
            scores: scores.clone(),
            missing_ids: missing.clone(),
        };
        let mut ours = BatchGetScoresResponse::with_capacity(scores.len());
        for s in &scores {
            ours.push_encoded(s.encode_to_vec().into());
        }
        ours.missing_ids = missing.clone();
        assert_eq!(ours.encode_to_vec(), generated.encode_to_vec());
        assert_eq!(ours.encoded_len(), generated.encoded_len());
        // Decoded and encoded scores mixed, read back as a client does.
        let mut mixed = BatchGetScoresResponse {
            scores: scores[..2].to_vec(),
            missing_ids: missing.clone(),
            ..Default::default()
        };
        for s in &scores[2..] {
            mixed.push_encoded(s.encode_to_vec().into());
        }
        let read = BatchGetScoresResponse::decode(mixed.encode_to_vec().as_slice()).unwrap();
        assert_eq!(read.scores, scores);
        assert_eq!(read.missing_ids, missing);
        assert_eq!(read.encoded_len(), mixed.encoded_len());
    }

    #[test]
    fn a_score_reply_is_a_customer_score_on_the_wire() {
        use crate::scoring::{ChurnScore, ClvScore, RfmScore};
        let score = CustomerScore {
            customer_id: "c-42".into(),
            model_version: "m-3".into(),
            rfm: Some(RfmScore {
                recency_days: 12,
                segment: "Champions".into(),
                ..Default::default()
            }),
            clv: Some(ClvScore {
                p_alive: 0.8,
                ..Default::default()
            }),
            churn: Some(ChurnScore {
                probability: 0.125,
                reasons: vec!["LONG_SILENCE".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let generated = score.encode_to_vec();
        // Sent as stored, and sent decoded: the same bytes as prost writes.
        let passed = ScoreReply::from_encoded(generated.clone().into());
        assert_eq!(passed.encode_to_vec(), generated);
        assert_eq!(passed.encoded_len(), generated.len());
        let built = ScoreReply::from(score.clone());
        assert_eq!(built.encode_to_vec(), generated);
        assert_eq!(built.encoded_len(), generated.len());
        // A client reads it back whole.
        assert_eq!(
            ScoreReply::decode(generated.as_slice()).unwrap().score,
            score
        );
        // An empty score is an empty message, either way.
        assert!(
            ScoreReply::from_encoded(Bytes::new())
                .encode_to_vec()
                .is_empty()
        );
        assert!(ScoreReply::default().encode_to_vec().is_empty());
    }
}
