//! What every Patron server shares: configuration, telemetry, the error to
//! `tonic::Status` mapping, wire conversions, health, reflection, peers,
//! metrics, authentication, limits, trace context and the server itself
//! with graceful shutdown.

pub mod config;
pub mod convert;
pub mod cork;
pub mod error;
pub mod feed;
pub mod guard;
pub mod metrics;
pub mod peers;
pub mod population;
pub mod server;
pub mod telemetry;
pub mod trace;

pub use config::{ServiceKind, Settings};

/// Every Patron process allocates through mimalloc: the servers allocate
/// and free many short-lived buffers (messages, pipelines, rows), where the
/// system allocator paid for fresh pages on each large buffer (measured on
/// the bulk cache refresh, see BENCHMARKS.md). Built without transparent
/// huge pages (the workspace's `no_thp` feature).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub use error::{ApiResult, to_status};
pub use server::{Application, ServiceContext, ServiceModule};
// For `with_codec_settings!`, so its callers need not name tonic themselves.
#[doc(hidden)]
pub use tonic as __tonic;
