//! `patron.profile.v1.CustomerProfileService`: the system of record for
//! customers, transactions, behaviour events and contact history, with an
//! ordered change feed (transactional outbox) and privacy operations.

mod convert;
mod feed;
mod grpc;
mod mask;
mod service;

use patron_proto::profile::customer_profile_service_server::CustomerProfileServiceServer;
use patron_runtime::{ServiceContext, ServiceKind, ServiceModule};
use tonic::service::RoutesBuilder;

pub use service::ProfileApi;

/// How a server hosts this service.
pub fn module() -> ServiceModule {
    ServiceModule {
        kind: ServiceKind::Profile,
        depends_on: &[],
        register,
        on_ready: None,
    }
}

fn register(ctx: &ServiceContext, routes: &mut RoutesBuilder) {
    let limit = ctx.max_message_bytes();
    routes.add_service(
        CustomerProfileServiceServer::new(ProfileApi::new(ctx))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
    );
}
