//! Transactions, events and interactions: batch writes that are idempotent
//! by client id and atomic per batch.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use patron_domain::{
    ApiError, Money, Violations,
    activity::{Event, EventKind, Interaction, InteractionKind, Transaction},
    money::Currency,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Query},
};

use super::{
    ChangeKind, NewChange, ProfileStore,
    entity::{customer, event, interaction, transaction},
    feed,
};
use crate::{bulk, db_error, paging::Cursor};

/// Outcome of a batch write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchOutcome {
    pub accepted: usize,
    pub duplicates: usize,
}

/// One row to insert: its id, the values of `columns`, and its feed payload.
struct Row {
    id: String,
    customer_id: String,
    values: Vec<sea_orm::Value>,
    payload: Vec<u8>,
}

impl ProfileStore {
    pub async fn record_transactions(
        &self,
        batch: Vec<Transaction>,
        now: DateTime<Utc>,
    ) -> Result<BatchOutcome, ApiError> {
        let refs: Vec<&str> = batch.iter().map(|t| t.customer_id.as_str()).collect();
        let currencies: Vec<&str> = batch.iter().map(|t| t.amount.currency.as_str()).collect();
        let rows = batch
            .iter()
            .map(|t| Row {
                id: t.id.clone(),
                customer_id: t.customer_id.clone(),
                values: vec![
                    t.id.clone().into(),
                    t.customer_id.clone().into(),
                    t.occurred_at.into(),
                    t.amount.currency.as_str().to_owned().into(),
                    t.amount.nanos.into(),
                    t.cost.map(|c| c.nanos).into(),
                    t.channel.clone().into(),
                    t.product_id.clone().into(),
                    t.category.clone().into(),
                    t.quantity.into(),
                    t.region.clone().into(),
                    now.into(),
                ],
                payload: self.codec.transaction(t),
            })
            .collect();
        self.record(
            "transactions",
            "profile_transactions",
            &[
                "id",
                "customer_id",
                "occurred_at",
                "currency",
                "amount_nanos",
                "cost_nanos",
                "channel",
                "product_id",
                "category",
                "quantity",
                "region",
                "create_time",
            ],
            ChangeKind::Transaction,
            &refs,
            Some(&currencies),
            rows,
            now,
        )
        .await
    }

    pub async fn record_events(
        &self,
        batch: Vec<Event>,
        now: DateTime<Utc>,
    ) -> Result<BatchOutcome, ApiError> {
        let refs: Vec<&str> = batch.iter().map(|e| e.customer_id.as_str()).collect();
        let rows = batch
            .iter()
            .map(|e| Row {
                id: e.id.clone(),
                customer_id: e.customer_id.clone(),
                values: vec![
                    e.id.clone().into(),
                    e.customer_id.clone().into(),
                    e.kind.as_str().to_owned().into(),
                    e.occurred_at.into(),
                    serde_json::to_string(&e.properties)
                        .unwrap_or_else(|_| "{}".into())
                        .into(),
                    now.into(),
                ],
                payload: self.codec.event(e),
            })
            .collect();
        self.record(
            "events",
            "profile_events",
            &[
                "id",
                "customer_id",
                "kind",
                "occurred_at",
                "properties",
                "create_time",
            ],
            ChangeKind::Event,
            &refs,
            None,
            rows,
            now,
        )
        .await
    }

    pub async fn record_interactions(
        &self,
        batch: Vec<Interaction>,
        now: DateTime<Utc>,
    ) -> Result<BatchOutcome, ApiError> {
        let refs: Vec<&str> = batch.iter().map(|i| i.customer_id.as_str()).collect();
        let rows = batch
            .iter()
            .map(|i| Row {
                id: i.id.clone(),
                customer_id: i.customer_id.clone(),
                values: vec![
                    i.id.clone().into(),
                    i.customer_id.clone().into(),
                    i.kind.as_str().to_owned().into(),
                    i.occurred_at.into(),
                    i.rep.clone().into(),
                    i.outcome.clone().into(),
                    i.notes.clone().into(),
                    now.into(),
                ],
                payload: self.codec.interaction(i),
            })
            .collect();
        self.record(
            "interactions",
            "profile_interactions",
            &[
                "id",
                "customer_id",
                "kind",
                "occurred_at",
                "rep",
                "outcome",
                "notes",
                "create_time",
            ],
            ChangeKind::Interaction,
            &refs,
            None,
            rows,
            now,
        )
        .await
    }

    /// Inserts the rows that are new (by id) and appends one feed entry per
    /// new row, all in one transaction. Concurrent replays of the same ids
    /// are safe: the unique index decides, and the loser counts duplicates.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        field: &str,
        table: &'static str,
        columns: &[&'static str],
        kind: ChangeKind,
        customer_ids: &[&str],
        currencies: Option<&[&str]>,
        rows: Vec<Row>,
        now: DateTime<Utc>,
    ) -> Result<BatchOutcome, ApiError> {
        if rows.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let txn = crate::begin_write(&self.db).await?;
        self.check_customers(&txn, field, customer_ids, currencies)
            .await?;

        let mut seen_in_batch = HashSet::with_capacity(rows.len());
        let unique: Vec<&Row> = rows
            .iter()
            .filter(|r| seen_in_batch.insert(r.id.as_str()))
            .collect();
        let values = unique.iter().map(|r| r.values.clone()).collect();
        let mut inserted: HashSet<String> = HashSet::with_capacity(unique.len());
        for r in bulk::insert(
            &txn,
            table,
            columns,
            values,
            bulk::Conflict::Skip(&["id"]),
            Some("id"),
        )
        .await?
        {
            inserted.insert(r.try_get::<String>("", "id").map_err(db_error)?);
        }
        let changes: Vec<NewChange> = unique
            .into_iter()
            .filter(|r| inserted.contains(&r.id))
            .map(|r| NewChange {
                kind,
                customer_id: r.customer_id.clone(),
                payload: r.payload.clone(),
            })
            .collect();
        let last = feed::append(&txn, changes, now).await?;
        txn.commit().await.map_err(db_error)?;
        self.committed(last);
        Ok(BatchOutcome {
            accepted: inserted.len(),
            duplicates: rows.len() - inserted.len(),
        })
    }

    /// Every referenced customer must exist and not be erased.
    ///
    /// With `currencies` (a transaction batch: each row's currency), each
    /// purchase must also be in the currency of the customer's earlier
    /// ones (or of its first in this batch): scoring adds up a customer's
    /// amounts (RFM monetary, CLV, profitability) and reports the sum in
    /// that currency, so a second currency would make every one of those
    /// figures wrong without a word.
    async fn check_customers<C: ConnectionTrait>(
        &self,
        txn: &C,
        field: &str,
        customer_ids: &[&str],
        currencies: Option<&[&str]>,
    ) -> Result<(), ApiError> {
        let mut unique: Vec<String> = customer_ids
            .iter()
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .map(str::to_owned)
            .collect();
        unique.sort_unstable();
        let purchases = currencies.is_some();
        // id -> (erased, the currency of its purchases so far)
        let mut state: HashMap<String, (bool, Option<String>)> =
            HashMap::with_capacity(unique.len());
        for chunk in unique.chunks(1_000) {
            state.extend(
                customer_states(txn, chunk, purchases, false)
                    .await?
                    .into_iter()
                    .map(|(id, erased, currency)| (id, (erased.is_some(), currency))),
            );
        }
        // A customer without purchases yet gets its currency from this
        // batch, and two batches at once must not give it two. So those
        // customers' rows are locked (in id order: two batches cannot
        // deadlock), and their purchases read again in a statement of its
        // own: in PostgreSQL's read committed mode it sees what a batch
        // that held the lock before committed. (SQLite runs one writer at a
        // time.) Customers who have bought before need no lock: their
        // currency cannot change.
        if purchases {
            let first: Vec<String> = unique
                .iter()
                .filter(|id| matches!(state.get(*id), Some((false, None))))
                .cloned()
                .collect();
            for chunk in first.chunks(1_000) {
                for (id, erased, currency) in customer_states(txn, chunk, true, true).await? {
                    // Read under the lock: an erasure that committed since counts too.
                    state.insert(id, (erased.is_some(), currency));
                }
            }
        }
        let mut v = Violations::new();
        for (i, id) in customer_ids.iter().enumerate() {
            match state.get_mut(*id) {
                None => v.add(
                    format!("{field}[{i}].customer_id"),
                    format!("unknown customer {id:?}"),
                ),
                Some((true, _)) => v.add(
                    format!("{field}[{i}].customer_id"),
                    format!("customer {id:?} was erased"),
                ),
                Some((false, known)) => {
                    let Some(currency) = currencies.map(|c| c[i]) else {
                        continue;
                    };
                    match known {
                        Some(k) if k != currency => v.add(
                            format!("{field}[{i}].amount.currency_code"),
                            format!(
                                "customer {id:?} buys in {k}, not {currency}: one \
                                 customer's transactions share one currency"
                            ),
                        ),
                        Some(_) => {}
                        None => *known = Some(currency.to_owned()),
                    }
                }
            }
        }
        v.finish()
    }

    /// One customer's transactions, newest first, after `cursor`.
    pub async fn list_transactions(
        &self,
        customer_id: &str,
        limit: u64,
        cursor: Option<&Cursor>,
    ) -> Result<Vec<Transaction>, ApiError> {
        let mut q =
            transaction::Entity::find().filter(transaction::Column::CustomerId.eq(customer_id));
        if let Some(c) = cursor {
            let at = DateTime::parse_from_rfc3339(&c.key)
                .map_err(|_| ApiError::invalid_field("page_token", "is not a valid page token"))?
                .with_timezone(&Utc);
            q = q.filter(
                sea_orm::Condition::any()
                    .add(transaction::Column::OccurredAt.lt(at))
                    .add(
                        sea_orm::Condition::all()
                            .add(transaction::Column::OccurredAt.eq(at))
                            .add(transaction::Column::Id.lt(c.id.clone())),
                    ),
            );
        }
        q.order_by_desc(transaction::Column::OccurredAt)
            .order_by_desc(transaction::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(transaction_from_model)
            .collect()
    }

    /// Everything recorded about one customer, oldest first (for export).
    pub async fn activity_of(
        &self,
        customer_id: &str,
    ) -> Result<(Vec<Transaction>, Vec<Event>, Vec<Interaction>), ApiError> {
        let transactions = transaction::Entity::find()
            .filter(transaction::Column::CustomerId.eq(customer_id))
            .order_by_asc(transaction::Column::OccurredAt)
            .all(&self.db)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(transaction_from_model)
            .collect::<Result<_, _>>()?;
        let events = event::Entity::find()
            .filter(event::Column::CustomerId.eq(customer_id))
            .order_by_asc(event::Column::OccurredAt)
            .all(&self.db)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(event_from_model)
            .collect::<Result<_, _>>()?;
        let interactions = interaction::Entity::find()
            .filter(interaction::Column::CustomerId.eq(customer_id))
            .order_by_asc(interaction::Column::OccurredAt)
            .all(&self.db)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(interaction_from_model)
            .collect::<Result<_, _>>()?;
        Ok((transactions, events, interactions))
    }

    /// Removes free text from one customer's events and interactions.
    pub(super) async fn scrub_activity<C: ConnectionTrait>(
        txn: &C,
        customer_id: &str,
    ) -> Result<(), ApiError> {
        txn.execute(
            Query::update()
                .table("profile_events")
                .value("properties", "{}")
                .and_where(Expr::col("customer_id").eq(customer_id)),
        )
        .await
        .map_err(db_error)?;
        txn.execute(
            Query::update()
                .table("profile_interactions")
                .value("notes", "")
                .and_where(Expr::col("customer_id").eq(customer_id)),
        )
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

fn corrupt(what: &str) -> ApiError {
    ApiError::internal(format!("stored {what} is not valid"))
}

fn transaction_from_model(m: transaction::Model) -> Result<Transaction, ApiError> {
    let currency = Currency::parse(&m.currency).map_err(|_| corrupt("currency"))?;
    Ok(Transaction {
        id: m.id,
        customer_id: m.customer_id,
        occurred_at: m.occurred_at,
        amount: Money {
            currency,
            nanos: m.amount_nanos,
        },
        cost: m.cost_nanos.map(|nanos| Money { currency, nanos }),
        channel: m.channel,
        product_id: m.product_id,
        category: m.category,
        quantity: m.quantity,
        region: m.region,
    })
}

fn event_from_model(m: event::Model) -> Result<Event, ApiError> {
    Ok(Event {
        id: m.id,
        customer_id: m.customer_id,
        kind: EventKind::parse(&m.kind).ok_or_else(|| corrupt("event kind"))?,
        occurred_at: m.occurred_at,
        properties: serde_json::from_str(&m.properties).unwrap_or_default(),
    })
}

fn interaction_from_model(m: interaction::Model) -> Result<Interaction, ApiError> {
    Ok(Interaction {
        id: m.id,
        customer_id: m.customer_id,
        kind: InteractionKind::parse(&m.kind).ok_or_else(|| corrupt("interaction kind"))?,
        occurred_at: m.occurred_at,
        rep: m.rep,
        outcome: m.outcome,
        notes: m.notes,
    })
}

/// (id, erase time, the currency of one of its purchases when `purchases`)
/// of the customers `ids` that exist; `lock` first locks their rows (then
/// reads in a second statement, see `check_customers`).
async fn customer_states<C: ConnectionTrait>(
    txn: &C,
    ids: &[String],
    purchases: bool,
    lock: bool,
) -> Result<Vec<(String, Option<DateTime<Utc>>, Option<String>)>, ApiError> {
    let select = || {
        customer::Entity::find()
            .select_only()
            .column(customer::Column::Id)
            .column(customer::Column::EraseTime)
            .filter(customer::Column::Id.is_in(crate::query::padded(ids)))
    };
    if lock {
        select()
            .order_by_asc(customer::Column::Id)
            .lock_exclusive()
            .into_tuple::<(String, Option<DateTime<Utc>>)>()
            .all(txn)
            .await
            .map_err(db_error)?;
    }
    let currency = if purchases {
        // One row per customer, through the (customer_id, occurred_at)
        // index, however many purchases it has.
        let first = Query::select()
            .column((transaction::Entity, transaction::Column::Currency))
            .from(transaction::Entity)
            .and_where(
                Expr::col((transaction::Entity, transaction::Column::CustomerId))
                    .equals((customer::Entity, customer::Column::Id)),
            )
            .limit(1)
            .to_owned();
        Expr::SubQuery(None, Box::new(first.into()))
    } else {
        Expr::val(None::<String>)
    };
    select()
        .expr_as(currency, "currency")
        .into_tuple()
        .all(txn)
        .await
        .map_err(db_error)
}
