//! The feedback service's tables: survey responses, complaints, idempotency
//! keys and the profile change-feed cursor.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use patron_domain::{
    ApiError, ErrorCode,
    feedback::{Complaint, ComplaintStatus, NpsCounts, Severity, SurveyKind, SurveyResponse},
    filter::{FieldSpec, FieldType, Filter},
};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Statement, Value,
    sea_query::{Expr, ExprTrait, OnConflict, Query},
};

use crate::{Storage, begin_write, bulk, db_error, paging::Cursor, query};

pub mod entity {
    pub mod complaint {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "feedback_complaints")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: String,
            pub customer_id: String,
            #[sea_orm(column_name = "type")]
            pub kind: String,
            pub product_id: String,
            pub region: String,
            pub channel: String,
            pub assignee: String,
            pub severity: String,
            pub status: String,
            pub description: String,
            pub resolution: String,
            pub filed_time: DateTimeUtc,
            pub first_response_time: Option<DateTimeUtc>,
            pub resolved_time: Option<DateTimeUtc>,
            pub update_time: DateTimeUtc,
            pub version: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }
}

use entity::complaint;

/// Outcome of a batch of responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Submitted {
    pub accepted: usize,
    pub duplicates: usize,
}

/// One group of an NPS or CSAT aggregate ("" when not grouped).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreGroup {
    pub key: String,
    pub nps: NpsCounts,
    /// CSAT: responses scoring 4 or 5, all responses, sum of scores.
    pub satisfied: i64,
    pub responses: i64,
    pub score_sum: i64,
}

/// What a complaint report needs of one complaint.
#[derive(Debug, Clone)]
pub struct ComplaintTimes {
    pub key: String,
    pub filed_time: DateTime<Utc>,
    pub first_response_time: Option<DateTime<Utc>>,
    pub resolved_time: Option<DateTime<Utc>>,
}

/// A customer's feedback at a glance.
#[derive(Debug, Clone, Default)]
pub struct CustomerFeedback {
    pub latest_nps: Option<(i32, DateTime<Utc>)>,
    pub csat_mean: Option<f64>,
    pub csat_responses: i64,
    pub open_complaints: i64,
    pub oldest_open_complaint: Option<DateTime<Utc>>,
    pub total_complaints: i64,
}

/// Report group-by dimensions map to these columns only (never to caller text).
pub fn response_group_column(group_by: &str) -> Option<&'static str> {
    match group_by {
        "product_id" => Some("product_id"),
        "region" => Some("region"),
        "channel" => Some("channel"),
        _ => None,
    }
}

pub fn complaint_group_column(group_by: &str) -> Option<&'static str> {
    match group_by {
        "type" => Some("type"),
        "product_id" => Some("product_id"),
        "region" => Some("region"),
        "assignee" => Some("assignee"),
        _ => None,
    }
}

/// The fields `ListComplaints.filter` accepts.
pub fn complaint_filter_fields() -> &'static [FieldSpec] {
    const STATUS: &[&str] = &["open", "in_progress", "resolved", "closed"];
    const SEVERITY: &[&str] = &["low", "medium", "high", "critical"];
    const FIELDS: &[FieldSpec] = &[
        FieldSpec {
            name: "status",
            ty: FieldType::Enum(STATUS),
        },
        FieldSpec {
            name: "severity",
            ty: FieldType::Enum(SEVERITY),
        },
        FieldSpec {
            name: "type",
            ty: FieldType::Text,
        },
        FieldSpec {
            name: "product_id",
            ty: FieldType::Text,
        },
        FieldSpec {
            name: "region",
            ty: FieldType::Text,
        },
        FieldSpec {
            name: "channel",
            ty: FieldType::Text,
        },
        FieldSpec {
            name: "assignee",
            ty: FieldType::Text,
        },
        FieldSpec {
            name: "customer_id",
            ty: FieldType::Text,
        },
        FieldSpec {
            name: "filed_time",
            ty: FieldType::Timestamp,
        },
    ];
    FIELDS
}

#[derive(Clone)]
pub struct FeedbackStore {
    db: DatabaseConnection,
}

/// Positional placeholders in the backend's syntax, numbered from `first`.
fn ph(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

impl FeedbackStore {
    pub fn new(storage: &Storage) -> Self {
        Self {
            db: storage.connection().clone(),
        }
    }

    /// Inserts the responses that are new (by id), atomically.
    pub async fn submit_responses(
        &self,
        batch: &[SurveyResponse],
        now: DateTime<Utc>,
    ) -> Result<Submitted, ApiError> {
        let mut seen = std::collections::HashSet::new();
        let rows: Vec<Vec<Value>> = batch
            .iter()
            .filter(|r| seen.insert(r.id.as_str()))
            .map(|r| {
                vec![
                    r.id.clone().into(),
                    r.customer_id.clone().into(),
                    r.kind.as_str().to_owned().into(),
                    r.score.into(),
                    r.comment.clone().into(),
                    r.product_id.clone().into(),
                    r.region.clone().into(),
                    r.channel.clone().into(),
                    r.occurred_at.into(),
                    now.into(),
                ]
            })
            .collect();
        let txn = begin_write(&self.db).await?;
        let columns = [
            "id",
            "customer_id",
            "kind",
            "score",
            "comment",
            "product_id",
            "region",
            "channel",
            "occurred_at",
            "create_time",
        ];
        let inserted: std::collections::HashSet<String> = bulk::insert(
            &txn,
            "feedback_responses",
            &columns,
            rows,
            bulk::Conflict::Skip(&["id"]),
            Some("id"),
        )
        .await?
        .into_iter()
        .map(|r| r.try_get::<String>("", "id").map_err(db_error))
        .collect::<Result<_, _>>()?;
        self.roll_up(&txn, batch, &inserted).await?;
        let touched: Vec<&str> = batch
            .iter()
            .filter(|r| inserted.contains(&r.id))
            .map(|r| r.customer_id.as_str())
            .collect();
        touch(&txn, &touched).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(Submitted {
            accepted: inserted.len(),
            duplicates: batch.len() - inserted.len(),
        })
    }

    /// Adds the newly inserted responses to the daily rollup (same transaction).
    async fn roll_up<C: ConnectionTrait>(
        &self,
        txn: &C,
        batch: &[SurveyResponse],
        inserted: &std::collections::HashSet<String>,
    ) -> Result<(), ApiError> {
        type Key<'a> = (chrono::NaiveDate, &'static str, &'a str, &'a str, &'a str);
        let mut daily: HashMap<Key<'_>, [i64; 6]> = HashMap::new();
        let mut counted = std::collections::HashSet::new();
        for r in batch
            .iter()
            .filter(|r| inserted.contains(&r.id) && counted.insert(r.id.as_str()))
        {
            let key = (
                r.occurred_at.date_naive(),
                r.kind.as_str(),
                r.product_id.as_str(),
                r.region.as_str(),
                r.channel.as_str(),
            );
            let c = daily.entry(key).or_default();
            c[0] += i64::from(r.score >= 9);
            c[1] += i64::from((7..=8).contains(&r.score));
            c[2] += i64::from(r.score <= 6);
            c[3] += i64::from(r.score >= 4);
            c[4] += 1;
            c[5] += i64::from(r.score);
        }
        let counters = [
            "promoters",
            "passives",
            "detractors",
            "satisfied",
            "responses",
            "score_sum",
        ];
        const KEY: [&str; 5] = ["day", "kind", "product_id", "region", "channel"];
        let columns: Vec<&'static str> = KEY.into_iter().chain(counters).collect();
        let rows = daily
            .into_iter()
            .map(|((day, kind, product, region, channel), c)| {
                let mut values: Vec<sea_orm::Value> = vec![
                    day.into(),
                    kind.into(),
                    product.into(),
                    region.into(),
                    channel.into(),
                ];
                values.extend(c.iter().map(|v| (*v).into()));
                values
            })
            .collect();
        bulk::insert(
            txn,
            "feedback_daily",
            &columns,
            rows,
            bulk::Conflict::Update {
                key: &KEY,
                columns: &counters,
                how: bulk::Update::Add,
            },
            None,
        )
        .await?;
        Ok(())
    }

    /// Files a complaint; a retried `request_key` returns the first one.
    pub async fn file_complaint(
        &self,
        c: &Complaint,
        request_key: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Complaint, ApiError> {
        if let Some(key) = request_key
            && let Some(existing) = self.complaint_for_request(key).await?
        {
            return Ok(existing);
        }
        let txn = begin_write(&self.db).await?;
        complaint::Entity::insert(to_active(c))
            .exec_without_returning(&txn)
            .await
            .map_err(db_error)?;
        touch(&txn, &[c.customer_id.as_str()]).await?;
        if let Some(key) = request_key {
            let inserted = txn
                .execute(
                    Query::insert()
                        .into_table("feedback_requests")
                        .columns(["request_key", "resource_id", "create_time"])
                        .values_panic([key.into(), c.id.clone().into(), now.into()])
                        .on_conflict(OnConflict::column("request_key").do_nothing().to_owned()),
                )
                .await
                .map_err(db_error)?;
            if inserted.rows_affected() == 0 {
                // A concurrent retry won: drop ours, return theirs.
                drop(txn);
                return self
                    .complaint_for_request(key)
                    .await?
                    .ok_or_else(|| ApiError::internal("request key without complaint"));
            }
        }
        txn.commit().await.map_err(db_error)?;
        Ok(c.clone())
    }

    async fn complaint_for_request(&self, key: &str) -> Result<Option<Complaint>, ApiError> {
        let row = self
            .db
            .query_one(
                Query::select()
                    .column("resource_id")
                    .from("feedback_requests")
                    .and_where(Expr::col("request_key").eq(key)),
            )
            .await
            .map_err(db_error)?;
        match row {
            Some(r) => {
                let id: String = r.try_get("", "resource_id").map_err(db_error)?;
                self.get_complaint(&id).await.map(Some)
            }
            None => Ok(None),
        }
    }

    pub async fn get_complaint(&self, id: &str) -> Result<Complaint, ApiError> {
        complaint::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await
            .map_err(db_error)?
            .map(from_model)
            .transpose()?
            .ok_or_else(|| ApiError::not_found("complaint", id))
    }

    /// Writes `updated` if the stored version is still `expected_version`
    /// (ABORTED otherwise: exactly one of concurrent updates wins).
    pub async fn update_complaint(
        &self,
        updated: &Complaint,
        expected_version: i64,
    ) -> Result<(), ApiError> {
        let txn = begin_write(&self.db).await?;
        let res = complaint::Entity::update_many()
            .set(to_active(updated))
            .filter(complaint::Column::Id.eq(updated.id.clone()))
            .filter(complaint::Column::Version.eq(expected_version))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        if res.rows_affected == 1 {
            touch(&txn, &[updated.customer_id.as_str()]).await?;
            txn.commit().await.map_err(db_error)
        } else {
            drop(txn);
            self.get_complaint(&updated.id).await?;
            Err(ApiError::aborted(
                "ETAG_MISMATCH",
                format!("the complaint changed since etag {expected_version}; read it again"),
            ))
        }
    }

    /// One page of complaints, newest filed first.
    pub async fn list_complaints(
        &self,
        filter: Option<&Filter>,
        page_size: u64,
        after: Option<&Cursor>,
    ) -> Result<(Vec<Complaint>, Option<Cursor>, u64), ApiError> {
        let column = |field: &str| {
            complaint_filter_fields()
                .iter()
                .find(|f| f.name == field)
                .map(|f| query::Column::Plain(f.name))
        };
        let condition = match filter {
            Some(f) => query::condition(f, &column)?,
            None => Condition::all(),
        };
        let total = complaint::Entity::find()
            .filter(condition.clone())
            .count(&self.db)
            .await
            .map_err(db_error)?;
        let mut select = complaint::Entity::find().filter(condition);
        if let Some(c) = after {
            let at = DateTime::parse_from_rfc3339(&c.key)
                .map_err(|_| ApiError::invalid_field("page_token", "is not a valid page token"))?
                .with_timezone(&Utc);
            select = select.filter(
                Condition::any()
                    .add(complaint::Column::FiledTime.lt(at))
                    .add(
                        Condition::all()
                            .add(complaint::Column::FiledTime.eq(at))
                            .add(complaint::Column::Id.lt(c.id.clone())),
                    ),
            );
        }
        let mut rows: Vec<Complaint> = select
            .order_by_desc(complaint::Column::FiledTime)
            .order_by_desc(complaint::Column::Id)
            .limit(page_size + 1)
            .all(&self.db)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(from_model)
            .collect::<Result<_, _>>()?;
        let next = if rows.len() as u64 > page_size {
            rows.truncate(page_size as usize);
            rows.last().map(|c| Cursor {
                key: c
                    .filed_time
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                id: c.id.clone(),
            })
        } else {
            None
        };
        Ok((rows, next, total))
    }

    /// NPS or CSAT counts over [start, end), overall ("") or by
    /// `group_column`: whole UTC days from the daily rollup, the partial days
    /// at either edge from the responses themselves.
    pub async fn score_groups(
        &self,
        kind: SurveyKind,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        group_column: Option<&'static str>,
    ) -> Result<Vec<ScoreGroup>, ApiError> {
        let day = |t: DateTime<Utc>| t.date_naive().and_hms_opt(0, 0, 0).map(|d| d.and_utc());
        let first_full = day(start)
            .map(|d| {
                if d < start {
                    d + chrono::Duration::days(1)
                } else {
                    d
                }
            })
            .unwrap_or(start);
        let last_full = day(end).unwrap_or(end);
        let mut merged: std::collections::BTreeMap<String, ScoreGroup> =
            std::collections::BTreeMap::new();
        let mut add = |groups: Vec<ScoreGroup>| {
            for g in groups {
                let m = merged.entry(g.key.clone()).or_insert_with(|| ScoreGroup {
                    key: g.key.clone(),
                    nps: NpsCounts::default(),
                    satisfied: 0,
                    responses: 0,
                    score_sum: 0,
                });
                m.nps.promoters += g.nps.promoters;
                m.nps.passives += g.nps.passives;
                m.nps.detractors += g.nps.detractors;
                m.satisfied += g.satisfied;
                m.responses += g.responses;
                m.score_sum += g.score_sum;
            }
        };
        if first_full < last_full {
            add(self
                .rollup_groups(
                    kind,
                    first_full.date_naive(),
                    last_full.date_naive(),
                    group_column,
                )
                .await?);
            if start < first_full {
                add(self
                    .raw_groups(kind, start, first_full, group_column)
                    .await?);
            }
            if last_full < end {
                add(self.raw_groups(kind, last_full, end, group_column).await?);
            }
        } else {
            add(self.raw_groups(kind, start, end, group_column).await?);
        }
        Ok(merged.into_values().filter(|g| g.responses > 0).collect())
    }

    async fn rollup_groups(
        &self,
        kind: SurveyKind,
        from_day: chrono::NaiveDate,
        to_day: chrono::NaiveDate,
        group_column: Option<&'static str>,
    ) -> Result<Vec<ScoreGroup>, ApiError> {
        let backend = self.db.get_database_backend();
        let (key, grouping) = match group_column {
            Some(c) => (c, format!(" GROUP BY {c}")),
            None => ("''", String::new()),
        };
        let sql = format!(
            "SELECT {key} AS k, CAST(SUM(promoters) AS BIGINT) AS promoters, CAST(SUM(passives) AS BIGINT) AS passives, \
             CAST(SUM(detractors) AS BIGINT) AS detractors, CAST(SUM(satisfied) AS BIGINT) AS satisfied, \
             CAST(SUM(responses) AS BIGINT) AS responses, CAST(SUM(score_sum) AS BIGINT) AS score_sum \
             FROM feedback_daily WHERE kind = {} AND day >= {} AND day < {}{grouping}",
            ph(backend, 1),
            ph(backend, 2),
            ph(backend, 3),
        );
        self.groups_query(Statement::from_sql_and_values(
            backend,
            sql,
            [kind.as_str().into(), from_day.into(), to_day.into()],
        ))
        .await
    }

    async fn raw_groups(
        &self,
        kind: SurveyKind,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        group_column: Option<&'static str>,
    ) -> Result<Vec<ScoreGroup>, ApiError> {
        let backend = self.db.get_database_backend();
        let (key, grouping) = match group_column {
            Some(c) => (c, format!(" GROUP BY {c} ORDER BY {c}")),
            None => ("''", String::new()),
        };
        let sql = format!(
            "SELECT {key} AS k, \
             CAST(COUNT(*) FILTER (WHERE score >= 9) AS BIGINT) AS promoters, \
             CAST(COUNT(*) FILTER (WHERE score BETWEEN 7 AND 8) AS BIGINT) AS passives, \
             CAST(COUNT(*) FILTER (WHERE score <= 6) AS BIGINT) AS detractors, \
             CAST(COUNT(*) FILTER (WHERE score >= 4) AS BIGINT) AS satisfied, \
             CAST(COUNT(*) AS BIGINT) AS responses, CAST(SUM(score) AS BIGINT) AS score_sum \
             FROM feedback_responses WHERE kind = {} AND occurred_at >= {} AND occurred_at < {}{grouping}",
            ph(backend, 1),
            ph(backend, 2),
            ph(backend, 3),
        );
        self.groups_query(Statement::from_sql_and_values(
            backend,
            sql,
            [kind.as_str().into(), start.into(), end.into()],
        ))
        .await
    }

    async fn groups_query(&self, statement: Statement) -> Result<Vec<ScoreGroup>, ApiError> {
        let rows = self.db.query_all_raw(statement).await.map_err(db_error)?;
        rows.into_iter()
            .map(|r| {
                let get = |c: &str| {
                    r.try_get::<Option<i64>>("", c)
                        .map(Option::unwrap_or_default)
                        .map_err(db_error)
                };
                Ok(ScoreGroup {
                    key: r
                        .try_get::<Option<String>>("", "k")
                        .map_err(db_error)?
                        .unwrap_or_default(),
                    nps: NpsCounts {
                        promoters: get("promoters")?,
                        passives: get("passives")?,
                        detractors: get("detractors")?,
                    },
                    satisfied: get("satisfied")?,
                    responses: get("responses")?,
                    score_sum: get("score_sum")?,
                })
            })
            .collect()
    }

    /// (time, score) of every NPS response in [start, end), for trends.
    pub async fn nps_points(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, i32)>, ApiError> {
        let rows = self
            .db
            .query_all(
                Query::select()
                    .columns(["occurred_at", "score"])
                    .from("feedback_responses")
                    .and_where(Expr::col("kind").eq("nps"))
                    .and_where(Expr::col("occurred_at").gte(start))
                    .and_where(Expr::col("occurred_at").lt(end)),
            )
            .await
            .map_err(db_error)?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get("", "occurred_at").map_err(db_error)?,
                    r.try_get("", "score").map_err(db_error)?,
                ))
            })
            .collect()
    }

    /// Complaints filed in [start, end), keyed by `group_column` ("" when none).
    pub async fn complaint_times(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        group_column: Option<&'static str>,
    ) -> Result<Vec<ComplaintTimes>, ApiError> {
        let rows = complaint::Entity::find()
            .filter(complaint::Column::FiledTime.gte(start))
            .filter(complaint::Column::FiledTime.lt(end))
            .all(&self.db)
            .await
            .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|m| ComplaintTimes {
                key: match group_column {
                    Some("type") => m.kind,
                    Some("product_id") => m.product_id,
                    Some("region") => m.region,
                    Some("assignee") => m.assignee,
                    _ => String::new(),
                },
                filed_time: m.filed_time,
                first_response_time: m.first_response_time,
                resolved_time: m.resolved_time,
            })
            .collect())
    }

    /// Filing times of complaints open now (OPEN or IN_PROGRESS).
    pub async fn open_filed_times(&self) -> Result<Vec<DateTime<Utc>>, ApiError> {
        complaint::Entity::find()
            .select_only()
            .column(complaint::Column::FiledTime)
            .filter(complaint::Column::Status.is_in(["open", "in_progress"]))
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(db_error)
    }

    /// Complaints per product filed in [start, end).
    pub async fn complaints_per_product(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<HashMap<String, i64>, ApiError> {
        let rows: Vec<(String, i64)> = complaint::Entity::find()
            .select_only()
            .column(complaint::Column::ProductId)
            .column_as(complaint::Column::Id.count(), "n")
            .filter(complaint::Column::FiledTime.gte(start))
            .filter(complaint::Column::FiledTime.lt(end))
            .group_by(complaint::Column::ProductId)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().collect())
    }

    pub async fn customer_feedback(&self, customer_id: &str) -> Result<CustomerFeedback, ApiError> {
        let mut out = CustomerFeedback::default();
        let latest = self
            .db
            .query_one(
                Query::select()
                    .columns(["score", "occurred_at"])
                    .from("feedback_responses")
                    .and_where(Expr::col("customer_id").eq(customer_id))
                    .and_where(Expr::col("kind").eq("nps"))
                    .order_by("occurred_at", sea_orm::Order::Desc)
                    .order_by("id", sea_orm::Order::Desc)
                    .limit(1),
            )
            .await
            .map_err(db_error)?;
        if let Some(r) = latest {
            out.latest_nps = Some((
                r.try_get("", "score").map_err(db_error)?,
                r.try_get("", "occurred_at").map_err(db_error)?,
            ));
        }
        let csat: Vec<i32> = self
            .db
            .query_all(
                Query::select()
                    .column("score")
                    .from("feedback_responses")
                    .and_where(Expr::col("customer_id").eq(customer_id))
                    .and_where(Expr::col("kind").eq("csat")),
            )
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|r| r.try_get("", "score").map_err(db_error))
            .collect::<Result<_, _>>()?;
        out.csat_responses = csat.len() as i64;
        if !csat.is_empty() {
            out.csat_mean =
                Some(csat.iter().map(|s| f64::from(*s)).sum::<f64>() / csat.len() as f64);
        }
        let complaints = complaint::Entity::find()
            .filter(complaint::Column::CustomerId.eq(customer_id))
            .all(&self.db)
            .await
            .map_err(db_error)?;
        out.total_complaints = complaints.len() as i64;
        for c in complaints
            .iter()
            .filter(|c| c.status == "open" || c.status == "in_progress")
        {
            out.open_complaints += 1;
            out.oldest_open_complaint = Some(
                out.oldest_open_complaint
                    .map_or(c.filed_time, |t| Ord::min(t, c.filed_time)),
            );
        }
        Ok(out)
    }

    /// Up to `limit` customers whose summary changed after `after`
    /// (revision, customer id), in that order, with their revisions.
    /// `(r, None)` starts after all of revision `r`; `(r, Some(id))` resumes
    /// within revision `r` after customer `id` (the next page).
    pub async fn summaries_changed_after(
        &self,
        after: (i64, Option<&str>),
        limit: u64,
    ) -> Result<Vec<(i64, String)>, ApiError> {
        let rows = self
            .db
            .query_all(&crate::query::page_after(
                "feedback_summary_revisions",
                ["revision", "customer_id"],
                after,
                limit,
            ))
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("", "revision").map_err(db_error)?,
                    r.try_get("", "customer_id").map_err(db_error)?,
                ))
            })
            .collect()
    }

    /// The profile change-feed cursor of `consumer` (0 before the first batch).
    pub async fn cursor(&self, consumer: &str) -> Result<i64, ApiError> {
        crate::cursor::load(&self.db, "feedback_feed_cursor", consumer).await
    }

    /// Removes the personal free text of these customers and advances the
    /// cursor, in one transaction: a restart resumes without loss.
    pub async fn apply_erasures(
        &self,
        consumer: &str,
        customer_ids: &[String],
        advance: crate::cursor::Advance,
    ) -> Result<(), ApiError> {
        let txn = begin_write(&self.db).await?;
        if !customer_ids.is_empty() {
            txn.execute(
                Query::update()
                    .table("feedback_responses")
                    .value("comment", "")
                    .and_where(Expr::col("customer_id").is_in(crate::query::padded(customer_ids))),
            )
            .await
            .map_err(db_error)?;
            txn.execute(
                Query::update()
                    .table("feedback_complaints")
                    .value("description", "")
                    .value("resolution", "")
                    .and_where(Expr::col("customer_id").is_in(crate::query::padded(customer_ids))),
            )
            .await
            .map_err(db_error)?;
        }
        crate::cursor::save(&txn, "feedback_feed_cursor", consumer, advance).await?;
        txn.commit().await.map_err(db_error)
    }
}

fn to_active(c: &Complaint) -> complaint::ActiveModel {
    complaint::ActiveModel {
        id: Set(c.id.clone()),
        customer_id: Set(c.customer_id.clone()),
        kind: Set(c.kind.clone()),
        product_id: Set(c.product_id.clone()),
        region: Set(c.region.clone()),
        channel: Set(c.channel.clone()),
        assignee: Set(c.assignee.clone()),
        severity: Set(c.severity.as_str().to_owned()),
        status: Set(c.status.as_str().to_owned()),
        description: Set(c.description.clone()),
        resolution: Set(c.resolution.clone()),
        filed_time: Set(c.filed_time),
        first_response_time: Set(c.first_response_time),
        resolved_time: Set(c.resolved_time),
        update_time: Set(c.update_time),
        version: Set(c.version),
    }
}

fn from_model(m: complaint::Model) -> Result<Complaint, ApiError> {
    let corrupt = |what: &str| {
        ApiError::new(
            ErrorCode::Internal,
            "INTERNAL",
            format!("stored complaint has an invalid {what}"),
        )
    };
    Ok(Complaint {
        id: m.id,
        customer_id: m.customer_id,
        kind: m.kind,
        product_id: m.product_id,
        region: m.region,
        channel: m.channel,
        assignee: m.assignee,
        severity: Severity::parse(&m.severity).ok_or_else(|| corrupt("severity"))?,
        status: ComplaintStatus::parse(&m.status).ok_or_else(|| corrupt("status"))?,
        description: m.description,
        resolution: m.resolution,
        filed_time: m.filed_time,
        first_response_time: m.first_response_time,
        resolved_time: m.resolved_time,
        update_time: m.update_time,
        version: m.version,
    })
}

/// Stamps these customers' summaries with the next revision, inside the
/// caller's transaction (the counter row stays locked until commit, so
/// revisions become visible in order and without gaps).
async fn touch<C: ConnectionTrait>(txn: &C, customer_ids: &[&str]) -> Result<(), ApiError> {
    if customer_ids.is_empty() {
        return Ok(());
    }
    let revision = crate::cursor::next_revision(txn, "feedback_summary_head").await?;
    let mut ids: Vec<&str> = customer_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let rows = ids
        .into_iter()
        .map(|id| vec![id.into(), revision.into()])
        .collect();
    bulk::insert(
        txn,
        "feedback_summary_revisions",
        &["customer_id", "revision"],
        rows,
        bulk::Conflict::Update {
            key: &["customer_id"],
            columns: &["revision"],
            how: bulk::Update::Replace,
        },
        None,
    )
    .await?;
    Ok(())
}
