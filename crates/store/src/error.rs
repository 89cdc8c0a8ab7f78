use patron_domain::{ApiError, ErrorCode};
use sea_orm::{DbErr, RuntimeErr, SqlErr};

use crate::Schema;

/// Failures of the storage layer itself (start-up, migrations).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot connect to the database at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: DbErr,
    },
    #[error("migrating the {schema:?} schema failed: {source}")]
    Migrate {
        schema: Schema,
        #[source]
        source: DbErr,
    },
    /// `database.migrate_on_start` is off and migrations are pending: the
    /// migration job has not run (yet). Start-up waits for it.
    #[error(
        "the {schema:?} schema has {pending} pending migration(s); run `patron migrate` (database.migrate_on_start is off)"
    )]
    SchemaBehind { schema: Schema, pending: usize },
}

/// Translates a database error where it happens: unique violations become
/// ALREADY_EXISTS, lost or exhausted connections UNAVAILABLE (retryable),
/// lock contention ABORTED; anything else is INTERNAL and only logged.
pub fn db_error(err: DbErr) -> ApiError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => {
            return ApiError::already_exists("a resource with this key already exists");
        }
        Some(SqlErr::ForeignKeyConstraintViolation(_)) => {
            return ApiError::failed_precondition(
                "REFERENCED_RESOURCE_MISSING",
                "a referenced resource does not exist",
            );
        }
        _ => {}
    }
    match &err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => {
            ApiError::unavailable("the database is unavailable", &err)
        }
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            sqlx_error(e, &err)
        }
        DbErr::RecordNotFound(what) => {
            ApiError::new(ErrorCode::NotFound, "NOT_FOUND", what.clone())
        }
        _ => ApiError::internal(&err),
    }
}

fn sqlx_error(e: &sea_orm::sqlx::Error, err: &DbErr) -> ApiError {
    use sea_orm::sqlx::Error as E;
    match e {
        E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::Tls(_) | E::Protocol(_) => {
            ApiError::unavailable("the database is unavailable", err)
        }
        E::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL: 08* connection exceptions, 57P* operator intervention
            // (shutdown), 53* insufficient resources; 40001/40P01 serialization
            // failure and deadlock. SQLite: 5 BUSY, 6 LOCKED.
            if code.starts_with("08") || code.starts_with("57P") || code.starts_with("53") {
                ApiError::unavailable("the database is unavailable", err)
            } else if code == "40001" || code == "40P01" || code == "5" || code == "6" {
                ApiError {
                    retry_after: Some(std::time::Duration::from_millis(100)),
                    detail: Some(err.to_string()),
                    ..ApiError::aborted("CONCURRENT_MODIFICATION", "concurrent modification, retry")
                }
            } else if code == "57014" {
                ApiError::new(
                    ErrorCode::DeadlineExceeded,
                    "DEADLINE_EXCEEDED",
                    "query cancelled",
                )
            } else {
                ApiError::internal(err)
            }
        }
        _ => ApiError::internal(err),
    }
}
