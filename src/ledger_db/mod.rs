//! The ledger database (G2): PostgreSQL keeps the append-only ledger (B9)
//! and one record per billed request (U1), so what Redis holds does not
//! grow with traffic (G1). Rows are only inserted, idempotent by entry id
//! (`ON CONFLICT DO NOTHING`), in batches of arrays (`unnest`): one round
//! trip per batch, however many rows. The schema is made by versioned
//! migrations (refinery, `migrations/`) at start, under an advisory lock
//! so several instances may start at once. Amounts are integer
//! nano-dollars (`bigint`), times `timestamptz`.
//!
//! No request ever waits on this database: entries reach it through the
//! store's export queue and the exporter (`export`).

pub mod export;

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::money::Nanos;
use crate::pricing::Usage;
use crate::store::{EntryKind, LedgerEntry, RequestStatus, Store, UsageFacts};

refinery::embed_migrations!("migrations");

/// Connections the gateway keeps to PostgreSQL: the exporter and the
/// management reads share them.
const POOL_SIZE: usize = 4;
/// How long a connection, or a wait for one from the pool, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The Owner's ledger view reads at most this many movements, the newest.
pub const LEDGER_VIEW_MAX: i64 = 10_000;
/// The most one database call may take (a PostgreSQL that hangs rather
/// than refuses must not stall the exporter, a view, or shutdown).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// `pg_advisory_lock` key held while migrating (any fixed number).
const MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465;

#[derive(Debug, thiserror::Error)]
pub enum LedgerDbError {
    /// The URL is not a PostgreSQL connection string (it is never echoed:
    /// it may carry a password).
    #[error("ledger_url is not a valid postgres:// URL")]
    BadUrl,
    /// PostgreSQL cannot be reached or refused a statement.
    #[error("ledger database: {0}")]
    Db(String),
    /// A row read back does not make a ledger entry.
    #[error("ledger database: corrupt row: {0}")]
    Corrupt(String),
}

impl From<tokio_postgres::Error> for LedgerDbError {
    fn from(e: tokio_postgres::Error) -> Self {
        LedgerDbError::Db(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for LedgerDbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        LedgerDbError::Db(e.to_string())
    }
}

/// Totals over the per-request records (tests and the operator's checks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestTotals {
    pub requests: i64,
    /// Sum of `cost`, nano-dollars, summed by PostgreSQL in `numeric`.
    pub cost: i128,
}

/// A pool of connections to the ledger database.
pub struct LedgerDb {
    pool: Pool,
    /// Set once the schema is known to be at the latest version.
    migrated: tokio::sync::OnceCell<()>,
}

/// `fut`, or `Db("timed out")` after `CALL_TIMEOUT`.
async fn timed<T>(
    fut: impl std::future::Future<Output = Result<T, LedgerDbError>>,
) -> Result<T, LedgerDbError> {
    tokio::time::timeout(CALL_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| Err(LedgerDbError::Db("timed out".into())))
}

impl LedgerDb {
    /// Connect to `url` and bring the schema to the latest version now
    /// (tests, tools). The gateway uses `open`, which does neither until
    /// first use, so it starts while PostgreSQL is away.
    pub async fn connect(url: &str) -> Result<LedgerDb, LedgerDbError> {
        let db = LedgerDb::open(url)?;
        db.ensure_schema().await?;
        Ok(db)
    }

    /// A pool for `url` (`postgres://user:pass@host:port/db`), without
    /// connecting: fails only on a malformed URL.
    pub fn open(url: &str) -> Result<LedgerDb, LedgerDbError> {
        let mut pg: tokio_postgres::Config = url.parse().map_err(|_| LedgerDbError::BadUrl)?;
        pg.connect_timeout(CONNECT_TIMEOUT);
        pg.application_name("tollgate");
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| LedgerDbError::Db(e.to_string()))?;
        Ok(LedgerDb {
            pool,
            migrated: tokio::sync::OnceCell::new(),
        })
    }

    /// Migrate once per process, on the first call that reaches PostgreSQL;
    /// a failure is retried by the next call.
    pub async fn ensure_schema(&self) -> Result<(), LedgerDbError> {
        self.migrated
            .get_or_try_init(|| timed(self.migrate()))
            .await
            .map(|_| ())
    }

    async fn migrate(&self) -> Result<(), LedgerDbError> {
        let mut conn = self.pool.get().await?;
        let client: &mut tokio_postgres::Client = &mut conn;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let report = migrations::runner().run_async(client).await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        let report = report.map_err(|e| LedgerDbError::Db(format!("migration failed: {e}")))?;
        for m in report.applied_migrations() {
            tracing::info!(migration = %m, "ledger database migrated");
        }
        Ok(())
    }

    /// Insert entries and, for settlements, their request records, in one
    /// transaction; entries already there are left as they are (a replay
    /// after a crash). Answers how many entries were new.
    pub async fn insert(&self, entries: &[LedgerEntry]) -> Result<u64, LedgerDbError> {
        self.ensure_schema().await?;
        timed(self.insert_rows(entries)).await
    }

    async fn insert_rows(&self, entries: &[LedgerEntry]) -> Result<u64, LedgerDbError> {
        let rows = Rows::of(entries);
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        let new = tx
            .execute(
                "INSERT INTO ledger_entries (id, wallet_id, kind, paid, promo, at, reference)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[],
                                      $5::int8[], $6::timestamptz[], $7::text[])
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &rows.id,
                    &rows.wallet_id,
                    &rows.kind,
                    &rows.paid,
                    &rows.promo,
                    &rows.at,
                    &rows.reference,
                ],
            )
            .await?;
        let r = &rows.requests;
        tx.execute(
            "INSERT INTO request_records (entry_id, request_id, wallet_id, key_id, member_id,
                 team_id, model, input_tokens, cached_tokens, output_tokens, cost, status, at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                 $6::text[], $7::text[], $8::int8[], $9::int8[], $10::int8[], $11::int8[],
                 $12::text[], $13::timestamptz[])
             ON CONFLICT (entry_id) DO NOTHING",
            &[
                &r.entry_id,
                &r.request_id,
                &r.wallet_id,
                &r.key_id,
                &r.member_id,
                &r.team_id,
                &r.model,
                &r.input_tokens,
                &r.cached_tokens,
                &r.output_tokens,
                &r.cost,
                &r.status,
                &r.at,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(new)
    }

    /// A wallet's movements, oldest first: the newest `LEDGER_VIEW_MAX`.
    pub async fn ledger(&self, wallet_id: &str) -> Result<Vec<LedgerEntry>, LedgerDbError> {
        self.ensure_schema().await?;
        timed(self.ledger_rows(wallet_id)).await
    }

    async fn ledger_rows(&self, wallet_id: &str) -> Result<Vec<LedgerEntry>, LedgerDbError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "SELECT * FROM (
                   SELECT e.id, e.wallet_id, e.kind, e.paid, e.promo, e.at, e.reference,
                          r.key_id, r.member_id, r.team_id, r.model, r.input_tokens,
                          r.cached_tokens, r.output_tokens, r.status
                   FROM ledger_entries e LEFT JOIN request_records r ON r.entry_id = e.id
                   WHERE e.wallet_id = $1
                   ORDER BY e.at DESC, e.id DESC LIMIT $2) newest
                 ORDER BY at, id",
                &[&wallet_id, &LEDGER_VIEW_MAX],
            )
            .await?;
        rows.iter().map(entry_of_row).collect()
    }

    /// How many request records there are and what they cost in all.
    pub async fn request_totals(&self) -> Result<RequestTotals, LedgerDbError> {
        self.ensure_schema().await?;
        timed(self.totals()).await
    }

    async fn totals(&self) -> Result<RequestTotals, LedgerDbError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_one(
                "SELECT count(*), coalesce(sum(cost::numeric), 0)::text FROM request_records",
                &[],
            )
            .await?;
        let cost: String = row.get(1);
        Ok(RequestTotals {
            requests: row.get(0),
            cost: cost
                .parse()
                .map_err(|_| LedgerDbError::Corrupt(format!("sum of costs {cost:?}")))?,
        })
    }

    /// Whether PostgreSQL answers (readiness).
    pub async fn ping(&self) -> Result<(), LedgerDbError> {
        timed(async {
            let conn = self.pool.get().await?;
            conn.execute("SELECT 1", &[]).await?;
            Ok(())
        })
        .await
    }
}

/// A wallet's movements as the Owner sees them (B9): what PostgreSQL has,
/// plus what still waits in the store's export queue (so a call is in the
/// view as soon as its wallet flushed, however far the export lags), each
/// entry once, oldest first, the newest `LEDGER_VIEW_MAX` of them. (With a
/// backlog over `LEDGER_VIEW_MAX`, the queue's newest are left out until
/// exported.) PostgreSQL keeps times to the microsecond.
pub async fn wallet_ledger(
    db: &LedgerDb,
    store: &dyn Store,
    wallet_id: &str,
) -> Result<Vec<LedgerEntry>, LedgerDbError> {
    let waiting = store
        .export_read(wallet_id, LEDGER_VIEW_MAX as usize)
        .await
        .map_err(|e| LedgerDbError::Db(format!("export queue: {e}")))?;
    let mut entries = db.ledger(wallet_id).await?;
    let known: std::collections::HashSet<String> = entries.iter().map(|e| e.id.clone()).collect();
    entries.extend(
        waiting
            .into_iter()
            .map(|w| w.entry)
            .filter(|e| !known.contains(&e.id)),
    );
    entries.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    let extra = entries.len().saturating_sub(LEDGER_VIEW_MAX as usize);
    entries.drain(..extra);
    Ok(entries)
}

/// The columns of one insert, as arrays.
#[derive(Default)]
struct Rows<'a> {
    id: Vec<&'a str>,
    wallet_id: Vec<&'a str>,
    kind: Vec<&'static str>,
    paid: Vec<i64>,
    promo: Vec<i64>,
    at: Vec<DateTime<Utc>>,
    reference: Vec<&'a str>,
    requests: RequestRows<'a>,
}

#[derive(Default)]
struct RequestRows<'a> {
    entry_id: Vec<&'a str>,
    request_id: Vec<&'a str>,
    wallet_id: Vec<&'a str>,
    key_id: Vec<&'a str>,
    member_id: Vec<&'a str>,
    team_id: Vec<Option<&'a str>>,
    model: Vec<&'a str>,
    input_tokens: Vec<i64>,
    cached_tokens: Vec<i64>,
    output_tokens: Vec<i64>,
    cost: Vec<i64>,
    status: Vec<&'static str>,
    at: Vec<DateTime<Utc>>,
}

impl<'a> Rows<'a> {
    fn of(entries: &'a [LedgerEntry]) -> Rows<'a> {
        let mut r = Rows::default();
        for e in entries {
            r.id.push(&e.id);
            r.wallet_id.push(&e.wallet_id);
            r.kind.push(kind_name(e.kind));
            r.paid.push(e.paid.0);
            r.promo.push(e.promo.0);
            r.at.push(e.at);
            r.reference.push(&e.reference);
            if let Some(u) = &e.usage {
                r.requests.push(e, u);
            }
        }
        r
    }
}

impl<'a> RequestRows<'a> {
    fn push(&mut self, e: &'a LedgerEntry, u: &'a UsageFacts) {
        // Token counts past i64 cannot be billed (M3 clamps them); saturate.
        let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.entry_id.push(&e.id);
        self.request_id.push(&e.reference);
        self.wallet_id.push(&e.wallet_id);
        self.key_id.push(&u.key_id);
        self.member_id.push(&u.member_id);
        self.team_id.push(u.team_id.as_deref());
        self.model.push(&u.model);
        self.input_tokens.push(tokens(u.usage.input_tokens));
        self.cached_tokens.push(tokens(u.usage.cached_tokens));
        self.output_tokens.push(tokens(u.usage.output_tokens));
        // A settlement's amount is negative; its cost is what it took.
        self.cost.push(e.amount().0.saturating_neg());
        self.status.push(status_name(u.status));
        self.at.push(e.at);
    }
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::Deposit => "deposit",
        EntryKind::Settlement => "settlement",
        EntryKind::TransferIn => "transfer_in",
        EntryKind::TransferOut => "transfer_out",
    }
}

fn status_name(s: RequestStatus) -> &'static str {
    match s {
        RequestStatus::Completed => "completed",
        RequestStatus::Cancelled => "cancelled",
        RequestStatus::ClientClosed => "client_closed",
    }
}

fn entry_of_row(row: &tokio_postgres::Row) -> Result<LedgerEntry, LedgerDbError> {
    let kind: &str = row.get(2);
    let kind = match kind {
        "deposit" => EntryKind::Deposit,
        "settlement" => EntryKind::Settlement,
        "transfer_in" => EntryKind::TransferIn,
        "transfer_out" => EntryKind::TransferOut,
        other => return Err(LedgerDbError::Corrupt(format!("entry kind {other:?}"))),
    };
    let key_id: Option<String> = row.get(7);
    let usage = match key_id {
        None => None,
        Some(key_id) => Some(usage_of_row(row, key_id)?),
    };
    Ok(LedgerEntry {
        id: row.get(0),
        wallet_id: row.get(1),
        kind,
        paid: Nanos(row.get(3)),
        promo: Nanos(row.get(4)),
        at: row.get(5),
        reference: row.get(6),
        usage,
    })
}

fn usage_of_row(row: &tokio_postgres::Row, key_id: String) -> Result<UsageFacts, LedgerDbError> {
    let tokens = |i: usize| -> Result<u64, LedgerDbError> {
        let n: i64 = row.get(i);
        u64::try_from(n).map_err(|_| LedgerDbError::Corrupt(format!("token count {n}")))
    };
    let status: &str = row.get(14);
    let status = match status {
        "completed" => RequestStatus::Completed,
        "cancelled" => RequestStatus::Cancelled,
        "client_closed" => RequestStatus::ClientClosed,
        other => return Err(LedgerDbError::Corrupt(format!("request status {other:?}"))),
    };
    Ok(UsageFacts {
        key_id,
        member_id: row.get(8),
        team_id: row.get(9),
        model: row.get(10),
        usage: Usage {
            input_tokens: tokens(11)?,
            cached_tokens: tokens(12)?,
            output_tokens: tokens(13)?,
        },
        status,
    })
}
