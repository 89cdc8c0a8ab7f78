//! Segments: CRUD, preview, streamed target lists, live membership and its
//! history. Evaluation reads the view through one consistent snapshot, with
//! the pushable part of the rule as bound query parameters and the whole
//! rule checked on every candidate row.

use std::{collections::HashMap, pin::Pin, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures::Stream;
use patron_domain::{
    ApiError, ErrorCode, Violations,
    customer::parse_etag,
    segment::{Field, Record, Rule, channel_index, epoch_day},
};
use patron_proto::{
    campaign as pb,
    wire::{TargetText, TargetsEncoder},
};
use patron_runtime::{
    convert::{now, optional_timestamp, to_timestamp, today},
    error::{ApiResult, to_status},
};
use patron_store::{
    campaign::{CampaignStore, Scan, SegmentRow, Snapshot, ViewRow, consent_column, prefilter},
    paging,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::memory::{MemoryView, Rows};

/// Rows read from the store per page.
pub(crate) const SCAN_PAGE: u64 = 5_000;
/// Targets per streamed message.
pub(crate) const TARGETS_PER_MESSAGE: usize = 1_000;
/// Messages buffered ahead of a slow client (backpressure bounds memory).
const STREAM_BUFFER: usize = 4;

pub(crate) type TargetStream =
    Pin<Box<dyn Stream<Item = Result<pb::StreamTargetsResponse, Status>> + Send>>;
pub(crate) type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchSegmentResponse, Status>> + Send>>;

/// Today as days since 1970-01-01 (UTC): the day date helpers are relative to.
pub(crate) fn today_day() -> i32 {
    epoch_day(today())
}

/// Where a scan reads: the in-memory mirror when it is loaded (one immutable
/// version), else one database snapshot. Either way every page of a scan
/// sees the same state.
pub(crate) enum Source {
    Memory(Arc<Rows>),
    Database(Snapshot),
}

impl Source {
    pub(crate) async fn open(store: &CampaignStore, memory: &MemoryView) -> ApiResult<Self> {
        Ok(match memory.fresh().await? {
            Some(rows) => Source::Memory(rows),
            None => Source::Database(store.snapshot().await?),
        })
    }

    /// The view revision this source reflects.
    pub(crate) async fn revision(&self) -> ApiResult<i64> {
        match self {
            Source::Memory(rows) => Ok(rows.revision),
            Source::Database(s) => s.revision().await,
        }
    }

    pub(crate) async fn close(self) {
        if let Source::Database(s) = self {
            s.close().await;
        }
    }
}

/// A rule ready to run against the view.
#[derive(Clone)]
pub(crate) struct Evaluation {
    pub(crate) rule: Rule,
    pub(crate) scan: Scan,
    /// Index into `Record::consent` of the requested channel.
    pub(crate) consent: Option<usize>,
    pub(crate) today: i32,
}

impl Evaluation {
    /// `channel` ("" = none) restricts to customers with marketing consent.
    pub(crate) fn new(rule: Rule, channel: &str, channel_field: &str) -> ApiResult<Self> {
        let consent = if channel.is_empty() {
            None
        } else {
            Some(consent_column(channel).ok_or_else(|| {
                ApiError::invalid_field(
                    channel_field,
                    format!("{channel:?} is not a channel (email, sms, phone, push, post)"),
                )
            })?)
        };
        let today = today_day();
        Ok(Self {
            scan: Scan {
                prefilter: prefilter(&rule.expr, today),
                consent_column: consent,
            },
            consent: channel_index(channel),
            rule,
            today,
        })
    }

    pub(crate) fn matches(&self, row: &ViewRow) -> bool {
        row.selectable()
            && self.consent.is_none_or(|i| row.record.consent[i])
            && self.rule.matches(&row.record, self.today)
    }

    /// Reads every selected customer in customer-id order, calling `each`
    /// with the selected rows of each page (never empty); stops early when
    /// `each` returns false.
    pub(crate) async fn scan<F, Fut>(&self, source: &Source, mut each: F) -> ApiResult<()>
    where
        F: FnMut(Vec<Arc<ViewRow>>) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        match source {
            Source::Memory(rows) => {
                for chunk in rows.chunks() {
                    let selected: Vec<Arc<ViewRow>> =
                        chunk.iter().filter(|r| self.matches(r)).cloned().collect();
                    if !selected.is_empty() && !each(selected).await {
                        return Ok(());
                    }
                }
                Ok(())
            }
            Source::Database(snapshot) => {
                let mut after = String::new();
                loop {
                    let page = snapshot.page(&self.scan, &after, SCAN_PAGE).await?;
                    let Some(last) = page.last() else {
                        return Ok(());
                    };
                    after = last.record.customer_id.clone();
                    let full = page.len() as u64 == SCAN_PAGE;
                    let selected: Vec<Arc<ViewRow>> = page
                        .into_iter()
                        .filter(|r| self.matches(r))
                        .map(Arc::new)
                        .collect();
                    if (!selected.is_empty() && !each(selected).await) || !full {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// A target with contact fields and the values of the fields the rule read.
    pub(crate) fn target(&self, row: &ViewRow) -> pb::Target {
        target(&self.rule, row, self.today)
    }
}

/// A target with contact fields and the values of the fields the rule read.
pub(crate) fn target(rule: &Rule, row: &ViewRow, today: i32) -> pb::Target {
    let mut fields = HashMap::with_capacity(rule.fields.len());
    TargetFields::of(rule).render(&row.record, today, &mut String::new(), |name, value| {
        fields.insert(name.to_owned(), value.to_owned());
    });
    pb::Target {
        customer_id: row.record.customer_id.clone(),
        external_id: row.record.external_id.clone(),
        display_name: row.display_name.clone(),
        email: row.email.clone(),
        phone: row.phone.clone(),
        fields,
    }
}

/// Writes targets straight into a response body: the same bytes as
/// [`target`] encoded by prost, without building the message (the
/// StreamTargets hot path: a million rows a second).
pub(crate) struct TargetWriter {
    fields: TargetFields,
    today: i32,
    encoder: TargetsEncoder,
    scratch: String,
}

impl TargetWriter {
    pub(crate) fn new(rule: &Rule, today: i32) -> Self {
        Self {
            fields: TargetFields::of(rule),
            today,
            encoder: TargetsEncoder::default(),
            scratch: String::new(),
        }
    }

    /// Appends one target; returns how many the current message holds.
    pub(crate) fn write(&mut self, row: &ViewRow) -> usize {
        let (e, r) = (&mut self.encoder, &row.record);
        e.text(TargetText::CustomerId, &r.customer_id);
        e.text(TargetText::ExternalId, &r.external_id);
        e.text(TargetText::DisplayName, &row.display_name);
        e.text(TargetText::Email, &row.email);
        e.text(TargetText::Phone, &row.phone);
        self.fields
            .render(r, self.today, &mut self.scratch, |name, value| {
                e.field(name, value)
            });
        e.end_target();
        e.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.encoder.is_empty()
    }

    /// The targets written since the last call, as one message.
    pub(crate) fn finish(&mut self) -> pb::StreamTargetsResponse {
        self.encoder.finish()
    }
}

/// The fields a rule read, resolved once per request rather than looked up
/// by name for every row.
struct TargetFields(Vec<(&'static str, Rendered)>);

#[derive(Clone, Copy)]
enum Rendered {
    /// `has(customer.tags, ...)`: every tag, comma-separated.
    Tags,
    /// `bought_category(...)`: every category, comma-separated.
    Categories,
    Cell(Field),
    /// Not in the catalogue (cannot happen for a type-checked rule): "".
    Nothing,
}

impl TargetFields {
    fn of(rule: &Rule) -> Self {
        Self(
            rule.fields
                .iter()
                .map(|&name| {
                    let how = match name {
                        "customer.tags" => Rendered::Tags,
                        "categories" => Rendered::Categories,
                        name => Field::by_name(name)
                            .map_or(Rendered::Nothing, |d| Rendered::Cell(d.field)),
                    };
                    (name, how)
                })
                .collect(),
        )
    }

    /// Renders each field's value as text into `scratch` and hands it to
    /// `emit` with the field's name (a missing value is "").
    fn render(
        &self,
        r: &Record,
        today: i32,
        scratch: &mut String,
        mut emit: impl FnMut(&'static str, &str),
    ) {
        use std::fmt::Write;
        for &(name, how) in &self.0 {
            scratch.clear();
            match how {
                Rendered::Tags => join_into(scratch, &r.tags),
                Rendered::Categories => join_into(scratch, &r.categories),
                Rendered::Cell(field) => {
                    if let Some(v) = r.cell(field, today) {
                        let _ = write!(scratch, "{v}");
                    }
                }
                Rendered::Nothing => {}
            }
            emit(name, scratch);
        }
    }
}

fn join_into(out: &mut String, items: &[String]) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
}

/// Parses a rule, INVALID_ARGUMENT on `field` with the position otherwise.
pub(crate) fn parse_rule(text: &str, field: &str) -> ApiResult<Rule> {
    Rule::parse(text).map_err(|e| e.into_api_error(field))
}

const MAX_NAME: usize = 200;
const MAX_DESCRIPTION: usize = 2_000;

fn check_text(v: &mut Violations, field: &str, value: &str, max: usize) {
    if value.len() > max {
        v.add(field, format!("must be at most {max} bytes"));
    }
}

pub(crate) fn to_proto(s: &SegmentRow) -> pb::Segment {
    pb::Segment {
        id: s.id.clone(),
        display_name: s.display_name.clone(),
        expression: s.expression.clone(),
        description: s.description.clone(),
        fields: Rule::parse(&s.expression)
            .map(|r| r.fields.iter().map(|f| (*f).to_owned()).collect())
            .unwrap_or_default(),
        create_time: Some(to_timestamp(s.create_time)),
        update_time: Some(to_timestamp(s.update_time)),
        etag: format!("\"{}\"", s.version),
    }
}

pub(crate) async fn create(
    store: &CampaignStore,
    req: pb::CreateSegmentRequest,
) -> ApiResult<pb::Segment> {
    let Some(s) = req.segment else {
        return Err(ApiError::invalid_field("segment", "is required"));
    };
    let mut v = Violations::new();
    check_text(&mut v, "segment.display_name", &s.display_name, MAX_NAME);
    check_text(
        &mut v,
        "segment.description",
        &s.description,
        MAX_DESCRIPTION,
    );
    if s.display_name.trim().is_empty() {
        v.add("segment.display_name", "is required");
    }
    v.take(parse_rule(&s.expression, "segment.expression"));
    v.finish()?;
    let at = now();
    let row = SegmentRow {
        id: uuid::Uuid::now_v7().to_string(),
        display_name: s.display_name,
        expression: s.expression,
        description: s.description,
        create_time: at,
        update_time: at,
        version: 1,
        evaluated_revision: -1,
        evaluated_day: -1,
        evaluated_version: -1,
        members: 0,
        last_change: 0,
    };
    store.insert_segment(&row).await?;
    Ok(to_proto(&row))
}

pub(crate) async fn get(store: &CampaignStore, id: &str) -> ApiResult<pb::Segment> {
    let mut v = Violations::new();
    patron_domain::activity::check_id(&mut v, "id", id);
    v.finish()?;
    Ok(to_proto(&store.segment(id).await?))
}

pub(crate) async fn list(
    store: &CampaignStore,
    req: pb::ListSegmentsRequest,
) -> ApiResult<pb::ListSegmentsResponse> {
    let size = paging::page_size(req.page_size, 50, 1_000)?;
    let fingerprint = paging::fingerprint(&["segments"]);
    let after = paging::decode(&req.page_token, fingerprint)?;
    let rows = store
        .segments(after.as_ref().map_or("", |c| c.id.as_str()), size + 1)
        .await?;
    let more = rows.len() as u64 > size;
    let segments: Vec<pb::Segment> = rows.iter().take(size as usize).map(to_proto).collect();
    let next_page_token =
        paging::next_by_id(more, segments.last().map(|s| s.id.as_str()), fingerprint);
    Ok(pb::ListSegmentsResponse {
        segments,
        next_page_token,
    })
}

pub(crate) async fn update(
    store: &CampaignStore,
    req: pb::UpdateSegmentRequest,
) -> ApiResult<pb::Segment> {
    let Some(s) = req.segment else {
        return Err(ApiError::invalid_field("segment", "is required"));
    };
    let mut v = Violations::new();
    patron_domain::activity::check_id(&mut v, "segment.id", &s.id);
    v.finish()?;
    let mut row = store.segment(&s.id).await?;
    if !s.etag.is_empty() {
        match parse_etag(&s.etag) {
            Some(e) if e == row.version => {}
            Some(_) => {
                return Err(ApiError::aborted(
                    "STALE_ETAG",
                    "the segment changed since it was read; read it again",
                ));
            }
            None => {
                return Err(ApiError::invalid_field(
                    "segment.etag",
                    "is not an etag of this API",
                ));
            }
        }
    }
    // Without a mask, the fields sent (AIP-134's implied mask): a client
    // that changes the rule alone keeps the segment's name and description.
    let paths: Vec<String> = match &req.update_mask {
        Some(m) if !m.paths.is_empty() => m.paths.clone(),
        _ => [
            ("display_name", &s.display_name),
            ("expression", &s.expression),
            ("description", &s.description),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(path, _)| path.to_owned())
        .collect(),
    };
    let mut v = Violations::new();
    for path in &paths {
        match path.as_str() {
            "display_name" => {
                check_text(&mut v, "segment.display_name", &s.display_name, MAX_NAME);
                if s.display_name.trim().is_empty() {
                    v.add("segment.display_name", "is required");
                }
                row.display_name = s.display_name.clone();
            }
            "expression" => {
                v.take(parse_rule(&s.expression, "segment.expression"));
                row.expression = s.expression.clone();
            }
            "description" => {
                check_text(
                    &mut v,
                    "segment.description",
                    &s.description,
                    MAX_DESCRIPTION,
                );
                row.description = s.description.clone();
            }
            other => v.add(
                "update_mask",
                format!(
                    "unknown or read-only path {other:?} (display_name, expression, description)"
                ),
            ),
        }
    }
    v.finish()?;
    let expected = row.version;
    row.version += 1;
    row.update_time = now();
    store.update_segment(&row, expected).await?;
    Ok(to_proto(&store.segment(&row.id).await?))
}

pub(crate) async fn delete(
    store: &CampaignStore,
    id: &str,
) -> ApiResult<pb::DeleteSegmentResponse> {
    let mut v = Violations::new();
    patron_domain::activity::check_id(&mut v, "id", id);
    v.finish()?;
    store.delete_segment(id).await?;
    Ok(pb::DeleteSegmentResponse {})
}

pub(crate) async fn preview(
    store: &CampaignStore,
    memory: &MemoryView,
    req: pb::PreviewSegmentRequest,
) -> ApiResult<pb::PreviewSegmentResponse> {
    let mut v = Violations::new();
    let rule = v.take(parse_rule(&req.expression, "expression"));
    let sample_size = match req.sample_size {
        0 => 10,
        n @ 1..=100 => n as usize,
        _ => {
            v.add("sample_size", "must be between 0 (default 10) and 100");
            0
        }
    };
    v.finish()?;
    let eval = Evaluation::new(rule.expect("checked"), "", "")?;
    let source = Source::open(store, memory).await?;
    let mut count = 0i64;
    let mut sample = Vec::new();
    eval.scan(&source, |rows: Vec<Arc<ViewRow>>| {
        count += rows.len() as i64;
        for row in rows.iter().take(sample_size.saturating_sub(sample.len())) {
            sample.push(eval.target(row));
        }
        async { true }
    })
    .await?;
    source.close().await;
    Ok(pb::PreviewSegmentResponse { count, sample })
}

/// The rule a target-list request names: a stored segment or an expression.
async fn requested_rule(store: &CampaignStore, req: &pb::StreamTargetsRequest) -> ApiResult<Rule> {
    match (req.segment_id.is_empty(), req.expression.is_empty()) {
        (false, true) => {
            let s = store.segment(&req.segment_id).await?;
            parse_rule(&s.expression, "segment_id")
        }
        (true, false) => parse_rule(&req.expression, "expression"),
        (true, true) => Err(ApiError::invalid_field(
            "segment_id",
            "one of segment_id or expression is required",
        )),
        (false, false) => Err(ApiError::invalid_field(
            "expression",
            "give segment_id or expression, not both",
        )),
    }
}

/// Streams the selected customers from one snapshot, in batches, as they
/// are found: the first batch leaves before the list is complete, and a
/// slow client holds the scan back (the channel is bounded) rather than
/// growing the server's memory.
pub(crate) async fn stream_targets(
    store: CampaignStore,
    memory: MemoryView,
    req: pb::StreamTargetsRequest,
    shutdown: CancellationToken,
) -> ApiResult<TargetStream> {
    let rule = requested_rule(&store, &req).await?;
    let eval = Evaluation::new(rule, &req.channel, "channel")?;
    let source = Source::open(&store, &memory).await?;
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        let mut writer = TargetWriter::new(&eval.rule, eval.today);
        let result = eval
            .scan(&source, |rows: Vec<Arc<ViewRow>>| {
                let mut ready = Vec::new();
                for row in &rows {
                    if writer.write(row) == TARGETS_PER_MESSAGE {
                        ready.push(writer.finish());
                    }
                }
                let tx = tx.clone();
                let shutdown = shutdown.clone();
                async move {
                    for message in ready {
                        let sent = tokio::select! {
                            r = tx.send(Ok(message)) => r.is_ok(),
                            () = shutdown.cancelled() => false,
                        };
                        if !sent {
                            return false;
                        }
                    }
                    true
                }
            })
            .await;
        source.close().await;
        match result {
            Ok(()) if !writer.is_empty() => {
                let _ = tx.send(Ok(writer.finish())).await;
            }
            Ok(()) => {}
            Err(e) => {
                let _ = tx.send(Err(to_status(e))).await;
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

fn parse_watermark(w: &str) -> ApiResult<Option<i64>> {
    if w.is_empty() {
        return Ok(None);
    }
    w.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid_field("after_watermark", "is not a watermark from WatchSegment")
        })
}

/// Changes per WatchSegment message.
const CHANGES_PER_MESSAGE: u64 = 1_000;

/// Live membership: with no watermark, the current members (ENTERED) first;
/// then every change after the watermark as the watcher records it, until
/// the client goes away or the server shuts down.
pub(crate) async fn watch(
    store: CampaignStore,
    req: pb::WatchSegmentRequest,
    poll: Duration,
    shutdown: CancellationToken,
) -> ApiResult<WatchStream> {
    let mut v = Violations::new();
    patron_domain::activity::check_id(&mut v, "segment_id", &req.segment_id);
    let after = v.take(parse_watermark(&req.after_watermark));
    v.finish()?;
    let after = after.expect("checked");
    let segment = store.segment(&req.segment_id).await?;
    if let Some(w) = after
        && w > segment.last_change
    {
        return Err(ApiError::invalid_field(
            "after_watermark",
            "is ahead of this segment's changes (a watermark of another segment?)",
        ));
    }
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        let send = |msg: ApiResult<pb::WatchSegmentResponse>| {
            let tx = tx.clone();
            let shutdown = shutdown.clone();
            async move {
                tokio::select! {
                    r = tx.send(msg.map_err(to_status)) => r.is_ok(),
                    () = shutdown.cancelled() => false,
                }
            }
        };
        let mut watermark = match after {
            Some(w) => w,
            None => match initial_members(&store, &req.segment_id, poll, &shutdown).await {
                Ok(Some((w, members, at))) => {
                    for chunk in members.chunks(CHANGES_PER_MESSAGE as usize) {
                        let changes = chunk
                            .iter()
                            .map(|id| pb::SegmentChange {
                                customer_id: id.clone(),
                                change: pb::MembershipChange::Entered as i32,
                                watermark: w.to_string(),
                                change_time: Some(to_timestamp(at)),
                            })
                            .collect();
                        if !send(Ok(pb::WatchSegmentResponse { changes })).await {
                            return;
                        }
                    }
                    w
                }
                Ok(None) => return,
                Err(e) => {
                    send(Err(e)).await;
                    return;
                }
            },
        };
        loop {
            let changes = match store
                .segment_changes(&req.segment_id, watermark, CHANGES_PER_MESSAGE)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    send(Err(e)).await;
                    return;
                }
            };
            if let Some(last) = changes.last() {
                watermark = last.change;
                let full = changes.len() as u64 == CHANGES_PER_MESSAGE;
                let msg = pb::WatchSegmentResponse {
                    changes: changes
                        .into_iter()
                        .map(|c| pb::SegmentChange {
                            customer_id: c.customer_id,
                            change: if c.entered {
                                pb::MembershipChange::Entered
                            } else {
                                pb::MembershipChange::Left
                            } as i32,
                            watermark: c.change.to_string(),
                            change_time: Some(to_timestamp(c.change_time)),
                        })
                        .collect(),
                };
                if !send(Ok(msg)).await {
                    return;
                }
                if full {
                    continue;
                }
            }
            // A deleted segment ends the stream.
            match store.segment(&req.segment_id).await {
                Ok(_) => {}
                Err(e) if e.code == ErrorCode::NotFound => {
                    send(Err(e)).await;
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "watch: could not re-read the segment"),
            }
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = shutdown.cancelled() => return,
                () = tx.closed() => return,
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// The current members with the watermark they are current at, once the
/// watcher has evaluated the segment's current rule.
async fn initial_members(
    store: &CampaignStore,
    segment_id: &str,
    poll: Duration,
    shutdown: &CancellationToken,
) -> ApiResult<Option<(i64, Vec<String>, DateTime<Utc>)>> {
    loop {
        if let Some((watermark, members)) = store.membership(segment_id).await? {
            return Ok(Some((watermark, members, now())));
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = shutdown.cancelled() => return Ok(None),
        }
    }
}

pub(crate) async fn history(
    store: &CampaignStore,
    req: pb::GetSegmentHistoryRequest,
) -> ApiResult<pb::SegmentHistory> {
    let mut v = Violations::new();
    patron_domain::activity::check_id(&mut v, "segment_id", &req.segment_id);
    let start = v.take(optional_timestamp(req.start_time.as_ref(), "start_time"));
    let end = v.take(optional_timestamp(req.end_time.as_ref(), "end_time"));
    v.finish()?;
    let end = end.flatten().unwrap_or_else(now);
    let start = start.flatten().unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    if start > end {
        return Err(ApiError::invalid_field(
            "end_time",
            "must not be before start_time",
        ));
    }
    store.segment(&req.segment_id).await?;
    let counts = store
        .segment_counts(&req.segment_id, start, end)
        .await?
        .into_iter()
        .map(|(time, members)| pb::SegmentCount {
            time: Some(to_timestamp(time)),
            members,
        })
        .collect();
    Ok(pb::SegmentHistory { counts })
}

#[cfg(test)]
mod tests {
    use patron_domain::segment::{Record, ScoreFields};
    use prost::Message;

    use super::*;

    #[test]
    fn written_targets_decode_to_the_built_ones() {
        // Every kind of field value: text, tags and categories, numbers,
        // dates, booleans, scores, and values that are missing.
        let rule = Rule::parse(
            "has(customer.tags, \"vip\") or bought_category(\"books\") or customer.region = \"East\" \
             or customer.age >= 30 or consent.email or clv.p_alive > 0.5 \
             or rfm.segment = \"champions\" or days_to_birthday <= 7 or customer.city = \"\"",
        )
        .unwrap();
        let today = 20_000;
        let rows: Vec<ViewRow> = (0..50)
            .map(|i| ViewRow {
                record: Record {
                    customer_id: format!("c-{i}"),
                    external_id: if i % 3 == 0 {
                        String::new()
                    } else {
                        format!("x-{i}")
                    },
                    region: ["East", "West", ""][i % 3].into(),
                    birth_day: (i % 2 == 0).then_some(7_000 + i as i32 * 37),
                    tags: (0..i % 4).map(|t| format!("t{t}")).collect(),
                    categories: if i % 5 == 0 {
                        vec!["books".into(), "toys".into()]
                    } else {
                        vec![]
                    },
                    consent: [i % 2 == 1, false, false, false, false],
                    scores: (i % 4 != 0).then(|| ScoreFields {
                        rfm_segment: "champions".into(),
                        p_alive: 0.01 * i as f64,
                        ..ScoreFields::default()
                    }),
                    ..Record::default()
                },
                display_name: format!("Name {i}"),
                email: if i % 7 == 0 {
                    String::new()
                } else {
                    format!("c{i}@example.com")
                },
                phone: "+44 20 7946 0000".into(),
                ..ViewRow::default()
            })
            .collect();
        let mut writer = TargetWriter::new(&rule, today);
        for (k, row) in rows.iter().enumerate() {
            assert_eq!(writer.write(row), k + 1);
        }
        let bytes = writer.finish().encode_to_vec();
        assert!(writer.is_empty());
        let decoded = pb::StreamTargetsResponse::decode(bytes.as_slice()).unwrap();
        let built: Vec<pb::Target> = rows.iter().map(|r| target(&rule, r, today)).collect();
        assert_eq!(decoded.targets, built);
        assert!(built.iter().all(|t| t.fields.len() == rule.fields.len()));
    }
}
