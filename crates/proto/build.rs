//! Generates the gRPC code for the whole contract under `proto/` with the
//! pure-Rust `protox` compiler (no system `protoc` needed) and writes the
//! encoded descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTO_FILES: &[&str] = &[
    "patron/common/v1/common.proto",
    "patron/profile/v1/profile.proto",
    "patron/scoring/v1/scoring.proto",
    "patron/feedback/v1/feedback.proto",
    "patron/campaign/v1/campaign.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let mut compiler = protox::Compiler::new([&proto_root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTO_FILES)?;
    let descriptors = compiler.file_descriptor_set();
    fs::write(
        out_dir.join("patron_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // RPCs a service has not implemented yet answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        // Hand-written (src/wire.rs), same wire format: the server can send
        // targets and scores it encoded itself, without building a message
        // per row.
        .extern_path(
            ".patron.campaign.v1.StreamTargetsResponse",
            "crate::wire::StreamTargetsResponse",
        )
        .extern_path(
            ".patron.scoring.v1.BatchGetScoresResponse",
            "crate::wire::BatchGetScoresResponse",
        )
        .compile_fds(descriptors)?;
    Ok(())
}
