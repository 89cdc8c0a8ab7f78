//! Reading large results from PostgreSQL with binary `COPY ... TO STDOUT`:
//! each row comes as a few length-prefixed fields, with no per-row result
//! metadata and no text formatting, and is handed to a [`CopyRows`] as it
//! is parsed, so nothing but what the caller keeps is held.

use futures::TryStreamExt;
use patron_domain::ApiError;
use sea_orm::sqlx::{self, Connection, Postgres, pool::PoolConnection};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::db_error;

/// What takes the rows of a binary COPY.
pub(crate) trait CopyRows {
    /// Fields per row (at most [`MAX_FIELDS`]).
    const FIELDS: usize;
    /// Takes one whole row: each field's bytes, in order (NULLs are
    /// refused before this is called).
    fn row(&mut self, fields: &[&[u8]]) -> Result<(), ApiError>;
}

pub(crate) const MAX_FIELDS: usize = 16;

/// COPY messages (one row each) parsed between yields of the runtime
/// worker: a few milliseconds of work.
const YIELD_EVERY: u32 = 16_384;

/// Runs `copy` (a `COPY (...) TO STDOUT (FORMAT binary)` statement) in a
/// read-only transaction on a connection of its own, first importing
/// `snapshot` (from `pg_export_snapshot`) when given, and feeds its rows to
/// `out`.
pub(crate) async fn copy_out<R: CopyRows>(
    pool: &sqlx::PgPool,
    snapshot: Option<&str>,
    copy: &str,
    mut out: R,
) -> Result<R, ApiError> {
    // A snapshot id is hex digits and dashes; it is spliced into SQL.
    if let Some(snapshot) = snapshot
        && (snapshot.is_empty() || !snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
    {
        return Err(ApiError::internal(format!(
            "unexpected snapshot id {snapshot:?}"
        )));
    }
    let mut conn: PoolConnection<Postgres> = pool.acquire().await.map_err(sqlx_error)?;
    let read = async {
        let mut txn = conn
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(sqlx_error)?;
        if let Some(snapshot) = snapshot {
            // Checked above: hex digits and dashes only.
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "SET TRANSACTION SNAPSHOT '{snapshot}'"
            )))
            .execute(&mut *txn)
            .await
            .map_err(sqlx_error)?;
        }
        {
            let mut stream = txn.copy_out_raw(copy).await.map_err(sqlx_error)?;
            let mut reader = CopyReader::default();
            let mut chunks = 0u32;
            while let Some(chunk) = stream.try_next().await.map_err(sqlx_error)? {
                reader.feed(&chunk, &mut out)?;
                // While PostgreSQL keeps the socket full this loop never
                // waits, and tokio takes the worker back only after many
                // socket reads (100 ms and more of parsing): every other
                // task on that worker (the feed consumer's round trips,
                // calls) would wait that long at each step.
                chunks = chunks.wrapping_add(1);
                if chunks.is_multiple_of(YIELD_EVERY) {
                    tokio::task::yield_now().await;
                }
            }
            reader.finish()?;
        }
        txn.commit().await.map_err(sqlx_error)?;
        Ok(out)
    };
    let result = read.await;
    if result.is_err() {
        // It may have stopped mid-COPY or mid-transaction: do not hand it
        // back to the pool.
        conn.close_on_drop();
    }
    result
}

/// All of `SELECT {columns} FROM {table}` as `txn`'s exported `snapshot`
/// sees it (see `purchase_days::export_snapshot`), with [`copy_out`] in two
/// halves by block number, each on a connection and a task of its own, so
/// both cores parse. `part(bytes, rows)` makes the empty taker of a half
/// from a size: the first half's is the whole table's, as the caller
/// appends the second half to it, the second's its own share (bytes, and
/// the planner's count of rows: 0 before the first ANALYZE, when the
/// takers grow as they fill).
pub(crate) async fn copy_out_in_halves<C, R>(
    txn: &C,
    pool: &sqlx::PgPool,
    snapshot: &str,
    table: &str,
    columns: &str,
    part: impl Fn(usize, usize) -> R,
) -> Result<(R, R), ApiError>
where
    C: ConnectionTrait,
    R: CopyRows + Send + 'static,
{
    // The table's size in blocks now (pg_class.relpages is only an
    // estimate, 0 until the table is first analyzed), and the planner's
    // count of its rows (-1 before the first ANALYZE).
    let (pages, block, rows): (i64, i64, i64) = txn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT pg_relation_size('{table}') / current_setting('block_size')::int8 AS pages, \
                 current_setting('block_size')::int8 AS block, \
                 (SELECT reltuples::int8 FROM pg_class WHERE oid = '{table}'::regclass) AS rows"
            ),
        ))
        .await
        .map_err(db_error)?
        .map(|r| {
            Ok::<_, sea_orm::DbErr>((
                r.try_get("", "pages")?,
                r.try_get("", "block")?,
                r.try_get("", "rows")?,
            ))
        })
        .transpose()
        .map_err(db_error)?
        .unwrap_or((0, 8192, 0));
    // Two halves by block number; the second is open-ended, so rows in
    // blocks added since are read too (those the snapshot sees).
    let middle = pages / 2;
    let half = |condition: String, blocks: i64| {
        let (pool, snapshot) = (pool.clone(), snapshot.to_owned());
        let rows = if pages > 0 { rows * blocks / pages } else { 0 };
        let out = part(
            usize::try_from(blocks * block).unwrap_or(0),
            usize::try_from(rows).unwrap_or(0),
        );
        let copy = format!(
            "COPY (SELECT {columns} FROM {table} WHERE {condition}) TO STDOUT (FORMAT binary)"
        );
        tokio::spawn(async move { copy_out(&pool, Some(&snapshot), &copy, out).await })
    };
    let first = half(format!("ctid < '({middle},0)'::tid"), pages);
    let second = half(format!("ctid >= '({middle},0)'::tid"), pages - middle);
    let joined = |r: Result<Result<R, ApiError>, tokio::task::JoinError>| {
        r.map_err(|e| ApiError::internal(format!("reading {table}: {e}")))?
    };
    let (a, b) = tokio::join!(first, second);
    Ok((joined(a)?, joined(b)?))
}

pub(crate) fn sqlx_error(e: sqlx::Error) -> ApiError {
    db_error(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(
        std::sync::Arc::new(e),
    )))
}

/// Parses PostgreSQL's binary COPY format, fed in chunks that may split a
/// row.
#[derive(Default)]
pub(crate) struct CopyReader {
    pending: Vec<u8>,
    header_done: bool,
    ended: bool,
}

/// The 11-byte signature that opens a binary COPY.
pub(crate) const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

impl CopyReader {
    pub(crate) fn feed<R: CopyRows>(&mut self, chunk: &[u8], out: &mut R) -> Result<(), ApiError> {
        // PostgreSQL sends each row as its own message: parse straight from
        // it, and keep only a partial row's bytes for the next chunk.
        if self.pending.is_empty() {
            let used = self.parse(chunk, out)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            self.pending.extend_from_slice(chunk);
            let pending = std::mem::take(&mut self.pending);
            let used = self.parse(&pending, out)?;
            self.pending = pending;
            self.pending.drain(..used);
        }
        Ok(())
    }

    /// Parses what `buf` holds completely (header, rows, trailer): the bytes
    /// used.
    fn parse<R: CopyRows>(&mut self, buf: &[u8], out: &mut R) -> Result<usize, ApiError> {
        let mut at = 0;
        if !self.header_done {
            // Signature, flags (4 bytes), header extension length (4) and
            // the extension itself.
            if buf.len() < SIGNATURE.len() + 8 {
                return Ok(0);
            }
            if &buf[..SIGNATURE.len()] != SIGNATURE {
                return Err(bad("missing signature"));
            }
            let ext = be_u32(&buf[SIGNATURE.len() + 4..]) as usize;
            at = SIGNATURE.len() + 8 + ext;
            if buf.len() < at {
                return Ok(0);
            }
            self.header_done = true;
        }
        while !self.ended {
            match row(&buf[at..], out)? {
                Some(Row::Data(used)) => at += used,
                Some(Row::Trailer) => {
                    at += 2;
                    self.ended = true;
                }
                None => break,
            }
        }
        if self.ended && at < buf.len() {
            return Err(bad("data after the trailer"));
        }
        Ok(at)
    }

    pub(crate) fn finish(&self) -> Result<(), ApiError> {
        if self.ended && self.pending.is_empty() {
            Ok(())
        } else {
            Err(bad("the stream ended before its trailer"))
        }
    }
}

/// What [`row`] found.
enum Row {
    /// A row of that many bytes, handed over.
    Data(usize),
    /// The end of the stream (2 bytes).
    Trailer,
}

/// Parses one row (or the trailer) at the start of `buf` and hands a whole
/// row to `out`; `None` if `buf` holds only part of it.
fn row<R: CopyRows>(buf: &[u8], out: &mut R) -> Result<Option<Row>, ApiError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fields = i16::from_be_bytes([buf[0], buf[1]]);
    if fields == -1 {
        return Ok(Some(Row::Trailer));
    }
    if usize::try_from(fields).ok() != Some(R::FIELDS) {
        return Err(bad(&format!("a row of {fields} fields, not {}", R::FIELDS)));
    }
    let mut at = 2;
    let mut values: [&[u8]; MAX_FIELDS] = [&[]; MAX_FIELDS];
    for value in values.iter_mut().take(R::FIELDS) {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let len = usize::try_from(len).map_err(|_| bad("a NULL in a NOT NULL column"))?;
        if buf.len() < at + 4 + len {
            return Ok(None);
        }
        *value = &buf[at + 4..at + 4 + len];
        at += 4 + len;
    }
    out.row(&values[..R::FIELDS])?;
    Ok(Some(Row::Data(at)))
}

/// A field's value as text.
pub(crate) fn text(field: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(field).map_err(|_| bad("text that is not UTF-8"))
}

/// A field's value as an `int4`.
pub(crate) fn int4(field: &[u8]) -> Result<i32, ApiError> {
    match field {
        [a, b, c, d] => Ok(i32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(bad("an int4 field of unexpected width")),
    }
}

/// A field's value as a `bool`.
pub(crate) fn boolean(field: &[u8]) -> Result<bool, ApiError> {
    match field {
        [b] => Ok(*b != 0),
        _ => Err(bad("a bool field of unexpected width")),
    }
}

/// A field's value as an `int8`.
pub(crate) fn int8(field: &[u8]) -> Result<i64, ApiError> {
    let bytes: [u8; 8] = field
        .try_into()
        .map_err(|_| bad("an int8 field of unexpected width"))?;
    Ok(i64::from_be_bytes(bytes))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

pub(crate) fn bad(what: &str) -> ApiError {
    ApiError::internal(format!("reading with binary COPY: {what}"))
}
