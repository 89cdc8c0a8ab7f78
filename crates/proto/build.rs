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

    // `GetScore` answers a `CustomerScore`. The Rust code answers it as a
    // hand-written wrapper (`wire::ScoreReply`, the same bytes on the wire)
    // so that a cached score goes out as it is stored instead of being
    // decoded and encoded again. Only the code generator sees the renamed
    // output type: the descriptor set written above (what reflection serves)
    // and the contract keep `CustomerScore`.
    let mut codegen = descriptors;
    let get_score = codegen
        .file
        .iter_mut()
        .filter(|f| f.package() == "patron.scoring.v1")
        .flat_map(|f| f.service.iter_mut())
        .filter(|s| s.name() == "ScoringService")
        .flat_map(|s| s.method.iter_mut())
        .find(|m| m.name() == "GetScore")
        .ok_or("scoring.proto has no ScoringService.GetScore")?;
    if get_score.output_type() != ".patron.scoring.v1.CustomerScore" {
        return Err("GetScore no longer answers a CustomerScore: revisit wire::ScoreReply".into());
    }
    get_score.output_type = Some(".patron.scoring.v1.GetScoreReply".into());

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // RPCs a service has not implemented yet answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        // Hand-written (src/wire.rs), same wire format: the server can send
        // targets and scores it encoded itself, without building a message
        // per row or per call.
        .extern_path(
            ".patron.campaign.v1.StreamTargetsResponse",
            "crate::wire::StreamTargetsResponse",
        )
        .extern_path(
            ".patron.scoring.v1.BatchGetScoresResponse",
            "crate::wire::BatchGetScoresResponse",
        )
        .extern_path(
            ".patron.scoring.v1.GetScoreReply",
            "crate::wire::ScoreReply",
        )
        .compile_fds(codegen)?;
    Ok(())
}
