//! Storage: SeaORM entities and repositories for every service, on
//! PostgreSQL and SQLite through one code path.
//!
//! Each service owns its tables (`profile_*`, `scoring_*`, ...) and its own
//! migrator; nothing here reads another service's tables.

mod bulk;
pub mod campaign;
mod copy_out;
pub mod cursor;
mod error;
pub mod feedback;
mod id_order;
pub mod paging;
mod product_groups;
pub mod profile;
mod purchase_days;
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

/// See [`Storage::pool_usage`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolUsage {
    pub open: u32,
    pub idle: u32,
    pub max: u32,
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
            })
            .map_sqlx_postgres_pool_opts(|o| {
                // A pooled connection keeps the largest message it ever sent
                // or received in its buffers: a recompute's COPY chunks are
                // megabytes, and over time every connection of the pool had
                // carried one (the soak's slow RSS growth, found with
                // heaptrack: 12.6 MiB in 7 connections' write buffers after
                // two minutes). Released connections go back to the default
                // 8 KiB; the cost is a reallocation or two per release, next
                // to a database round trip.
                o.after_release(|conn, _| {
                    use sea_orm::sqlx::Connection;
                    conn.shrink_buffers();
                    Box::pin(std::future::ready(Ok(true)))
                })
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
        for schema in schemas {
            if migrate {
                self.migrate(*schema).await?;
            } else {
                let pending = self.pending_migrations(*schema).await?;
                if pending > 0 {
                    return Err(StoreError::SchemaBehind {
                        schema: *schema,
                        pending,
                    });
                }
            }
        }
        Ok(())
    }

    /// How many of one service's migrations are not applied (read-only).
    pub async fn pending_migrations(&self, schema: Schema) -> Result<usize, StoreError> {
        let db = &self.db;
        let pending = match schema {
            Schema::Profile => ProfileMigrator::get_pending_migrations_read_only(db).await,
            Schema::Scoring => ScoringMigrator::get_pending_migrations_read_only(db).await,
            Schema::Feedback => FeedbackMigrator::get_pending_migrations_read_only(db).await,
            Schema::Campaign => CampaignMigrator::get_pending_migrations_read_only(db).await,
        };
        pending
            .map(|p| p.len())
            .map_err(|source| StoreError::Migrate { schema, source })
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

    /// Connections the pool holds now, how many of them are idle, and its
    /// maximum (exported as metrics; a pool at its maximum with none idle
    /// means calls are queueing for connections).
    pub fn pool_usage(&self) -> PoolUsage {
        fn usage<DB: sea_orm::sqlx::Database>(pool: &sea_orm::sqlx::Pool<DB>) -> PoolUsage {
            PoolUsage {
                open: pool.size(),
                idle: pool.num_idle() as u32,
                max: pool.options().get_max_connections(),
            }
        }
        match self.backend() {
            DbBackend::Postgres => usage(self.db.get_postgres_connection_pool()),
            DbBackend::Sqlite => usage(self.db.get_sqlite_connection_pool()),
            _ => PoolUsage::default(),
        }
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
