//! The application: `App`, everything a request handler can reach, built
//! once and shared by `Arc`; `boot`, the work done once before serving; and
//! the one tracker of background tasks, which `server::run` closes and
//! awaits on shutdown so no task outlives the server unseen.

use std::future::Future;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::{Accounts, TeamError, Teams};
use crate::auth::KeyCache;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::ids::RequestIds;
use crate::ledger_db::{export::Exporter, LedgerDb, LedgerDbError};
use crate::mailer::Mailer;
use crate::pricing::Pricing;
use crate::proxy::upstream::Upstream;
use crate::store::{self, Store};
use crate::wallet::WalletRegistry;
use crate::KeyedLocks;

/// How long a wallet's actor may sit unused before it is stopped.
pub const WALLET_IDLE_AFTER: Duration = Duration::from_secs(120);

/// Everything a request handler can reach. Built once, shared by `Arc`.
pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    /// Swapped whole on reload; readers never wait.
    pub pricing: ArcSwap<Pricing>,
    pub wallets: Arc<WalletRegistry>,
    pub keys: Arc<KeyCache>,
    pub accounts: Accounts,
    pub teams: Arc<Teams>,
    pub clock: Arc<dyn Clock>,
    pub upstream: Upstream,
    pub ids: RequestIds,
    pub locks: KeyedLocks,
    /// Every background task the app starts; `server::run` closes it and
    /// waits for it after the final flush.
    pub tasks: TaskTracker,
    /// Cancelled by `server::run` on shutdown: the background loops exit.
    pub shutdown: CancellationToken,
    /// The ledger database, connected by `boot` when `ledger_url` is set.
    pub ledger_db: OnceLock<Arc<LedgerDb>>,
    /// N1-N3: webhook deliveries and low-balance mail (src/notify).
    pub notifier: Arc<crate::notify::Notifier>,
}

/// Why `boot` could not get the gateway ready.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("recovery failed: {0}")]
    Recovery(#[from] TeamError),
    #[error("{0}")]
    Ledger(#[from] LedgerDbError),
}

impl App {
    pub fn new(config: Config, store: Arc<dyn Store>, pricing: Pricing) -> App {
        App::with_clock(config, store, pricing, Arc::new(SystemClock))
    }

    pub fn with_clock(
        config: Config,
        store: Arc<dyn Store>,
        pricing: Pricing,
        clock: Arc<dyn Clock>,
    ) -> App {
        let ids = RequestIds::default();
        let wallets = Arc::new(WalletRegistry::new(
            store.clone(),
            config.suspend_threshold,
            config.flush_interval,
            config.flush_failure_bound,
            ids.nonce(),
            clock.clone(),
        ));
        let keys = Arc::new(KeyCache::new(config.negative_cache_ttl));
        let mailer = Mailer::new(
            store.clone(),
            clock.clone(),
            config.mailer_webhook_url.clone(),
        );
        let notifier = Arc::new(crate::notify::Notifier::new(
            store.clone(),
            clock.clone(),
            mailer.clone(),
            config.notify.clone(),
            config.public_url.clone(),
        ));
        App {
            notifier,
            pricing: ArcSwap::from_pointee(pricing),
            teams: Arc::new(Teams::new(
                store.clone(),
                wallets.clone(),
                keys.clone(),
                clock.clone(),
                mailer,
                config.public_url.clone(),
                config.team_close_wait,
            )),
            wallets,
            keys,
            accounts: Accounts::new(store.clone(), clock.clone(), config.session_ttl),
            clock,
            upstream: Upstream::new(
                config.upstream_api_key.as_ref().map(|s| s.0.as_str()),
                config.upstream_connect_timeout,
                config.upstream_read_timeout,
                config.upstream_ca_file.clone(),
            ),
            ids,
            locks: KeyedLocks::default(),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            ledger_db: OnceLock::new(),
            store,
            config,
        }
    }

    /// Work done once before serving: finish interrupted transfers, follow
    /// other instances' changes, retry undelivered mail.
    pub async fn boot(self: &Arc<Self>) -> Result<(), BootError> {
        let upgraded = self.store.upgrade_layout().await.map_err(TeamError::from)?;
        if upgraded > 0 {
            tracing::warn!(upgraded, "store records brought to this version's layout");
        }
        self.open_ledger().await?;
        let finished = self.teams.recover().await?;
        if finished > 0 {
            tracing::warn!(finished, "finished transfers interrupted by the last stop");
        }
        self.spawn_idle_sweep();
        self.spawn_change_follower();
        self.spawn_until_shutdown(
            self.teams
                .mailer()
                .clone()
                .retry_loop(Duration::from_secs(5)),
        );
        self.spawn_until_shutdown(Teams::retry_loop(
            Arc::downgrade(&self.teams),
            Duration::from_secs(30),
        ));
        self.spawn_usage_pruning();
        self.tasks
            .spawn(self.notifier.clone().run(self.shutdown.clone()));
        Ok(())
    }

    /// G2: connect the ledger database and start the exporter; G3 without
    /// one: say what is kept, and for how long.
    async fn open_ledger(self: &Arc<Self>) -> Result<(), LedgerDbError> {
        let ledger = &self.config.ledger;
        let Some(url) = &ledger.url else {
            tracing::warn!(
                retention_days = ledger.retention_days,
                memory_entries = ledger.memory_entries,
                "no ledger_url: per-request records and ledger entries are kept in the store \
                 for {} days only (the memory store: the newest {}), then dropped; balances, \
                 usage statistics and reconciliation stay exact (G3)",
                ledger.retention_days,
                ledger.memory_entries
            );
            return Ok(());
        };
        // No I/O yet: the gateway starts while PostgreSQL is away; the
        // exporter migrates and connects when it can (the backlog waits).
        let db = Arc::new(LedgerDb::open(&url.0)?);
        match db.ensure_schema().await {
            Ok(()) => tracing::info!("ledger database ready; exporting ledger entries to it (G2)"),
            Err(e) => tracing::warn!(
                error = %e,
                "ledger database not reachable yet; entries wait in the store and are \
                 exported when it is (G2)"
            ),
        }
        self.teams.use_ledger_db(db.clone());
        let exporter = Exporter::new(self.store.clone(), db.clone());
        self.tasks.spawn(exporter.run(self.shutdown.clone()));
        let _ = self.ledger_db.set(db);
        Ok(())
    }

    /// Run `task` on the tracker until it ends or shutdown is signalled,
    /// whichever comes first (for loops that do not watch the signal).
    fn spawn_until_shutdown(&self, task: impl Future<Output = ()> + Send + 'static) {
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = task => {}
                () = shutdown.cancelled() => {}
            }
        });
    }

    /// Stop wallet actors nobody used for a while (their memory goes; the
    /// next use starts them again from the store).
    fn spawn_idle_sweep(self: &Arc<Self>) {
        let app = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            loop {
                if sleep_or_shutdown(WALLET_IDLE_AFTER / 2, &shutdown).await {
                    break;
                }
                let Some(a) = app.upgrade() else { break };
                let stopped = a.wallets.stop_idle(WALLET_IDLE_AFTER).await;
                if stopped > 0 {
                    tracing::debug!(stopped, "stopped idle wallet actors");
                }
            }
        });
    }

    /// Follow other instances' changes: drop cached keys, resync wallets.
    fn spawn_change_follower(self: &Arc<Self>) {
        let Some(mut changes) = self.store.subscribe() else {
            return;
        };
        let app = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            loop {
                let change = tokio::select! {
                    change = changes.recv() => change,
                    () = shutdown.cancelled() => None,
                };
                let Some(change) = change else { break };
                let Some(app) = app.upgrade() else { break };
                match change {
                    store::Change::Key(hash) => app.keys.invalidate(&hash),
                    store::Change::Wallet(id) => app.wallets.resync(&id),
                    store::Change::Alerts(id) => match app.store.alerts(&id).await {
                        Ok(t) => app.wallets.set_alerts(&id, t).await,
                        Err(e) => tracing::warn!(error = %e, "alert thresholds not re-read"),
                    },
                }
            }
        });
    }

    /// Usage buckets older than 90 days go, now and hourly; so do ledger
    /// entries past `ledger_retention_days` (G3).
    fn spawn_usage_pruning(self: &Arc<Self>) {
        let app: Weak<App> = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            loop {
                let Some(a) = app.upgrade() else { break };
                let before = a.clock.now().date_naive()
                    - chrono::Duration::days(i64::from(crate::usage::MAX_DAYS));
                if let Err(e) = a.store.prune_usage(before).await {
                    tracing::warn!(error = %e, "usage pruning failed");
                }
                // G3: ledger entries past retention (kept only without a
                // ledger database), and expired batch ids.
                let days = i64::from(a.config.ledger.retention_days);
                match a
                    .store
                    .prune_ledger(a.clock.now() - chrono::Duration::days(days))
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(dropped = n, "ledger entries past retention dropped"),
                    Err(e) => tracing::warn!(error = %e, "ledger pruning failed"),
                }
                drop(a);
                if sleep_or_shutdown(Duration::from_secs(3600), &shutdown).await {
                    break;
                }
            }
        });
    }
}

/// Sleep for `d`; true if shutdown was signalled first.
async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = shutdown.cancelled() => true,
    }
}
