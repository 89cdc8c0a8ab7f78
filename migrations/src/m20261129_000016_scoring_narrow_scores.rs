//! Narrower score rows: `scoring_scores` loses `model_version` (nothing read
//! it; the encoded score carries the model version) and stores its five
//! labels as small integer codes instead of their names ([`SCORE_LABELS`]).
//!
//! A full recompute writes every row of the table again, and the width of a
//! row is what PostgreSQL's `COPY`, its two index builds and campaign's copy
//! of the scores pay for: at 1,000,000 scores the table's heap went from 521
//! to 395 MB (BENCHMARKS.md, session 27).
//!
//! The table is copied into the new shape (one statement; on PostgreSQL
//! under an exclusive lock on the old table, so a score write that a pod of
//! the previous version commits meanwhile is either in the copy or fails).
//! Scoring pods of the previous version then fail their score writes (the
//! columns they write are gone) until they are replaced: online updates of
//! that window wait for the next recompute, nothing else is lost. Going back
//! (`down`) restores the names and an empty `model_version`.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261129_000016_scoring_narrow_scores"
    }
}

/// Each label column of `scoring_scores` and its labels: a label's code is
/// its position in the list. The application reads and writes the codes
/// through this list (`patron_store::scoring`), so it is append-only: a code,
/// once written, keeps its meaning.
///
/// The RFM segments follow `patron_domain`'s `Segment`, with `""` (no
/// segment: a prospect) first; the other four are the proto enums, whose
/// numbers are their codes.
pub const SCORE_LABELS: [(&str, &[&str]); 5] = [
    (
        "segment",
        &[
            "",
            "champions",
            "loyal_customers",
            "potential_loyalists",
            "new_customers",
            "promising",
            "need_attention",
            "about_to_sleep",
            "at_risk",
            "cant_lose_them",
            "hibernating",
        ],
    ),
    (
        "value_tier",
        &[
            "VALUE_TIER_UNSPECIFIED",
            "VALUE_TIER_LOW",
            "VALUE_TIER_MEDIUM",
            "VALUE_TIER_HIGH",
        ],
    ),
    (
        "value_quadrant",
        &[
            "VALUE_QUADRANT_UNSPECIFIED",
            "VALUE_QUADRANT_STAR",
            "VALUE_QUADRANT_GROW",
            "VALUE_QUADRANT_MAINTAIN",
            "VALUE_QUADRANT_MINIMAL",
        ],
    ),
    (
        "churn_risk",
        &[
            "CHURN_RISK_UNSPECIFIED",
            "CHURN_RISK_LOW",
            "CHURN_RISK_MEDIUM",
            "CHURN_RISK_HIGH",
        ],
    ),
    (
        "lifecycle_stage",
        &[
            "LIFECYCLE_STAGE_UNSPECIFIED",
            "LIFECYCLE_STAGE_PROSPECT",
            "LIFECYCLE_STAGE_NEW",
            "LIFECYCLE_STAGE_ACTIVE",
            "LIFECYCLE_STAGE_LOYAL",
            "LIFECYCLE_STAGE_AT_RISK",
            "LIFECYCLE_STAGE_CHURNED",
        ],
    ),
];

const TABLE: &str = "scoring_scores";

/// `scoring_scores` under `name`, narrow (codes, no model version) or as
/// before.
fn table(name: &str, narrow: bool, backend: DbBackend) -> TableCreateStatement {
    let mut id = ColumnDef::new("customer_id");
    id.string().not_null().primary_key();
    if backend == DbBackend::Postgres {
        // Ids compare bytewise (m20261126_000012_bytewise_ids).
        id.extra("COLLATE \"C\"");
    }
    let mut t = Table::create();
    t.table(Alias::new(name)).col(id);
    if !narrow {
        t.col(ColumnDef::new("model_version").string().not_null());
    }
    t.col(
        ColumnDef::new("computed_at")
            .timestamp_with_time_zone()
            .not_null(),
    );
    for (column, _) in SCORE_LABELS {
        let mut label = ColumnDef::new(column);
        if narrow {
            label.small_integer();
        } else {
            label.string();
        }
        t.col(label.not_null());
    }
    t.col(ColumnDef::new("score").blob().not_null())
        .col(
            ColumnDef::new("data_seq")
                .big_integer()
                .not_null()
                .default(0),
        )
        .col(
            ColumnDef::new("revision")
                .big_integer()
                .not_null()
                .default(0),
        );
    t.to_owned()
}

/// Each label column as the other shape has it: names turned into codes
/// (an unknown name, which no version wrote, becomes 0) or back.
fn converted_labels(narrow: bool) -> Vec<String> {
    SCORE_LABELS
        .iter()
        .map(|(column, labels)| {
            let cases: String = labels
                .iter()
                .enumerate()
                .map(|(code, name)| {
                    if narrow {
                        format!(" WHEN '{name}' THEN {code}")
                    } else {
                        format!(" WHEN {code} THEN '{name}'")
                    }
                })
                .collect();
            let otherwise = if narrow { "0" } else { "''" };
            format!("CASE {column}{cases} ELSE {otherwise} END")
        })
        .collect()
}

/// Replaces the table by one of the other shape holding the same scores, in
/// one batch (all or nothing, see `run_batch`).
async fn rebuild(m: &SchemaManager<'_>, narrow: bool) -> Result<(), DbErr> {
    let backend = m.get_database_backend();
    let next = format!("{TABLE}_narrowing");
    let labels: Vec<&str> = SCORE_LABELS.iter().map(|(c, _)| *c).collect();
    let mut columns = vec!["customer_id", "computed_at"];
    columns.extend(&labels);
    columns.extend(["score", "data_seq", "revision"]);
    let mut values: Vec<String> = vec!["customer_id".into(), "computed_at".into()];
    values.extend(converted_labels(narrow));
    values.extend(["score", "data_seq", "revision"].map(String::from));
    if !narrow {
        columns.insert(1, "model_version");
        values.insert(1, "''".into());
    }
    let mut batch = vec![
        backend.build(&table(&next, narrow, backend)).to_string(),
        format!(
            "INSERT INTO {next} ({}) SELECT {} FROM {TABLE}",
            columns.join(", "),
            values.join(", ")
        ),
        format!("DROP TABLE {TABLE}"),
        format!("ALTER TABLE {next} RENAME TO {TABLE}"),
        format!("CREATE INDEX {TABLE}_by_revision ON {TABLE} (revision, customer_id)"),
    ];
    if backend == DbBackend::Postgres {
        // (Migrations run in a transaction there.) Score writes of other
        // pods wait, then find the new table; the primary key's name
        // follows the table's.
        batch.insert(0, format!("LOCK TABLE {TABLE} IN EXCLUSIVE MODE"));
        batch.push(format!(
            "ALTER TABLE {TABLE} RENAME CONSTRAINT {next}_pkey TO {TABLE}_pkey"
        ));
    }
    crate::run_batch(m, batch).await
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        rebuild(m, true).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        rebuild(m, false).await
    }
}
