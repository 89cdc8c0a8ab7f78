//! Hostile input to every RPC of every service, over real gRPC:
//!
//! - random but well-formed protobuf messages built from the contract's
//!   descriptors (nasty strings, extreme numbers, unknown enum values,
//!   absurd timestamps, deep nesting, real ids mixed in) must get a proper
//!   status: never INTERNAL, UNKNOWN, UNIMPLEMENTED, UNAVAILABLE or
//!   DATA_LOSS, and never a hang;
//! - bytes that are not protobuf, or truncated, get INVALID_ARGUMENT
//!   (reason `MALFORMED_REQUEST`), not the library's INTERNAL;
//! - requests compressed with gzip or deflate are read like plain ones;
//!   compressed bytes that do not inflate are the client's error too, and
//!   one that would inflate beyond `server.max_message_bytes` is refused
//!   with RESOURCE_EXHAUSTED;
//! - and the server stays healthy throughout.
//!
//! A failure prints the RPC, the seed and the message bytes to replay.

use std::{collections::HashMap, time::Duration};

use bytes::{Buf, BufMut, Bytes};
use patron_tests::{backend_tests, pb::profile as profile_pb};
use prost::{
    Message,
    encoding::{WireType, encode_key, encode_varint},
};
use prost_types::{
    DescriptorProto, FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};
use rand::{Rng, SeedableRng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;
use tonic::{
    Code, Request, Status,
    codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder},
};
use tonic_types::StatusExt;

/// Sends and receives raw message bytes, so any method can be called with
/// any payload.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

struct Method {
    path: String,
    input: String,
    server_streaming: bool,
}

struct Contract {
    methods: Vec<Method>,
    messages: HashMap<String, DescriptorProto>,
}

fn contract() -> Contract {
    let set = FileDescriptorSet::decode(patron_tests::pb::FILE_DESCRIPTOR_SET).unwrap();
    let mut messages = HashMap::new();
    fn index(prefix: &str, m: &DescriptorProto, out: &mut HashMap<String, DescriptorProto>) {
        let name = format!("{prefix}.{}", m.name());
        for nested in &m.nested_type {
            index(&name, nested, out);
        }
        out.insert(name, m.clone());
    }
    let mut methods = Vec::new();
    for file in &set.file {
        let package = format!(".{}", file.package());
        for m in &file.message_type {
            index(&package, m, &mut messages);
        }
        if !file.package().starts_with("patron.") {
            continue;
        }
        for service in &file.service {
            for m in &service.method {
                assert!(!m.client_streaming(), "no client streaming in the contract");
                methods.push(Method {
                    path: format!("/{}.{}/{}", file.package(), service.name(), m.name()),
                    input: m.input_type().to_owned(),
                    server_streaming: m.server_streaming(),
                });
            }
        }
    }
    assert!(methods.len() > 40, "found {} methods", methods.len());
    Contract { methods, messages }
}

/// Random well-formed messages of a type.
struct Gen<'a> {
    rng: ChaCha8Rng,
    contract: &'a Contract,
    strings: Vec<String>,
}

const NASTY: &[&str] = &[
    "",
    " ",
    "a",
    "East",
    "EUR",
    "XXX",
    "vip",
    "email",
    "delivery",
    "2025-01-01",
    "2025-13-45",
    "-1",
    "0",
    "NaN",
    "null",
    "\u{0}",
    "nul\u{0}inside",
    "' OR '1'='1' --",
    "%_\\",
    "\"quoted\"",
    "../../etc/passwd",
    "ünïcödé ✓ 日本語",
    "\u{202E}rtl",
    "\u{FFFF}",
    "🎉",
    "customer.region = \"East\"",
    "has(customer.tags, \"vip\") and rfm.recency_score >= 4",
    "region = \"East\" AND",
    "((((((((((",
    "display_name desc",
    "create_time",
    "customers/1",
    "not-a-token",
    "eyJhbGciOiJub25lIn0",
    "ada@example.com",
    "+44 20 7946 0958",
    "01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "0195e4a2-5f0e-7c1a-9a39-7c1f0f6c1a2b",
    "display_name,email",
    "*",
    "status",
];

impl Gen<'_> {
    fn string(&mut self) -> String {
        match self.rng.random_range(0..10) {
            0 => "x".repeat(self.rng.random_range(200..5000)),
            1..=3 => self.strings.choose(&mut self.rng).unwrap().clone(),
            _ => (*NASTY.choose(&mut self.rng).unwrap()).to_owned(),
        }
    }

    fn int(&mut self) -> i64 {
        *[
            0,
            1,
            -1,
            2,
            3,
            5,
            7,
            10,
            100,
            1000,
            1001,
            5000,
            86_400,
            1_700_000_000,
            253_402_300_800,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
            i64::MAX,
            i64::MIN,
            self.rng.random(),
        ]
        .choose(&mut self.rng)
        .unwrap()
    }

    fn double(&mut self) -> f64 {
        *[
            0.0,
            -0.0,
            0.5,
            1.0,
            -1.0,
            10.0,
            1e308,
            5e-324,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ]
        .choose(&mut self.rng)
        .unwrap()
    }

    fn message(&mut self, name: &str, depth: u32, out: &mut Vec<u8>) {
        let Some(desc) = self.contract.messages.get(name).cloned() else {
            return;
        };
        for field in &desc.field {
            if !self.rng.random_bool(0.6) {
                continue;
            }
            let repeats = if field.label() == Label::Repeated {
                self.rng.random_range(0..4)
            } else {
                1
            };
            for _ in 0..repeats {
                self.field(
                    field.number() as u32,
                    field.r#type(),
                    field.type_name(),
                    depth,
                    out,
                );
            }
        }
    }

    fn field(&mut self, tag: u32, ty: Type, type_name: &str, depth: u32, out: &mut Vec<u8>) {
        match ty {
            Type::String | Type::Bytes => {
                let s = self.string();
                encode_key(tag, WireType::LengthDelimited, out);
                encode_varint(s.len() as u64, out);
                out.extend_from_slice(s.as_bytes());
            }
            Type::Int32 | Type::Int64 | Type::Uint32 | Type::Uint64 | Type::Enum => {
                let v = if ty == Type::Enum {
                    *[0i64, 1, 2, 3, 4, 5, 99, -1].choose(&mut self.rng).unwrap()
                } else {
                    self.int()
                };
                encode_key(tag, WireType::Varint, out);
                encode_varint(v as u64, out);
            }
            Type::Bool => {
                encode_key(tag, WireType::Varint, out);
                encode_varint(u64::from(self.rng.random_bool(0.5)), out);
            }
            Type::Sint32 | Type::Sint64 => {
                let v = self.int();
                encode_key(tag, WireType::Varint, out);
                encode_varint(((v << 1) ^ (v >> 63)) as u64, out);
            }
            Type::Double | Type::Fixed64 | Type::Sfixed64 => {
                encode_key(tag, WireType::SixtyFourBit, out);
                out.put_f64_le(self.double());
            }
            Type::Float | Type::Fixed32 | Type::Sfixed32 => {
                encode_key(tag, WireType::ThirtyTwoBit, out);
                out.put_f32_le(self.double() as f32);
            }
            Type::Message if depth < 4 => {
                let mut inner = Vec::new();
                self.message(type_name, depth + 1, &mut inner);
                encode_key(tag, WireType::LengthDelimited, out);
                encode_varint(inner.len() as u64, out);
                out.extend_from_slice(&inner);
            }
            Type::Message | Type::Group => {}
        }
    }
}

/// Calls `path` with `payload`; a stream is read up to its first message.
async fn call(
    channel: &tonic::transport::Channel,
    method: &Method,
    payload: Bytes,
) -> Result<(), Status> {
    call_compressed(channel, method, payload, None).await
}

/// [`call`], the request compressed with `encoding`.
async fn call_compressed(
    channel: &tonic::transport::Channel,
    method: &Method,
    payload: Bytes,
    encoding: Option<CompressionEncoding>,
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    if let Some(encoding) = encoding {
        grpc = grpc.send_compressed(encoding);
    }
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::try_from(method.path.as_str()).unwrap();
    let mut request = Request::new(payload);
    request.set_timeout(Duration::from_secs(10));
    if method.server_streaming {
        let mut stream = grpc
            .server_streaming(request, path, Raw)
            .await?
            .into_inner();
        // Follow-mode streams may wait for data: the first message or the
        // end is enough, waiting is not an error.
        match tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Ok(()),
        }
    } else {
        grpc.unary(request, path, Raw).await.map(|_| ())
    }
}

/// A payload, short enough to read in a failure message.
fn show(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().take(48).map(|b| format!("{b:02x}")).collect();
    format!(
        "{} bytes: {hex}{}",
        bytes.len(),
        if bytes.len() > 48 { "..." } else { "" }
    )
}

fn forbidden(code: Code) -> bool {
    matches!(
        code,
        Code::Internal | Code::Unknown | Code::Unimplemented | Code::Unavailable | Code::DataLoss
    )
}

/// Per RPC and backend; `HOSTILE_MESSAGES` and `HOSTILE_SEED` widen a run
/// (e.g. `HOSTILE_MESSAGES=500 HOSTILE_SEED=$RANDOM`).
fn messages_per_rpc() -> usize {
    std::env::var("HOSTILE_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25)
}

backend_tests! {
    async fn random_well_formed_messages_get_a_proper_status(app: TestApp) {
        let contract = contract();
        // Real ids in the mix reach past the NOT_FOUND checks.
        let mut strings = Vec::new();
        for i in 0..3 {
            let c = app.profile().create_customer(profile_pb::CreateCustomerRequest {
                customer: Some(profile_pb::Customer { external_id: format!("hostile-{i}"), region: "East".into(), ..Default::default() }),
                request_id: String::new(),
            }).await.unwrap().into_inner();
            strings.push(c.id);
            strings.push(c.etag);
            strings.push(c.external_id);
        }
        let seed: u64 = std::env::var("HOSTILE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
        let mut generator = Gen { rng: ChaCha8Rng::seed_from_u64(seed), contract: &contract, strings };
        let mut failures = Vec::new();
        let mut calls = 0;
        for method in &contract.methods {
            for _ in 0..messages_per_rpc() {
                let mut bytes = Vec::new();
                generator.message(&method.input, 0, &mut bytes);
                calls += 1;
                let outcome = tokio::time::timeout(Duration::from_secs(15), call(&app.channel, method, Bytes::from(bytes.clone()))).await;
                match outcome {
                    Err(_) => failures.push(format!("{} hung on {}", method.path, show(&bytes))),
                    Ok(Err(status)) if forbidden(status.code()) => failures.push(format!(
                        "{} -> {:?} {:?} for {}", method.path, status.code(), status.message(), show(&bytes)
                    )),
                    Ok(_) => {}
                }
            }
        }
        eprintln!("{calls} random calls (seed {seed:#x}), {} bad answers", failures.len());
        assert!(failures.is_empty(), "seed {seed:#x}:\n{}", failures.join("\n"));
        app.health().check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("still healthy");
    }

    async fn bytes_that_are_not_protobuf_are_invalid_argument(app: TestApp) {
        let contract = contract();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut failures = Vec::new();
        for method in &contract.methods {
            let mut valid = Vec::new();
            Gen { rng: ChaCha8Rng::seed_from_u64(1), contract: &contract, strings: vec!["x".into()] }
                .message(&method.input, 0, &mut valid);
            let random: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
            let payloads: Vec<(&str, Vec<u8>)> = vec![
                ("garbage", vec![0xff; 11]),
                ("random", random),
                // A field header promising more bytes than follow.
                ("truncated", vec![0x0a, 0x7f, b'a', b'b']),
                ("half a message", valid[..valid.len() / 2].to_vec()),
            ];
            for (what, payload) in payloads {
                match call(&app.channel, method, Bytes::from(payload.clone())).await {
                    Err(status) if status.code() == Code::InvalidArgument
                        && status.message().contains("decode")
                        && reason(&status) != "MALFORMED_REQUEST" => {
                        failures.push(format!("{} {what}: reason {:?}", method.path, reason(&status)));
                    }
                    // It happened to parse: then it is an ordinary request.
                    Err(status) if forbidden(status.code()) => failures.push(format!("{} {what}: {:?} {:?}", method.path, status.code(), status.message())),
                    _ => {}
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        app.health().check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("still healthy");
    }
}

fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// One request frame sent as it is (`grpc-encoding` and the frame's
/// compressed flag set by the caller), for payloads no client library
/// would produce; returns the call's status.
async fn send_frame(
    channel: &tonic::transport::Channel,
    path: &str,
    encoding: &str,
    compressed: bool,
    payload: &[u8],
) -> Status {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut frame = vec![u8::from(compressed)];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    let request = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-encoding", encoding)
        .body(tonic::body::Body::new(
            http_body_util::Full::new(Bytes::from(frame)).map_err(|e| match e {}),
        ))
        .unwrap();
    let response = channel.clone().oneshot(request).await.unwrap();
    if let Some(status) = Status::from_header_map(response.headers()) {
        return status; // trailers-only
    }
    let body = response.into_body().collect().await.unwrap();
    Status::from_header_map(body.trailers().expect("trailers")).expect("a status")
}

/// The payload, gzip-compressed.
fn gzip(payload: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(payload).unwrap();
    encoder.finish().unwrap()
}

/// Compression is independent of the storage backend: SQLite only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_requests_are_read_like_plain_ones() {
    let Some(app) = patron_tests::TestApp::spawn(patron_tests::Backend::Sqlite).await else {
        return;
    };
    // A typed round trip: written gzip-compressed, read back
    // deflate-compressed, every field intact.
    let customer = profile_pb::Customer {
        external_id: "zipped-1".into(),
        display_name: "Zoë Ünzip 圧縮".into(),
        region: "East".into(),
        tags: vec!["a".into(), "b".into()],
        ..Default::default()
    };
    let created = app
        .profile()
        .send_compressed(CompressionEncoding::Gzip)
        .create_customer(profile_pb::CreateCustomerRequest {
            customer: Some(customer.clone()),
            request_id: String::new(),
        })
        .await
        .expect("a gzip-compressed request is accepted")
        .into_inner();
    let read = app
        .profile()
        .send_compressed(CompressionEncoding::Deflate)
        .get_customer(profile_pb::GetCustomerRequest {
            id: created.id.clone(),
        })
        .await
        .expect("a deflate-compressed request is accepted")
        .into_inner();
    assert_eq!(
        (
            read.external_id.as_str(),
            read.display_name.as_str(),
            &read.tags
        ),
        ("zipped-1", "Zoë Ünzip 圧縮", &customer.tags)
    );
    // Every RPC, both encodings: never UNIMPLEMENTED or another forbidden code.
    let contract = contract();
    let mut generator = Gen {
        rng: ChaCha8Rng::seed_from_u64(3),
        contract: &contract,
        strings: vec![created.id],
    };
    let mut failures = Vec::new();
    for method in &contract.methods {
        for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Deflate] {
            let mut bytes = Vec::new();
            generator.message(&method.input, 0, &mut bytes);
            match call_compressed(
                &app.channel,
                method,
                Bytes::from(bytes.clone()),
                Some(encoding),
            )
            .await
            {
                Err(status) if forbidden(status.code()) => failures.push(format!(
                    "{} ({encoding:?}) -> {:?} {:?} for {}",
                    method.path,
                    status.code(),
                    status.message(),
                    show(&bytes)
                )),
                _ => {}
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_compressed_requests_are_the_clients_error() {
    let Some(app) = patron_tests::TestApp::spawn(patron_tests::Backend::Sqlite).await else {
        return;
    };
    let path = "/patron.profile.v1.CustomerProfileService/GetCustomer";
    // The same frame uncompressed reaches the handler (a proper NOT_FOUND),
    // so what follows is about the compression alone.
    let request = profile_pb::GetCustomerRequest {
        id: "01a20c50-2c9b-7649-b9d3-d9d3dc7bcfe2".into(),
    }
    .encode_to_vec();
    let plain = send_frame(&app.channel, path, "identity", false, &request).await;
    assert_eq!(plain.code(), Code::NotFound, "{plain:?}");
    let zipped = send_frame(&app.channel, path, "gzip", true, &gzip(&request)).await;
    assert_eq!(zipped.code(), Code::NotFound, "{zipped:?}");

    for (what, encoding, bytes) in [
        ("not gzip", "gzip", b"certainly not gzip".to_vec()),
        ("not deflate", "deflate", b"certainly not deflate".to_vec()),
        ("cut short", "gzip", gzip(&request)[..10].to_vec()),
    ] {
        let status = send_frame(&app.channel, path, encoding, true, &bytes).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert_eq!(reason(&status), "MALFORMED_REQUEST", "{what}: {status:?}");
        assert!(
            status.message().contains("decompress"),
            "{what}: {status:?}"
        );
    }

    // 20 KiB on the wire that would inflate to one byte more than the
    // server takes: refused while inflating, not after.
    let limit = app.settings.server.max_message_bytes;
    let bomb = gzip(&vec![0u8; limit + 1]);
    assert!(bomb.len() < limit / 100, "{} bytes", bomb.len());
    let status = send_frame(&app.channel, path, "gzip", true, &bomb).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    app.health()
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("still healthy");
}
