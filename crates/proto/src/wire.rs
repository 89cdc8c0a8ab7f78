//! `patron.campaign.v1.StreamTargetsResponse`, written by hand.
//!
//! On the wire it is exactly the generated message (`repeated Target targets
//! = 1`), so every client, in any language, sees no difference. In Rust it
//! can also carry targets that are already encoded: a million-row target
//! list is then written straight from the server's rows into one buffer per
//! message, instead of building (and allocating) a `Target` with its
//! `fields` map for every row only to encode it and throw it away.

use bytes::{Buf, BufMut, Bytes};
use prost::{
    DecodeError, Message,
    encoding::{DecodeContext, WireType, message, skip_field},
};

use crate::campaign::Target;

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
}
