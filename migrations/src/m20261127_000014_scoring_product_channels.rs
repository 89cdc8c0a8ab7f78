//! The product rollup gains the sales channel: one row per day, region,
//! category, channel, currency and customer, so the product distribution can
//! also be split by channel (`by_channel`).
//!
//! Rows written before it carry the channel `""` (unknown): the rollup is
//! not rebuilt from the change feed, which would leave the report partial
//! for as long as the replay takes. The primary key gains the column, so a
//! pod of the previous version fails its rollup writes (their conflict
//! target no longer matches a key) and retries them until it is replaced;
//! nothing is lost, its cursor does not move.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

use crate::{m20261126_000012_bytewise_ids::collate, run_batch};

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000014_scoring_product_channels"
    }
}

const TABLE: &str = "scoring_product_days";
const FIGURES: &str = "transactions, quantity, amount_nanos";

/// The rollup's table under `name`, with or without the channel.
fn table(name: &str, with_channel: bool) -> TableCreateStatement {
    let mut t = Table::create();
    t.table(Alias::new(name))
        .col(ColumnDef::new("day").integer().not_null())
        .col(ColumnDef::new("region").string().not_null())
        .col(ColumnDef::new("category").string().not_null());
    if with_channel {
        t.col(ColumnDef::new("channel").string().not_null().default(""));
    }
    t.col(ColumnDef::new("currency").string().not_null())
        .col(ColumnDef::new("customer_id").string().not_null())
        .col(ColumnDef::new("transactions").big_integer().not_null())
        .col(ColumnDef::new("quantity").big_integer().not_null())
        .col(ColumnDef::new("amount_nanos").big_integer().not_null());
    let mut key = Index::create();
    key.col(Alias::new("day"))
        .col(Alias::new("region"))
        .col(Alias::new("category"));
    if with_channel {
        key.col(Alias::new("channel"));
    }
    key.col(Alias::new("currency"))
        .col(Alias::new("customer_id"));
    t.primary_key(&mut key);
    t.to_owned()
}

/// Replaces the table by one of the other shape, filled by `select`: one
/// batch of statements on one connection (on SQLite a pool's connections
/// can disagree about the schema while it changes), all or nothing.
async fn rebuild(
    m: &SchemaManager<'_>,
    with_channel: bool,
    columns: &str,
    select: &str,
) -> Result<(), DbErr> {
    let backend = m.get_database_backend();
    let next = format!("{TABLE}_next");
    let create = backend.build(&table(&next, with_channel)).to_string();
    let mut batch = vec![
        create,
        format!("INSERT INTO {next} ({columns}) {select}"),
        format!("DROP TABLE {TABLE}"),
        format!("ALTER TABLE {next} RENAME TO {TABLE}"),
    ];
    if backend == DbBackend::Postgres {
        // (Migrations run in a transaction there.) The primary key's name
        // follows the table's.
        batch.push(format!(
            "ALTER TABLE {TABLE} RENAME CONSTRAINT {next}_pkey TO {TABLE}_pkey"
        ));
    }
    run_batch(m, batch).await?;
    // Ids compare bytewise (PostgreSQL only).
    collate(m, &[(TABLE, &["customer_id"])], "C").await
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() == DbBackend::Postgres {
            // In place: adding a column with a constant default rewrites no
            // row; the new key is built once.
            return m
                .get_connection()
                .execute_unprepared(&format!(
                    "ALTER TABLE {TABLE} ADD COLUMN channel varchar NOT NULL DEFAULT '', \
                     DROP CONSTRAINT {TABLE}_pkey, \
                     ADD PRIMARY KEY (day, region, category, channel, currency, customer_id)"
                ))
                .await
                .map(|_| ());
        }
        // SQLite cannot change a primary key: copy into a new table.
        let columns = format!("day, region, category, currency, customer_id, {FIGURES}");
        rebuild(m, true, &columns, &format!("SELECT {columns} FROM {TABLE}")).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // The channels of a group merge back into one row.
        let key = "day, region, category, currency, customer_id";
        rebuild(
            m,
            false,
            &format!("{key}, {FIGURES}"),
            &format!(
                "SELECT {key}, SUM(transactions), SUM(quantity), SUM(amount_nanos) \
                 FROM {TABLE} GROUP BY {key}"
            ),
        )
        .await
    }
}
