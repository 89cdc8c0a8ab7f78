//! The campaign service's tables: its view of customers (what segment rules
//! read), segments with live membership and history, campaigns with frozen
//! audiences, and responses.
//!
//! The view is written by two followers, the profile change feed and
//! scoring's score stream. Each write takes the next view revision from a
//! counter row held until commit, so "rows changed after revision r" never
//! misses a committed change: that is what the segment watcher builds on.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use patron_domain::{
    ApiError,
    campaign::{Arm, ArmFigures, CampaignState},
    segment::{
        CmpOp, Expr as Rule, FeedbackFields, Field, Record, ScoreFields, Value as RuleValue,
    },
};
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend,
    IsolationLevel, QueryResult, TransactionOptions, TransactionTrait, Value,
    sea_query::{
        Alias, Asterisk, Cond, Expr, ExprTrait, Func, JoinType, LikeExpr, OnConflict, Order, Query,
        SelectStatement, SimpleExpr,
    },
};

use crate::{Storage, begin_write, bulk, cursor, db_error, query::escape_like};

const CUSTOMERS: &str = "campaign_customers";

/// The view columns a [`ViewRow`] is decoded from, in decoding order.
const VIEW_COLUMNS: [&str; 47] = [
    "customer_id",
    "external_id",
    "display_name",
    "email",
    "phone",
    "region",
    "city",
    "occupation",
    "gender",
    "income_band",
    "birth_day",
    "relationship_start_day",
    "tags",
    "categories",
    "consent_email",
    "consent_sms",
    "consent_phone",
    "consent_push",
    "consent_post",
    "purchases",
    "first_purchase_day",
    "last_purchase_day",
    "erased",
    "known",
    "rfm_segment",
    "churn_risk",
    "value_tier",
    "value_quadrant",
    "lifecycle_stage",
    "rfm_r",
    "rfm_f",
    "rfm_m",
    "rfm_recency_days",
    "rfm_frequency",
    "rfm_monetary",
    "rfm_weighted_score",
    "clv_historical_value",
    "clv_simple",
    "clv_predicted_365d",
    "clv_expected_purchases_365d",
    "clv_p_alive",
    "churn_probability",
    "loyalty_index",
    "profit_margin",
    "latest_nps",
    "csat_mean",
    "open_complaints",
];

/// Columns written from a feedback summary.
const FEEDBACK_COLUMNS: [&str; 3] = ["latest_nps", "csat_mean", "open_complaints"];

/// Columns written from a score (all but the first of them nullable).
const SCORE_COLUMNS: [&str; 20] = [
    "rfm_segment",
    "churn_risk",
    "value_tier",
    "value_quadrant",
    "lifecycle_stage",
    "rfm_r",
    "rfm_f",
    "rfm_m",
    "rfm_recency_days",
    "rfm_frequency",
    "rfm_monetary",
    "rfm_weighted_score",
    "clv_historical_value",
    "clv_simple",
    "clv_predicted_365d",
    "clv_expected_purchases_365d",
    "clv_p_alive",
    "churn_probability",
    "loyalty_index",
    "profit_margin",
];

/// One customer as the view holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ViewRow {
    pub record: Record,
    pub display_name: String,
    pub email: String,
    pub phone: String,
    /// Erased in profile: personal data cleared, never selected.
    pub erased: bool,
    /// Seen in the profile feed (rows can exist with scores only).
    pub known: bool,
}

impl ViewRow {
    /// Whether a rule may select this customer at all.
    pub fn selectable(&self) -> bool {
        self.known && !self.erased
    }
}

/// A created or updated customer from the profile feed (the full record).
#[derive(Debug, Clone, Default)]
pub struct CustomerChange {
    pub record: Record,
    pub display_name: String,
    pub email: String,
    pub phone: String,
    pub erased: bool,
}

/// What one batch of the profile change feed does to the view, in feed order.
#[derive(Debug, Clone)]
pub enum FeedChange {
    Customer(Box<CustomerChange>),
    /// (customer id, UTC day, category) of a transaction.
    Purchase(String, i32, String),
    Erased(String),
}

fn encode_list(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!("|{}|", items.join("|"))
    }
}

fn decode_list(s: &str) -> Vec<String> {
    s.split('|')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn decode_row(r: &QueryResult) -> Result<ViewRow, ApiError> {
    fn get<T: sea_orm::TryGetable>(r: &QueryResult, i: usize) -> Result<T, ApiError> {
        r.try_get_by_index(i).map_err(db_error)
    }
    let segment: Option<String> = get(r, 24)?;
    let scores = match segment {
        None => None,
        Some(rfm_segment) => {
            let n = |i: usize| -> Result<f64, ApiError> {
                Ok(get::<Option<f64>>(r, i)?.unwrap_or_default())
            };
            let l = |i: usize| -> Result<String, ApiError> {
                Ok(get::<Option<String>>(r, i)?.unwrap_or_default())
            };
            Some(ScoreFields {
                rfm_segment,
                churn_risk: l(25)?,
                value_tier: l(26)?,
                value_quadrant: l(27)?,
                lifecycle_stage: l(28)?,
                r: n(29)?,
                f: n(30)?,
                m: n(31)?,
                recency_days: n(32)?,
                frequency: n(33)?,
                monetary: n(34)?,
                weighted_score: n(35)?,
                historical_value: n(36)?,
                simple_clv: n(37)?,
                predicted_clv_365d: n(38)?,
                expected_purchases_365d: n(39)?,
                p_alive: n(40)?,
                churn_probability: n(41)?,
                loyalty_index: n(42)?,
                margin: n(43)?,
            })
        }
    };
    Ok(ViewRow {
        record: Record {
            customer_id: get(r, 0)?,
            external_id: get(r, 1)?,
            region: get(r, 5)?,
            city: get(r, 6)?,
            occupation: get(r, 7)?,
            gender: get(r, 8)?,
            income_band: get(r, 9)?,
            birth_day: get(r, 10)?,
            relationship_start_day: get(r, 11)?,
            tags: decode_list(&get::<String>(r, 12)?),
            categories: decode_list(&get::<String>(r, 13)?),
            consent: [
                get(r, 14)?,
                get(r, 15)?,
                get(r, 16)?,
                get(r, 17)?,
                get(r, 18)?,
            ],
            purchases: get(r, 19)?,
            first_purchase_day: get(r, 20)?,
            last_purchase_day: get(r, 21)?,
            scores,
            feedback: FeedbackFields {
                latest_nps: get(r, 44)?,
                csat_mean: get(r, 45)?,
                open_complaints: get(r, 46)?,
            },
        },
        display_name: get(r, 2)?,
        email: get(r, 3)?,
        phone: get(r, 4)?,
        erased: get(r, 22)?,
        known: get(r, 23)?,
    })
}

fn score_values(s: Option<&ScoreFields>) -> Vec<Value> {
    let Some(s) = s else {
        return (0..SCORE_COLUMNS.len())
            .map(|i| {
                if i < 5 {
                    Option::<String>::None.into()
                } else {
                    Option::<f64>::None.into()
                }
            })
            .collect();
    };
    let mut v: Vec<Value> = [
        &s.rfm_segment,
        &s.churn_risk,
        &s.value_tier,
        &s.value_quadrant,
        &s.lifecycle_stage,
    ]
    .into_iter()
    .map(|t| Some(t.clone()).into())
    .collect();
    v.extend(
        [
            s.r,
            s.f,
            s.m,
            s.recency_days,
            s.frequency,
            s.monetary,
            s.weighted_score,
            s.historical_value,
            s.simple_clv,
            s.predicted_clv_365d,
            s.expected_purchases_365d,
            s.p_alive,
            s.churn_probability,
            s.loyalty_index,
            s.margin,
        ]
        .into_iter()
        .map(|n| Some(n).into()),
    );
    v
}

fn row_values(row: &ViewRow, revision: i64) -> Vec<Value> {
    let r = &row.record;
    let mut v: Vec<Value> = vec![
        r.customer_id.clone().into(),
        r.external_id.clone().into(),
        row.display_name.clone().into(),
        row.email.clone().into(),
        row.phone.clone().into(),
        r.region.clone().into(),
        r.city.clone().into(),
        r.occupation.clone().into(),
        r.gender.clone().into(),
        r.income_band.clone().into(),
        r.birth_day.into(),
        r.relationship_start_day.into(),
        encode_list(&r.tags).into(),
        encode_list(&r.categories).into(),
    ];
    v.extend(r.consent.iter().map(|c| (*c).into()));
    v.extend([
        r.purchases.into(),
        r.first_purchase_day.into(),
        r.last_purchase_day.into(),
        row.erased.into(),
        row.known.into(),
    ]);
    v.extend(score_values(r.scores.as_ref()));
    v.extend(feedback_values(&r.feedback));
    v.push(revision.into());
    v
}

fn feedback_values(f: &FeedbackFields) -> [Value; 3] {
    [
        f.latest_nps.into(),
        f.csat_mean.into(),
        f.open_complaints.into(),
    ]
}

async fn upsert_rows(
    txn: &DatabaseTransaction,
    rows: &[&ViewRow],
    revision: i64,
) -> Result<(), ApiError> {
    let mut columns: Vec<&'static str> = VIEW_COLUMNS[..24].to_vec();
    columns.extend(SCORE_COLUMNS);
    columns.extend(FEEDBACK_COLUMNS);
    columns.push("revision");
    let values = rows.iter().map(|row| row_values(row, revision)).collect();
    upsert_columns(txn, &columns, values).await
}

/// Inserts view rows (`columns` starts with the customer id), or sets those
/// columns of the rows that exist.
async fn upsert_columns(
    txn: &DatabaseTransaction,
    columns: &[&'static str],
    rows: Vec<Vec<Value>>,
) -> Result<(), ApiError> {
    bulk::insert(
        txn,
        CUSTOMERS,
        columns,
        rows,
        bulk::Conflict::Update {
            key: &["customer_id"],
            columns: &columns[1..],
            how: bulk::Update::Replace,
        },
        None,
    )
    .await?;
    Ok(())
}

fn view_select() -> SelectStatement {
    let mut q = Query::select();
    q.columns(VIEW_COLUMNS.map(|c| (Alias::new("c"), Alias::new(c))))
        .from_as(CUSTOMERS, Alias::new("c"));
    q
}

fn col(name: &'static str) -> Expr {
    Expr::col((Alias::new("c"), Alias::new(name)))
}

/// The view column holding `field`, when it is stored as is.
fn column_of(field: Field) -> Option<&'static str> {
    Some(match field {
        Field::CustomerId => "customer_id",
        Field::ExternalId => "external_id",
        Field::Region => "region",
        Field::City => "city",
        Field::Occupation => "occupation",
        Field::Gender => "gender",
        Field::IncomeBand => "income_band",
        Field::BirthDate => "birth_day",
        Field::RelationshipStartDate => "relationship_start_day",
        Field::ConsentEmail => "consent_email",
        Field::ConsentSms => "consent_sms",
        Field::ConsentPhone => "consent_phone",
        Field::ConsentPush => "consent_push",
        Field::ConsentPost => "consent_post",
        Field::Purchases => "purchases",
        Field::FirstPurchaseDate => "first_purchase_day",
        Field::LastPurchaseDate => "last_purchase_day",
        Field::RfmSegment => "rfm_segment",
        Field::RfmR => "rfm_r",
        Field::RfmF => "rfm_f",
        Field::RfmM => "rfm_m",
        Field::RfmRecencyDays => "rfm_recency_days",
        Field::RfmFrequency => "rfm_frequency",
        Field::RfmMonetary => "rfm_monetary",
        Field::RfmWeightedScore => "rfm_weighted_score",
        Field::ClvHistoricalValue => "clv_historical_value",
        Field::ClvSimple => "clv_simple",
        Field::ClvPredicted365d => "clv_predicted_365d",
        Field::ClvExpectedPurchases365d => "clv_expected_purchases_365d",
        Field::ClvPAlive => "clv_p_alive",
        Field::ChurnProbability => "churn_probability",
        Field::ChurnRisk => "churn_risk",
        Field::ValueTier => "value_tier",
        Field::ValueQuadrant => "value_quadrant",
        Field::LifecycleStage => "lifecycle_stage",
        Field::LoyaltyIndex => "loyalty_index",
        Field::ProfitMargin => "profit_margin",
        Field::FeedbackNps => "latest_nps",
        Field::FeedbackCsat => "csat_mean",
        Field::FeedbackOpenComplaints => "open_complaints",
        Field::Age
        | Field::DaysSinceLastPurchase
        | Field::DaysSinceFirstPurchase
        | Field::DaysToBirthday
        | Field::DaysToAnniversary
        | Field::FeedbackNpsCategory => return None,
    })
}

fn sql_value(v: &RuleValue) -> sea_orm::Value {
    match v {
        RuleValue::Bool(b) => (*b).into(),
        RuleValue::Number(n) => (*n).into(),
        RuleValue::Text(s) => s.clone().into(),
        RuleValue::Date(d) => (*d).into(),
    }
}

fn compare(c: Expr, op: CmpOp, v: sea_orm::Value) -> SimpleExpr {
    match op {
        CmpOp::Eq => c.eq(v),
        CmpOp::Ne => c.ne(v),
        CmpOp::Lt => c.lt(v),
        CmpOp::Le => c.lte(v),
        CmpOp::Gt => c.gt(v),
        CmpOp::Ge => c.gte(v),
    }
}

/// A pre-filter for `rule` as bound query parameters: every row the rule
/// selects passes it (rows passing it are still checked by the rule itself).
/// `None` means no part of the rule could be pushed down.
///
/// Only monotone parts are pushed: comparisons, `in`, boolean fields,
/// `has`, `bought_category`, and `and`/`or` of those. A `not` is left to the
/// evaluator, because SQL's three-valued logic would treat null differently.
pub fn prefilter(rule: &Rule, today: i32) -> Option<SimpleExpr> {
    match rule {
        Rule::And(parts) => parts
            .iter()
            .filter_map(|p| prefilter(p, today))
            .reduce(|a, b| a.and(b)),
        Rule::Or(parts) => {
            let pushed: Option<Vec<SimpleExpr>> =
                parts.iter().map(|p| prefilter(p, today)).collect();
            pushed?.into_iter().reduce(|a, b| a.or(b))
        }
        Rule::Not(_) => None,
        Rule::Const(true) => None,
        Rule::Const(false) => Some(Expr::val(1).eq(0)),
        Rule::IsTrue(field) => column_of(*field).map(|c| col(c).eq(true)),
        Rule::Compare { field, op, value } => match (field, value) {
            // days_since_x op n  <=>  x_day flipped-op (today - n)
            (
                Field::DaysSinceLastPurchase | Field::DaysSinceFirstPurchase,
                RuleValue::Number(n),
            ) => {
                let column = if *field == Field::DaysSinceLastPurchase {
                    "last_purchase_day"
                } else {
                    "first_purchase_day"
                };
                let flipped = match op {
                    CmpOp::Lt => CmpOp::Gt,
                    CmpOp::Le => CmpOp::Ge,
                    CmpOp::Gt => CmpOp::Lt,
                    CmpOp::Ge => CmpOp::Le,
                    other => *other,
                };
                Some(compare(col(column), flipped, (f64::from(today) - n).into()))
            }
            _ => column_of(*field).map(|c| compare(col(c), *op, sql_value(value))),
        },
        Rule::In {
            field,
            values,
            negated: false,
        } => column_of(*field).map(|c| col(c).is_in(values.iter().map(sql_value))),
        Rule::In { negated: true, .. } => None,
        Rule::HasTag(tag) => {
            Some(col("tags").like(LikeExpr::new(format!("%|{}|%", escape_like(tag))).escape('\\')))
        }
        Rule::BoughtCategory(c) => Some(
            col("categories").like(LikeExpr::new(format!("%|{}|%", escape_like(c))).escape('\\')),
        ),
    }
}

/// Which rows of the view a scan reads.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// From [`prefilter`].
    pub prefilter: Option<SimpleExpr>,
    /// Only customers with marketing consent for this channel column.
    pub consent_column: Option<&'static str>,
}

/// The consent column for a channel name ("email", "sms", ...).
pub fn consent_column(channel: &str) -> Option<&'static str> {
    Some(match channel {
        "email" => "consent_email",
        "sms" => "consent_sms",
        "phone" => "consent_phone",
        "push" => "consent_push",
        "post" => "consent_post",
        _ => return None,
    })
}

/// Where a page of [`Snapshot::changed_page`] resumes: after this row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeCursor {
    revision: i64,
    customer_id: String,
}

/// A consistent read of the campaign tables: every page read through it sees
/// the same committed state, however long the scan takes (PostgreSQL:
/// REPEATABLE READ READ ONLY; SQLite: one read transaction on a WAL database).
pub struct Snapshot {
    txn: DatabaseTransaction,
}

impl Snapshot {
    /// Selectable customers (known, not erased) after `after` by id.
    pub async fn page(
        &self,
        scan: &Scan,
        after: &str,
        limit: u64,
    ) -> Result<Vec<ViewRow>, ApiError> {
        let mut q = view_select();
        q.and_where(col("known").eq(true))
            .and_where(col("erased").eq(false))
            .and_where(col("customer_id").gt(after))
            .order_by((Alias::new("c"), Alias::new("customer_id")), Order::Asc)
            .limit(limit);
        if let Some(c) = scan.consent_column {
            q.and_where(col(c).eq(true));
        }
        if let Some(p) = &scan.prefilter {
            q.and_where(p.clone());
        }
        self.rows(&q).await
    }

    /// Every row (erased and unknown included), after `after` by id: the
    /// mirror's load from scratch, in primary-key order.
    pub async fn all_rows_page(&self, after: &str, limit: u64) -> Result<Vec<ViewRow>, ApiError> {
        let mut q = view_select();
        q.and_where(col("customer_id").gt(after))
            .order_by((Alias::new("c"), Alias::new("customer_id")), Order::Asc)
            .limit(limit);
        self.rows(&q).await
    }

    /// Every row (erased and unknown included) changed after revision
    /// `since` and up to this snapshot's revision, in (revision, customer
    /// id) order from `after` (`None`: from the start), with the cursor the
    /// next page starts after (`None` after the last page).
    ///
    /// Read through the (revision, customer_id) index, so the cost follows
    /// the number of changed rows: ordered by id instead, a check that finds
    /// nothing new reads the whole view (0.4 s of SQLite per check at a
    /// million customers, which the mirror makes every second).
    pub async fn changed_page(
        &self,
        since: i64,
        after: Option<&ChangeCursor>,
        limit: u64,
    ) -> Result<(Vec<ViewRow>, Option<ChangeCursor>), ApiError> {
        let mut q = view_select();
        q.column((Alias::new("c"), Alias::new("revision")));
        // The cursor alone bounds the page (its revision is above `since`
        // already), so the index range starts at it.
        q.and_where(crate::query::after_position(
            col("revision"),
            col("customer_id"),
            match after {
                Some(a) => (a.revision, Some(a.customer_id.as_str())),
                None => (since, None),
            },
        ));
        q.order_by((Alias::new("c"), Alias::new("revision")), Order::Asc)
            .order_by((Alias::new("c"), Alias::new("customer_id")), Order::Asc)
            .limit(limit);
        let results = self.txn.query_all(&q).await.map_err(db_error)?;
        let next = match (results.last(), results.len() as u64 == limit) {
            (Some(last), true) => Some(ChangeCursor {
                revision: last
                    .try_get_by_index(VIEW_COLUMNS.len())
                    .map_err(db_error)?,
                customer_id: last.try_get_by_index(0).map_err(db_error)?,
            }),
            _ => None,
        };
        let rows = results.iter().map(decode_row).collect::<Result<_, _>>()?;
        Ok((rows, next))
    }

    /// One arm of a campaign's frozen audience, joined with the current view:
    /// customers erased since launch, or (with `consent_column`) who have
    /// withdrawn consent since, are left out.
    pub async fn audience_page(
        &self,
        campaign_id: &str,
        arm: Arm,
        consent_column: Option<&'static str>,
        after: &str,
        limit: u64,
    ) -> Result<Vec<ViewRow>, ApiError> {
        let mut q = view_select();
        q.inner_join(
            Alias::new("campaign_audience"),
            Expr::col((Alias::new("campaign_audience"), Alias::new("customer_id")))
                .equals((Alias::new("c"), Alias::new("customer_id"))),
        )
        .and_where(
            Expr::col((Alias::new("campaign_audience"), Alias::new("campaign_id"))).eq(campaign_id),
        )
        .and_where(
            Expr::col((Alias::new("campaign_audience"), Alias::new("arm"))).eq(arm_code(arm)),
        )
        .and_where(col("erased").eq(false))
        .and_where(col("customer_id").gt(after))
        .order_by((Alias::new("c"), Alias::new("customer_id")), Order::Asc)
        .limit(limit);
        if let Some(c) = consent_column {
            q.and_where(col(c).eq(true));
        }
        self.rows(&q).await
    }

    /// The view revision this snapshot sees.
    pub async fn revision(&self) -> Result<i64, ApiError> {
        view_revision(&self.txn).await
    }

    async fn rows(&self, q: &SelectStatement) -> Result<Vec<ViewRow>, ApiError> {
        let rows = self.txn.query_all(q).await.map_err(db_error)?;
        rows.iter().map(decode_row).collect()
    }

    pub async fn close(self) {
        let _ = self.txn.commit().await;
    }
}

async fn view_revision<C: ConnectionTrait>(db: &C) -> Result<i64, ApiError> {
    crate::cursor::last_revision(db, "campaign_view_head").await
}

/// A stored segment with the watcher's bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRow {
    pub id: String,
    pub display_name: String,
    pub expression: String,
    pub description: String,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub version: i64,
    pub evaluated_revision: i64,
    pub evaluated_day: i32,
    pub evaluated_version: i64,
    pub members: i64,
    pub last_change: i64,
}

const SEGMENT_COLUMNS: [&str; 12] = [
    "id",
    "display_name",
    "expression",
    "description",
    "create_time",
    "update_time",
    "version",
    "evaluated_revision",
    "evaluated_day",
    "evaluated_version",
    "members",
    "last_change",
];

fn decode_segment(r: &QueryResult) -> Result<SegmentRow, ApiError> {
    let g = |c: &str| r.try_get::<String>("", c).map_err(db_error);
    let t = |c: &str| r.try_get::<DateTime<Utc>>("", c).map_err(db_error);
    let n = |c: &str| r.try_get::<i64>("", c).map_err(db_error);
    Ok(SegmentRow {
        id: g("id")?,
        display_name: g("display_name")?,
        expression: g("expression")?,
        description: g("description")?,
        create_time: t("create_time")?,
        update_time: t("update_time")?,
        version: n("version")?,
        evaluated_revision: n("evaluated_revision")?,
        evaluated_day: r.try_get::<i32>("", "evaluated_day").map_err(db_error)?,
        evaluated_version: n("evaluated_version")?,
        members: n("members")?,
        last_change: n("last_change")?,
    })
}

/// A membership change as stored (the watermark is `change`).
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentChangeRow {
    pub change: i64,
    pub customer_id: String,
    pub entered: bool,
    pub change_time: DateTime<Utc>,
}

/// A stored campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignRow {
    pub id: String,
    pub display_name: String,
    pub kind: i32,
    pub segment_id: String,
    pub channel: String,
    pub control_fraction: f64,
    pub state: CampaignState,
    pub treatment_size: i64,
    pub control_size: i64,
    pub create_time: DateTime<Utc>,
    pub launch_time: Option<DateTime<Utc>>,
    pub complete_time: Option<DateTime<Utc>>,
    pub version: i64,
}

const CAMPAIGN_COLUMNS: [&str; 13] = [
    "id",
    "display_name",
    "kind",
    "segment_id",
    "channel",
    "control_fraction",
    "state",
    "treatment_size",
    "control_size",
    "create_time",
    "launch_time",
    "complete_time",
    "version",
];

fn state_code(s: CampaignState) -> i32 {
    match s {
        CampaignState::Draft => 1,
        CampaignState::Launched => 2,
        CampaignState::Completed => 3,
    }
}

fn arm_code(a: Arm) -> i32 {
    match a {
        Arm::Treatment => 1,
        Arm::Control => 2,
    }
}

fn decode_campaign(r: &QueryResult) -> Result<CampaignRow, ApiError> {
    let g = |c: &str| r.try_get::<String>("", c).map_err(db_error);
    let n = |c: &str| r.try_get::<i64>("", c).map_err(db_error);
    let t = |c: &str| r.try_get::<Option<DateTime<Utc>>>("", c).map_err(db_error);
    let state = match r.try_get::<i32>("", "state").map_err(db_error)? {
        1 => CampaignState::Draft,
        2 => CampaignState::Launched,
        _ => CampaignState::Completed,
    };
    Ok(CampaignRow {
        id: g("id")?,
        display_name: g("display_name")?,
        kind: r.try_get("", "kind").map_err(db_error)?,
        segment_id: g("segment_id")?,
        channel: g("channel")?,
        control_fraction: r.try_get("", "control_fraction").map_err(db_error)?,
        state,
        treatment_size: n("treatment_size")?,
        control_size: n("control_size")?,
        create_time: r.try_get("", "create_time").map_err(db_error)?,
        launch_time: t("launch_time")?,
        complete_time: t("complete_time")?,
        version: n("version")?,
    })
}

/// A response to record.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseRow {
    pub id: String,
    pub customer_id: String,
    pub kind: i32,
    pub revenue_nanos: i64,
    pub currency: String,
    pub occurred_at: DateTime<Utc>,
}

/// The response kind that counts as a conversion (RESPONSE_KIND_CONVERTED).
pub const CONVERTED: i32 = 4;

#[derive(Clone)]
pub struct CampaignStore {
    db: DatabaseConnection,
}

impl CampaignStore {
    pub fn new(storage: &Storage) -> Self {
        Self {
            db: storage.connection().clone(),
        }
    }

    pub async fn snapshot(&self) -> Result<Snapshot, ApiError> {
        let options = match self.db.get_database_backend() {
            DbBackend::Postgres => TransactionOptions {
                isolation_level: Some(IsolationLevel::RepeatableRead),
                access_mode: Some(AccessMode::ReadOnly),
                ..TransactionOptions::default()
            },
            _ => TransactionOptions::default(),
        };
        let txn = self
            .db
            .begin_with_options(options)
            .await
            .map_err(db_error)?;
        // SQLite starts the read snapshot at the first read: take it now.
        view_revision(&txn).await?;
        Ok(Snapshot { txn })
    }

    // ---- the view ----

    pub async fn cursor(&self, consumer: &str) -> Result<i64, ApiError> {
        cursor::load(&self.db, "campaign_feed_cursor", consumer).await
    }

    pub async fn view_revision(&self) -> Result<i64, ApiError> {
        view_revision(&self.db).await
    }

    /// Applies one batch of the profile change feed and acknowledges
    /// `last_sequence`, in one transaction.
    pub async fn apply_feed(
        &self,
        consumer: &str,
        changes: Vec<FeedChange>,
        advance: cursor::Advance,
    ) -> Result<(), ApiError> {
        let txn = begin_write(&self.db).await?;
        let ids: Vec<String> = {
            let mut seen = HashSet::new();
            changes
                .iter()
                .map(|c| match c {
                    FeedChange::Customer(c) => &c.record.customer_id,
                    FeedChange::Purchase(id, ..) | FeedChange::Erased(id) => id,
                })
                .filter(|id| seen.insert(id.as_str()))
                .cloned()
                .collect()
        };
        let mut rows = self.load_rows(&txn, &ids).await?;
        for change in changes {
            match change {
                FeedChange::Customer(c) => {
                    let c = *c;
                    let row = rows
                        .entry(c.record.customer_id.clone())
                        .or_insert_with(|| ViewRow {
                            record: Record {
                                customer_id: c.record.customer_id.clone(),
                                ..Record::default()
                            },
                            ..ViewRow::default()
                        });
                    if row.erased || c.erased {
                        erase(row);
                        continue;
                    }
                    let kept = std::mem::take(&mut row.record);
                    row.record = Record {
                        purchases: kept.purchases,
                        first_purchase_day: kept.first_purchase_day,
                        last_purchase_day: kept.last_purchase_day,
                        categories: kept.categories,
                        scores: kept.scores,
                        ..c.record
                    };
                    row.display_name = c.display_name;
                    row.email = c.email;
                    row.phone = c.phone;
                    row.known = true;
                }
                FeedChange::Purchase(id, day, category) => {
                    let row = rows.entry(id.clone()).or_insert_with(|| ViewRow {
                        record: Record {
                            customer_id: id,
                            ..Record::default()
                        },
                        ..ViewRow::default()
                    });
                    if row.erased {
                        continue;
                    }
                    let r = &mut row.record;
                    r.purchases += 1;
                    r.first_purchase_day =
                        Some(r.first_purchase_day.map_or(day, |d| Ord::min(d, day)));
                    r.last_purchase_day =
                        Some(r.last_purchase_day.map_or(day, |d| Ord::max(d, day)));
                    if !category.is_empty()
                        && !category.contains('|')
                        && !r.categories.contains(&category)
                    {
                        r.categories.push(category);
                        r.categories.sort();
                    }
                }
                FeedChange::Erased(id) => {
                    let row = rows.entry(id.clone()).or_insert_with(|| ViewRow {
                        record: Record {
                            customer_id: id,
                            ..Record::default()
                        },
                        ..ViewRow::default()
                    });
                    erase(row);
                }
            }
        }
        if !rows.is_empty() {
            let revision = cursor::next_revision(&txn, "campaign_view_head").await?;
            let rows: Vec<&ViewRow> = rows.values().collect();
            upsert_rows(&txn, &rows, revision).await?;
        }
        cursor::save(&txn, "campaign_feed_cursor", consumer, advance).await?;
        txn.commit().await.map_err(db_error)
    }

    /// Writes scores (customer id, fields) and acknowledges `revision` of
    /// scoring's score stream, in one transaction.
    pub async fn apply_scores(
        &self,
        consumer: &str,
        scores: &[(String, ScoreFields)],
        advance: cursor::Advance,
    ) -> Result<(), ApiError> {
        let rows = scores
            .iter()
            .map(|(id, s)| (id.clone(), score_values(Some(s))))
            .collect();
        self.apply_columns(consumer, &SCORE_COLUMNS, rows, advance)
            .await
    }

    /// Writes feedback summaries (customer id, fields) and acknowledges
    /// `revision` of feedback's summary stream, in one transaction.
    pub async fn apply_feedback(
        &self,
        consumer: &str,
        summaries: &[(String, FeedbackFields)],
        advance: cursor::Advance,
    ) -> Result<(), ApiError> {
        let rows = summaries
            .iter()
            .map(|(id, f)| (id.clone(), feedback_values(f).to_vec()))
            .collect();
        self.apply_columns(consumer, &FEEDBACK_COLUMNS, rows, advance)
            .await
    }

    /// Sets `columns` of the given customers (creating rows not seen in the
    /// profile feed yet) with a new view revision, and acknowledges `ack`
    /// for `consumer`, in one transaction.
    async fn apply_columns(
        &self,
        consumer: &str,
        columns: &[&'static str],
        rows: Vec<(String, Vec<Value>)>,
        advance: cursor::Advance,
    ) -> Result<(), ApiError> {
        let txn = begin_write(&self.db).await?;
        if !rows.is_empty() {
            let view_revision = cursor::next_revision(&txn, "campaign_view_head").await?;
            let mut all = vec!["customer_id"];
            all.extend(columns);
            all.push("revision");
            let values = rows
                .into_iter()
                .map(|(id, values)| {
                    let mut row = Vec::with_capacity(all.len());
                    row.push(Value::from(id));
                    row.extend(values);
                    row.push(view_revision.into());
                    row
                })
                .collect();
            upsert_columns(&txn, &all, values).await?;
        }
        cursor::save(&txn, "campaign_feed_cursor", consumer, advance).await?;
        txn.commit().await.map_err(db_error)
    }

    async fn load_rows<C: ConnectionTrait>(
        &self,
        db: &C,
        ids: &[String],
    ) -> Result<HashMap<String, ViewRow>, ApiError> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(1_000) {
            let mut q = view_select();
            q.and_where(col("customer_id").is_in(crate::query::padded(chunk)));
            for r in db.query_all(&q).await.map_err(db_error)? {
                let row = decode_row(&r)?;
                out.insert(row.record.customer_id.clone(), row);
            }
        }
        Ok(out)
    }

    /// The view rows of `ids` that exist (any state).
    pub async fn rows(&self, ids: &[String]) -> Result<HashMap<String, ViewRow>, ApiError> {
        self.load_rows(&self.db, ids).await
    }

    /// Category sets of every selectable customer, for affinity.
    pub async fn category_baskets(&self) -> Result<Vec<Vec<String>>, ApiError> {
        let rows = self
            .db
            .query_all(
                Query::select()
                    .column("categories")
                    .from(CUSTOMERS)
                    .and_where(Expr::col("known").eq(true))
                    .and_where(Expr::col("erased").eq(false))
                    .and_where(Expr::col("categories").ne("")),
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok(decode_list(
                    &r.try_get::<String>("", "categories").map_err(db_error)?,
                ))
            })
            .collect()
    }

    // ---- segments ----

    pub async fn insert_segment(&self, s: &SegmentRow) -> Result<(), ApiError> {
        self.db
            .execute(
                Query::insert()
                    .into_table("campaign_segments")
                    .columns(SEGMENT_COLUMNS)
                    .values_panic([
                        s.id.clone().into(),
                        s.display_name.clone().into(),
                        s.expression.clone().into(),
                        s.description.clone().into(),
                        s.create_time.into(),
                        s.update_time.into(),
                        s.version.into(),
                        s.evaluated_revision.into(),
                        s.evaluated_day.into(),
                        s.evaluated_version.into(),
                        s.members.into(),
                        s.last_change.into(),
                    ]),
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    pub async fn segment(&self, id: &str) -> Result<SegmentRow, ApiError> {
        by_id(
            &self.db,
            "campaign_segments",
            &SEGMENT_COLUMNS,
            "segment",
            id,
            decode_segment,
        )
        .await
    }

    /// Segments after `after` by id.
    pub async fn segments(&self, after: &str, limit: u64) -> Result<Vec<SegmentRow>, ApiError> {
        page_by_id(
            &self.db,
            "campaign_segments",
            &SEGMENT_COLUMNS,
            after,
            limit,
            decode_segment,
        )
        .await
    }

    /// Replaces the editable fields if the stored version is `expected`;
    /// ABORTED otherwise. A changed expression resets the membership
    /// bookkeeping so the watcher re-evaluates from scratch.
    pub async fn update_segment(&self, s: &SegmentRow, expected: i64) -> Result<(), ApiError> {
        let result = self
            .db
            .execute(
                Query::update()
                    .table("campaign_segments")
                    .value("display_name", s.display_name.clone())
                    .value("expression", s.expression.clone())
                    .value("description", s.description.clone())
                    .value("update_time", s.update_time)
                    .value("version", s.version)
                    .and_where(Expr::col("id").eq(s.id.clone()))
                    .and_where(Expr::col("version").eq(expected)),
            )
            .await
            .map_err(db_error)?;
        if result.rows_affected() == 0 {
            self.segment(&s.id).await?;
            return Err(ApiError::aborted(
                "STALE_ETAG",
                format!("segment {:?} was changed concurrently; read it again", s.id),
            ));
        }
        Ok(())
    }

    /// Deletes a segment with its membership, changes and history. DRAFT
    /// campaigns still pointing at it block the deletion.
    pub async fn delete_segment(&self, id: &str) -> Result<(), ApiError> {
        let txn = begin_write(&self.db).await?;
        let drafts = txn
            .query_one(
                Query::select()
                    .expr_as(Func::count(Expr::col(Asterisk)), Alias::new("n"))
                    .from("campaign_campaigns")
                    .and_where(Expr::col("segment_id").eq(id))
                    .and_where(Expr::col("state").eq(state_code(CampaignState::Draft))),
            )
            .await
            .map_err(db_error)?
            .map_or(Ok(0), |r| r.try_get::<i64>("", "n"))
            .map_err(db_error)?;
        if drafts > 0 {
            return Err(ApiError::failed_precondition(
                "SEGMENT_IN_USE",
                format!(
                    "segment {id:?} is the audience of {drafts} draft campaign(s); launch or delete them first"
                ),
            ));
        }
        let deleted = txn
            .execute(
                Query::delete()
                    .from_table("campaign_segments")
                    .and_where(Expr::col("id").eq(id)),
            )
            .await
            .map_err(db_error)?;
        if deleted.rows_affected() == 0 {
            return Err(ApiError::not_found("segment", id));
        }
        for table in [
            "campaign_segment_members",
            "campaign_segment_changes",
            "campaign_segment_counts",
        ] {
            txn.execute(
                Query::delete()
                    .from_table(table)
                    .and_where(Expr::col("segment_id").eq(id)),
            )
            .await
            .map_err(db_error)?;
        }
        txn.commit().await.map_err(db_error)
    }

    /// The segment's members with the last change number they reflect, read
    /// consistently; `None` until the watcher has evaluated the current rule.
    pub async fn membership(
        &self,
        segment_id: &str,
    ) -> Result<Option<(i64, Vec<String>)>, ApiError> {
        let snapshot = self.snapshot().await?;
        let txn = &snapshot.txn;
        let row = txn
            .query_one(
                Query::select()
                    .columns(SEGMENT_COLUMNS)
                    .from("campaign_segments")
                    .and_where(Expr::col("id").eq(segment_id)),
            )
            .await
            .map_err(db_error)?
            .ok_or_else(|| ApiError::not_found("segment", segment_id))?;
        let segment = decode_segment(&row)?;
        if segment.evaluated_version != segment.version {
            snapshot.close().await;
            return Ok(None);
        }
        let rows = txn
            .query_all(
                Query::select()
                    .column("customer_id")
                    .from("campaign_segment_members")
                    .and_where(Expr::col("segment_id").eq(segment_id))
                    .order_by("customer_id", Order::Asc),
            )
            .await
            .map_err(db_error)?;
        let members = rows
            .iter()
            .map(|r| r.try_get::<String>("", "customer_id").map_err(db_error))
            .collect::<Result<Vec<_>, _>>()?;
        snapshot.close().await;
        Ok(Some((segment.last_change, members)))
    }

    /// Which of `ids` are members of the segment now.
    pub async fn members_among(
        &self,
        segment_id: &str,
        ids: &[String],
    ) -> Result<HashSet<String>, ApiError> {
        let mut out = HashSet::new();
        for chunk in ids.chunks(1_000) {
            let rows = self
                .db
                .query_all(
                    Query::select()
                        .column("customer_id")
                        .from("campaign_segment_members")
                        .and_where(Expr::col("segment_id").eq(segment_id))
                        .and_where(Expr::col("customer_id").is_in(crate::query::padded(chunk))),
                )
                .await
                .map_err(db_error)?;
            for r in rows {
                out.insert(r.try_get::<String>("", "customer_id").map_err(db_error)?);
            }
        }
        Ok(out)
    }

    /// Every member of the segment now.
    pub async fn all_members(&self, segment_id: &str) -> Result<HashSet<String>, ApiError> {
        let rows = self
            .db
            .query_all(
                Query::select()
                    .column("customer_id")
                    .from("campaign_segment_members")
                    .and_where(Expr::col("segment_id").eq(segment_id)),
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|r| r.try_get::<String>("", "customer_id").map_err(db_error))
            .collect()
    }

    /// Records one evaluation of a segment: appends the changes (numbered
    /// after the segment's last change), updates the member set and the
    /// bookkeeping, and adds a history point when the count moved. Nothing
    /// is written if the segment was edited or deleted meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_evaluation(
        &self,
        segment: &SegmentRow,
        revision: i64,
        day: i32,
        entered: &[String],
        left: &[String],
        now: DateTime<Utc>,
    ) -> Result<bool, ApiError> {
        let txn = begin_write(&self.db).await?;
        let Some(current) = txn
            .query_one(
                Query::select()
                    .columns(SEGMENT_COLUMNS)
                    .from("campaign_segments")
                    .and_where(Expr::col("id").eq(segment.id.clone())),
            )
            .await
            .map_err(db_error)?
        else {
            return Ok(false);
        };
        let current = decode_segment(&current)?;
        if current.version != segment.version || current.last_change != segment.last_change {
            return Ok(false);
        }
        let rows = entered
            .iter()
            .map(|id| (id, true))
            .chain(left.iter().map(|id| (id, false)))
            .zip(current.last_change + 1..)
            .map(|((id, entered), change)| {
                vec![
                    segment.id.clone().into(),
                    change.into(),
                    id.clone().into(),
                    entered.into(),
                    now.into(),
                ]
            })
            .collect();
        bulk::insert(
            &txn,
            "campaign_segment_changes",
            &[
                "segment_id",
                "change",
                "customer_id",
                "entered",
                "change_time",
            ],
            rows,
            bulk::Conflict::Fail,
            None,
        )
        .await?;
        let change = current.last_change + (entered.len() + left.len()) as i64;
        let rows = entered
            .iter()
            .map(|id| vec![segment.id.clone().into(), id.clone().into()])
            .collect();
        bulk::insert(
            &txn,
            "campaign_segment_members",
            &["segment_id", "customer_id"],
            rows,
            bulk::Conflict::Skip(&["segment_id", "customer_id"]),
            None,
        )
        .await?;
        for chunk in left.chunks(1_000) {
            txn.execute(
                Query::delete()
                    .from_table("campaign_segment_members")
                    .and_where(Expr::col("segment_id").eq(segment.id.clone()))
                    .and_where(Expr::col("customer_id").is_in(crate::query::padded(chunk))),
            )
            .await
            .map_err(db_error)?;
        }
        let members = current.members + entered.len() as i64 - left.len() as i64;
        txn.execute(
            Query::update()
                .table("campaign_segments")
                .value("evaluated_revision", revision)
                .value("evaluated_day", day)
                .value("evaluated_version", current.version)
                .value("members", members)
                .value("last_change", change)
                .and_where(Expr::col("id").eq(segment.id.clone())),
        )
        .await
        .map_err(db_error)?;
        if members != current.members || current.evaluated_version < 0 {
            txn.execute(
                Query::insert()
                    .into_table("campaign_segment_counts")
                    .columns(["segment_id", "time", "members"])
                    .values_panic([segment.id.clone().into(), now.into(), members.into()])
                    .on_conflict(
                        OnConflict::columns(["segment_id", "time"])
                            .update_column("members")
                            .to_owned(),
                    ),
            )
            .await
            .map_err(db_error)?;
        }
        txn.commit().await.map_err(db_error)?;
        Ok(true)
    }

    /// Membership changes after `after`, oldest first.
    pub async fn segment_changes(
        &self,
        segment_id: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<SegmentChangeRow>, ApiError> {
        let rows = self
            .db
            .query_all(
                Query::select()
                    .columns(["change", "customer_id", "entered", "change_time"])
                    .from("campaign_segment_changes")
                    .and_where(Expr::col("segment_id").eq(segment_id))
                    .and_where(Expr::col("change").gt(after))
                    .order_by("change", Order::Asc)
                    .limit(limit),
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok(SegmentChangeRow {
                    change: r.try_get("", "change").map_err(db_error)?,
                    customer_id: r.try_get("", "customer_id").map_err(db_error)?,
                    entered: r.try_get("", "entered").map_err(db_error)?,
                    change_time: r.try_get("", "change_time").map_err(db_error)?,
                })
            })
            .collect()
    }

    /// Member counts in `[start, end]`, preceded by the count in force at
    /// `start` (when there is one).
    pub async fn segment_counts(
        &self,
        segment_id: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, i64)>, ApiError> {
        let decode = |r: &QueryResult| -> Result<(DateTime<Utc>, i64), ApiError> {
            Ok((
                r.try_get("", "time").map_err(db_error)?,
                r.try_get("", "members").map_err(db_error)?,
            ))
        };
        let mut out = Vec::new();
        if let Some(r) = self
            .db
            .query_one(
                Query::select()
                    .columns(["time", "members"])
                    .from("campaign_segment_counts")
                    .and_where(Expr::col("segment_id").eq(segment_id))
                    .and_where(Expr::col("time").lt(start))
                    .order_by("time", Order::Desc)
                    .limit(1),
            )
            .await
            .map_err(db_error)?
        {
            let (_, members) = decode(&r)?;
            out.push((start, members));
        }
        let rows = self
            .db
            .query_all(
                Query::select()
                    .columns(["time", "members"])
                    .from("campaign_segment_counts")
                    .and_where(Expr::col("segment_id").eq(segment_id))
                    .and_where(Expr::col("time").gte(start))
                    .and_where(Expr::col("time").lte(end))
                    .order_by("time", Order::Asc),
            )
            .await
            .map_err(db_error)?;
        for r in &rows {
            out.push(decode(r)?);
        }
        Ok(out)
    }

    // ---- campaigns ----

    /// Inserts a campaign; with a `request_id` already used, returns the
    /// campaign created by that request instead.
    pub async fn insert_campaign(
        &self,
        c: &CampaignRow,
        request_id: Option<&str>,
    ) -> Result<CampaignRow, ApiError> {
        if let Some(rid) = request_id
            && let Some(existing) = self.campaign_by_request(rid).await?
        {
            return Ok(existing);
        }
        let result = self
            .db
            .execute(
                Query::insert()
                    .into_table("campaign_campaigns")
                    .columns(CAMPAIGN_COLUMNS.iter().copied().chain(["request_id"]))
                    .values_panic([
                        c.id.clone().into(),
                        c.display_name.clone().into(),
                        c.kind.into(),
                        c.segment_id.clone().into(),
                        c.channel.clone().into(),
                        c.control_fraction.into(),
                        state_code(c.state).into(),
                        c.treatment_size.into(),
                        c.control_size.into(),
                        c.create_time.into(),
                        c.launch_time.into(),
                        c.complete_time.into(),
                        c.version.into(),
                        request_id.map(str::to_owned).into(),
                    ]),
            )
            .await;
        match result {
            Ok(_) => Ok(c.clone()),
            // A concurrent retry with the same request id won the race.
            Err(e) => match request_id {
                Some(rid) => self
                    .campaign_by_request(rid)
                    .await?
                    .ok_or_else(|| db_error(e)),
                None => Err(db_error(e)),
            },
        }
    }

    async fn campaign_by_request(&self, request_id: &str) -> Result<Option<CampaignRow>, ApiError> {
        let row = self
            .db
            .query_one(
                Query::select()
                    .columns(CAMPAIGN_COLUMNS)
                    .from("campaign_campaigns")
                    .and_where(Expr::col("request_id").eq(request_id)),
            )
            .await
            .map_err(db_error)?;
        row.as_ref().map(decode_campaign).transpose()
    }

    pub async fn campaign(&self, id: &str) -> Result<CampaignRow, ApiError> {
        by_id(
            &self.db,
            "campaign_campaigns",
            &CAMPAIGN_COLUMNS,
            "campaign",
            id,
            decode_campaign,
        )
        .await
    }

    pub async fn campaigns(&self, after: &str, limit: u64) -> Result<Vec<CampaignRow>, ApiError> {
        page_by_id(
            &self.db,
            "campaign_campaigns",
            &CAMPAIGN_COLUMNS,
            after,
            limit,
            decode_campaign,
        )
        .await
    }

    /// DRAFT -> LAUNCHED with the frozen audience, in one transaction; ABORTED
    /// if the campaign changed since `c.version` was read.
    pub async fn launch(
        &self,
        c: &CampaignRow,
        audience: &[(String, Arm)],
        now: DateTime<Utc>,
    ) -> Result<CampaignRow, ApiError> {
        let txn = begin_write(&self.db).await?;
        let treatment = audience.iter().filter(|a| a.1 == Arm::Treatment).count() as i64;
        let control = audience.len() as i64 - treatment;
        let updated = txn
            .execute(
                Query::update()
                    .table("campaign_campaigns")
                    .value("state", state_code(CampaignState::Launched))
                    .value("treatment_size", treatment)
                    .value("control_size", control)
                    .value("launch_time", now)
                    .value("version", c.version + 1)
                    .and_where(Expr::col("id").eq(c.id.clone()))
                    .and_where(Expr::col("version").eq(c.version)),
            )
            .await
            .map_err(db_error)?;
        if updated.rows_affected() == 0 {
            return Err(ApiError::aborted(
                "CONCURRENT_CHANGE",
                format!("campaign {:?} changed while launching; read it again", c.id),
            ));
        }
        for chunk in audience.chunks(2_000) {
            let mut q = Query::insert();
            q.into_table("campaign_audience")
                .columns(["campaign_id", "customer_id", "arm"]);
            for (id, arm) in chunk {
                q.values_panic([
                    c.id.clone().into(),
                    id.clone().into(),
                    arm_code(*arm).into(),
                ]);
            }
            txn.execute(&q).await.map_err(db_error)?;
        }
        txn.commit().await.map_err(db_error)?;
        self.campaign(&c.id).await
    }

    /// LAUNCHED -> COMPLETED; ABORTED if the campaign changed since read.
    pub async fn complete(
        &self,
        c: &CampaignRow,
        now: DateTime<Utc>,
    ) -> Result<CampaignRow, ApiError> {
        let updated = self
            .db
            .execute(
                Query::update()
                    .table("campaign_campaigns")
                    .value("state", state_code(CampaignState::Completed))
                    .value("complete_time", now)
                    .value("version", c.version + 1)
                    .and_where(Expr::col("id").eq(c.id.clone()))
                    .and_where(Expr::col("version").eq(c.version)),
            )
            .await
            .map_err(db_error)?;
        if updated.rows_affected() == 0 {
            return Err(ApiError::aborted(
                "CONCURRENT_CHANGE",
                format!("campaign {:?} changed meanwhile; read it again", c.id),
            ));
        }
        self.campaign(&c.id).await
    }

    /// One arm's customer ids after `after`, in order (the frozen audience
    /// never changes, so pages need no snapshot).
    pub async fn audience_ids(
        &self,
        campaign_id: &str,
        arm: Arm,
        after: &str,
        limit: u64,
    ) -> Result<Vec<String>, ApiError> {
        let rows = self
            .db
            .query_all(
                Query::select()
                    .column("customer_id")
                    .from("campaign_audience")
                    .and_where(Expr::col("campaign_id").eq(campaign_id))
                    .and_where(Expr::col("arm").eq(arm_code(arm)))
                    .and_where(Expr::col("customer_id").gt(after))
                    .order_by("customer_id", Order::Asc)
                    .limit(limit),
            )
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|r| r.try_get::<String>("", "customer_id").map_err(db_error))
            .collect()
    }

    /// The arm of each of `ids` that is in the campaign's audience.
    pub async fn arms_of(
        &self,
        campaign_id: &str,
        ids: &[String],
    ) -> Result<HashMap<String, Arm>, ApiError> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(1_000) {
            let rows = self
                .db
                .query_all(
                    Query::select()
                        .columns(["customer_id", "arm"])
                        .from("campaign_audience")
                        .and_where(Expr::col("campaign_id").eq(campaign_id))
                        .and_where(Expr::col("customer_id").is_in(crate::query::padded(chunk))),
                )
                .await
                .map_err(db_error)?;
            for r in rows {
                let arm = if r.try_get::<i32>("", "arm").map_err(db_error)? == 2 {
                    Arm::Control
                } else {
                    Arm::Treatment
                };
                out.insert(r.try_get("", "customer_id").map_err(db_error)?, arm);
            }
        }
        Ok(out)
    }

    /// The currency of the campaign's recorded revenue, if any.
    pub async fn response_currency(&self, campaign_id: &str) -> Result<Option<String>, ApiError> {
        let row = self
            .db
            .query_one(
                Query::select()
                    .column("currency")
                    .from("campaign_responses")
                    .and_where(Expr::col("campaign_id").eq(campaign_id))
                    .and_where(Expr::col("currency").ne(""))
                    .limit(1),
            )
            .await
            .map_err(db_error)?;
        row.map(|r| r.try_get("", "currency").map_err(db_error))
            .transpose()
    }

    /// Inserts responses, ignoring ids already recorded: (accepted, duplicates).
    pub async fn record_responses(
        &self,
        campaign_id: &str,
        responses: &[ResponseRow],
    ) -> Result<(usize, usize), ApiError> {
        let txn = begin_write(&self.db).await?;
        let rows = responses
            .iter()
            .map(|r| {
                vec![
                    campaign_id.into(),
                    r.id.clone().into(),
                    r.customer_id.clone().into(),
                    r.kind.into(),
                    r.revenue_nanos.into(),
                    r.currency.clone().into(),
                    r.occurred_at.into(),
                ]
            })
            .collect();
        let accepted = bulk::insert(
            &txn,
            "campaign_responses",
            &[
                "campaign_id",
                "response_id",
                "customer_id",
                "kind",
                "revenue_nanos",
                "currency",
                "occurred_at",
            ],
            rows,
            bulk::Conflict::Skip(&["campaign_id", "response_id"]),
            Some("response_id"),
        )
        .await?
        .len();
        txn.commit().await.map_err(db_error)?;
        Ok((accepted, responses.len() - accepted))
    }

    /// Per-arm audience, converted customers and revenue of a campaign.
    pub async fn arm_figures(&self, c: &CampaignRow) -> Result<[ArmFigures; 2], ApiError> {
        let mut figures = [
            ArmFigures {
                audience: c.treatment_size,
                ..ArmFigures::default()
            },
            ArmFigures {
                audience: c.control_size,
                ..ArmFigures::default()
            },
        ];
        let joined = |columns: &[&'static str]| {
            let mut q = Query::select();
            q.column((Alias::new("a"), Alias::new("arm")))
                .columns(columns.iter().map(|c| (Alias::new("r"), Alias::new(*c))))
                .from_as("campaign_responses", Alias::new("r"))
                .join_as(
                    JoinType::InnerJoin,
                    "campaign_audience",
                    Alias::new("a"),
                    Cond::all()
                        .add(
                            Expr::col((Alias::new("a"), Alias::new("campaign_id")))
                                .equals((Alias::new("r"), Alias::new("campaign_id"))),
                        )
                        .add(
                            Expr::col((Alias::new("a"), Alias::new("customer_id")))
                                .equals((Alias::new("r"), Alias::new("customer_id"))),
                        ),
                )
                .and_where(
                    Expr::col((Alias::new("r"), Alias::new("campaign_id"))).eq(c.id.clone()),
                );
            q
        };
        let mut converted = joined(&["customer_id"]);
        converted
            .and_where(Expr::col((Alias::new("r"), Alias::new("kind"))).eq(CONVERTED))
            .distinct();
        for r in self.db.query_all(&converted).await.map_err(db_error)? {
            let arm: i32 = r.try_get("", "arm").map_err(db_error)?;
            figures[usize::from(arm == 2)].converted += 1;
        }
        let mut revenue = joined(&["revenue_nanos"]);
        revenue.and_where(Expr::col((Alias::new("r"), Alias::new("revenue_nanos"))).ne(0));
        for r in self.db.query_all(&revenue).await.map_err(db_error)? {
            let arm: i32 = r.try_get("", "arm").map_err(db_error)?;
            let nanos: i64 = r.try_get("", "revenue_nanos").map_err(db_error)?;
            figures[usize::from(arm == 2)].revenue_nanos += i128::from(nanos);
        }
        Ok(figures)
    }
}

/// The row of `table` with this `id`, or NOT_FOUND naming `kind`.
async fn by_id<T>(
    db: &DatabaseConnection,
    table: &'static str,
    columns: &[&'static str],
    kind: &str,
    id: &str,
    decode: fn(&QueryResult) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let row = db
        .query_one(
            Query::select()
                .columns(columns.iter().copied())
                .from(table)
                .and_where(Expr::col("id").eq(id)),
        )
        .await
        .map_err(db_error)?
        .ok_or_else(|| ApiError::not_found(kind, id))?;
    decode(&row)
}

/// Up to `limit` rows of `table` after `after` by id.
async fn page_by_id<T>(
    db: &DatabaseConnection,
    table: &'static str,
    columns: &[&'static str],
    after: &str,
    limit: u64,
    decode: fn(&QueryResult) -> Result<T, ApiError>,
) -> Result<Vec<T>, ApiError> {
    let rows = db
        .query_all(
            Query::select()
                .columns(columns.iter().copied())
                .from(table)
                .and_where(Expr::col("id").gt(after))
                .order_by("id", Order::Asc)
                .limit(limit),
        )
        .await
        .map_err(db_error)?;
    rows.iter().map(decode).collect()
}

/// Clears a view row's personal data and marks it erased.
fn erase(row: &mut ViewRow) {
    let id = std::mem::take(&mut row.record.customer_id);
    *row = ViewRow {
        record: Record {
            customer_id: id,
            ..Record::default()
        },
        erased: true,
        known: row.known,
        ..ViewRow::default()
    };
}
