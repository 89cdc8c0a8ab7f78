//! Storage: SeaORM entities and repositories for every service, on
//! PostgreSQL and SQLite through one code path.
//!
//! Each service owns its tables (`profile_*`, `scoring_*`, ...) and its own
//! migrator; nothing here reads another service's tables.

mod bulk;
pub mod campaign;
mod cursor;
mod error;
pub mod feedback;
pub mod paging;
pub mod profile;
pub mod query;
pub mod scoring;
mod settings;

use std::time::Duration;

use patron_migrations::{
    CampaignMigrator, FeedbackMigrator, MigratorTrait, ProfileMigrator, ScoringMigrator,
};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};
use secrecy::ExposeSecret;

pub use error::{StoreError, db_error};
pub use settings::{DatabaseSettings, redact_url};

/// Which service's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Schema {
    Profile,
    Scoring,
    Feedback,
    Campaign,
}

/// A pool of connections to the configured database.
#[derive(Clone, Debug)]
pub struct Storage {
    db: DatabaseConnection,
    url_for_logs: String,
}

impl Storage {
    /// Builds the pool without connecting; the first use (or [`Storage::ready`])
    /// connects. This lets a server bind and answer health checks
    /// (NOT_SERVING) while the database is still coming up.
    pub async fn connect_lazy(settings: &DatabaseSettings) -> Result<Self, StoreError> {
        let url = settings.normalized_url()?;
        let mut opts = ConnectOptions::new(url.clone());
        opts.max_connections(settings.max_connections)
            .min_connections(settings.min_connections)
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
            .connect_lazy(true)
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|o| {
                // WAL lets readers run beside the single writer; the busy
                // timeout turns writer contention into waiting, not errors.
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
        let db = Database::connect(opts)
            .await
            .map_err(|e| StoreError::Connect {
                url: redact_url(&url),
                source: e,
            })?;
        Ok(Self {
            db,
            url_for_logs: redact_url(&url),
        })
    }

    /// Connects (if not yet) and applies the given services' migrations.
    pub async fn ready(&self, schemas: &[Schema], migrate: bool) -> Result<(), StoreError> {
        let connect_err = |e| StoreError::Connect {
            url: self.url_for_logs.clone(),
            source: e,
        };
        self.db
            .execute_unprepared("SELECT 1")
            .await
            .map_err(connect_err)?;
        if migrate {
            for schema in schemas {
                self.migrate(*schema).await?;
            }
        }
        Ok(())
    }

    /// Applies one service's pending migrations.
    pub async fn migrate(&self, schema: Schema) -> Result<(), StoreError> {
        let db = &self.db;
        let result = match schema {
            Schema::Profile => ProfileMigrator::up(db, None).await,
            Schema::Scoring => ScoringMigrator::up(db, None).await,
            Schema::Feedback => FeedbackMigrator::up(db, None).await,
            Schema::Campaign => CampaignMigrator::up(db, None).await,
        };
        result.map_err(|source| StoreError::Migrate { schema, source })
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// The URL with any password replaced, for logs and error messages.
    pub fn url_for_logs(&self) -> &str {
        &self.url_for_logs
    }

    pub async fn close(self) {
        let _ = self.db.close().await;
    }
}

/// Exposes the configured URL (for tools that need it verbatim).
pub fn expose_url(settings: &DatabaseSettings) -> &str {
    settings.url.expose_secret()
}

/// Starts a transaction that will write. On SQLite it takes the write lock
/// up front (`BEGIN IMMEDIATE`): a deferred transaction that has read and
/// then tries to write fails with SQLITE_BUSY instead of waiting its turn.
pub(crate) async fn begin_write(
    db: &DatabaseConnection,
) -> Result<sea_orm::DatabaseTransaction, patron_domain::ApiError> {
    use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
    .map_err(db_error)
}
