//! Generated protobuf and gRPC code for the Patron contract (`proto/`).
//!
//! Generated code, plus three hand-written messages ([`wire`]) whose encoding
//! the server controls. Each package is re-exported under a short name:
//! `patron_proto::profile::CustomerProfileServiceClient`, ...

#![allow(unreachable_pub, missing_docs, clippy::all, rust_2018_idioms)]

#[rustfmt::skip]
pub mod google {
    pub mod r#type {
        include!(concat!(env!("OUT_DIR"), "/google.r#type.rs"));
    }
}

#[rustfmt::skip]
pub mod patron {
    pub mod common {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/patron.common.v1.rs"));
        }
    }
    pub mod profile {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/patron.profile.v1.rs"));
        }
    }
    pub mod scoring {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/patron.scoring.v1.rs"));
            pub use crate::wire::{BatchGetScoresResponse, ScoreReply};
        }
    }
    pub mod feedback {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/patron.feedback.v1.rs"));
        }
    }
    pub mod campaign {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/patron.campaign.v1.rs"));
            pub use crate::wire::StreamTargetsResponse;
        }
    }
}

pub mod wire;

pub use patron::campaign::v1 as campaign;
pub use patron::common::v1 as common;
pub use patron::feedback::v1 as feedback;
pub use patron::profile::v1 as profile;
pub use patron::scoring::v1 as scoring;

/// The encoded `FileDescriptorSet` of the whole contract (imports included),
/// served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/patron_descriptor.bin"));

/// Fully-qualified gRPC service names, as used by grpc.health.v1.
pub mod service_names {
    pub const PROFILE: &str = "patron.profile.v1.CustomerProfileService";
    pub const SCORING: &str = "patron.scoring.v1.ScoringService";
    pub const FEEDBACK: &str = "patron.feedback.v1.FeedbackService";
    pub const CAMPAIGN: &str = "patron.campaign.v1.CampaignService";
}
