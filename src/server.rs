//! Server: binds the routes to listeners and shuts down gracefully. On
//! shutdown every wallet is flushed, then the app's background tasks are
//! stopped and awaited, before `run` returns, so a SIGTERM loses no
//! settlement and leaves no task behind.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, StoreConfig};
use crate::pricing::Pricing;
use crate::store::memory::MemoryStore;
use crate::store::Store;
use crate::App;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot listen on {addr}: {}", listen_problem(.source))]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What a failed bind means, in words a newcomer can act on.
fn listen_problem(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        "address in use: another program (another tollgate?) holds this port; \
         stop it or choose another address (`listen`, TOLLGATE_LISTEN)"
            .to_string()
    } else {
        e.to_string()
    }
}

/// Bind `addr`, or say which address could not be bound and why.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// The checks made before serving (P7): every upstream URL usable, every
/// model's upstream key variable set (read into the pricing), the
/// `upstream_ca_file` readable. Each error names the model or the file.
pub fn prepare(
    config: &Config,
    mut pricing: Pricing,
    env: &dyn crate::config::Env,
) -> Result<Pricing, ServeError> {
    pricing
        .resolve_upstreams(env)
        .map_err(|e| ServeError::Config(e.to_string()))?;
    if let Some(path) = &config.upstream_ca_file {
        crate::proxy::upstream::tls::read_ca_file(path)
            .map_err(|e| ServeError::Config(e.to_string()))?;
    }
    Ok(pricing)
}

/// The store the config names; never a silent fallback to memory.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServeError> {
    match &config.store {
        StoreConfig::Memory => {
            tracing::warn!(
                "using the MEMORY store: balances, keys and usage are lost when this process exits"
            );
            Ok(Arc::new(MemoryStore::with_policy(config.ledger.policy())))
        }
        StoreConfig::Redis { url } => {
            let store = crate::store::redis_store::RedisStore::connect(url, &config.redis_prefix)
                .await
                .map_err(|e| ServeError::Config(format!("cannot open the Redis store: {e}")))?
                .with_policy(config.ledger.policy());
            Ok(Arc::new(store))
        }
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .merge(crate::proxy::router())
        .merge(crate::api::router())
        .merge(crate::dashboard::router())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(app)
}

/// What the listener serves: the billed proxy calls go straight to
/// `proxy::handle`; everything else through the router.
///
/// axum's routing, handler and response adapters cost ~5,000 instructions
/// a request (callgrind, BENCHMARKS.md), a tenth of the proxy's own path;
/// for the three hot `POST`s a match on the path does the same job. The
/// router keeps those routes too, for what this does not take (other
/// methods: 405, as before).
#[derive(Clone)]
pub struct Front {
    app: Arc<App>,
    router: Router,
}

impl Front {
    pub fn new(app: Arc<App>) -> Front {
        Front {
            router: router(app.clone()),
            app,
        }
    }
}

impl tower_service::Service<axum::extract::Request> for Front {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<axum::response::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        self.serve_one(req, None, ())
    }
}

impl Front {
    /// One request: a billed proxy call, or the router. `peer`, the
    /// client's address, is handed to the router's handlers as axum's
    /// `ConnectInfo` (S1 throttles failed logins per address); `held`
    /// lives as long as the handler runs (`connections::Busy`).
    pub fn serve_one<H: Send + 'static>(
        &self,
        mut req: axum::extract::Request,
        peer: Option<SocketAddr>,
        held: H,
    ) -> <Self as tower_service::Service<axum::extract::Request>>::Future {
        let route = if req.method() == axum::http::Method::POST {
            crate::proxy::Route::of_path(req.uri().path())
        } else {
            None
        };
        match route {
            Some(route) => {
                let app = self.app.clone();
                Box::pin(async move {
                    let answer = crate::proxy::handle(&app, route, req).await;
                    drop(held);
                    Ok(answer)
                })
            }
            None => {
                if let Some(peer) = peer {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                }
                let call = tower_service::Service::call(&mut self.router.clone(), req);
                Box::pin(async move {
                    let answer = call.await;
                    drop(held);
                    answer
                })
            }
        }
    }
}

async fn ready(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    match app.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unreachable"),
    }
}

/// Serve `app` on `listener` (and metrics on `metrics`) until `shutdown`
/// resolves; then drain connections and flush every wallet.
pub async fn run(
    app: Arc<App>,
    listener: TcpListener,
    metrics: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let handle = crate::metrics::install();
    let metrics_router = Router::new().route(
        "/metrics",
        get(move || {
            let h = handle.clone();
            async move { h.render() }
        }),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut metrics_stop = stop_rx.clone();
    let metrics_task = app.tasks.spawn(async move {
        axum::serve(metrics, metrics_router)
            .with_graceful_shutdown(async move {
                let _ = metrics_stop.wait_for(|s| *s).await;
            })
            .await
    });
    let limits = crate::connections::Limits::of(&app.config);
    crate::connections::serve(listener, Front::new(app.clone()), limits, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = metrics_task.await;
    drop(stop_rx);
    stop_background(&app).await;
    Ok(())
}

/// Once no request is served: signal the background loops, close the
/// tracker and wait for every task on it to end (detached exchanges among
/// them: their settlements must precede the final flush, M9); then the
/// final flush, then the wallets' own writes (flush, withdraw, credit).
async fn stop_background(app: &App) {
    app.shutdown.cancel();
    app.tasks.close();
    app.tasks.wait().await;
    if let Err(e) = app.wallets.flush_all().await {
        tracing::error!(error = %e, "final wallet flush failed");
    }
    let wallet_tasks = app.wallets.tasks();
    wallet_tasks.close();
    wallet_tasks.wait().await;
}

/// A gateway running in this process (tests, the demo).
pub struct Running {
    pub app: Arc<App>,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop: drain, flush, return.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(ServeError::Config(format!("server task failed: {e}"))),
        }
    }
}

/// Bind the configured listeners (port 0 allowed) and serve in the
/// background.
pub async fn start(
    config: Config,
    store: Arc<dyn Store>,
    pricing: Pricing,
) -> Result<Running, ServeError> {
    start_with_clock(config, store, pricing, Arc::new(crate::clock::SystemClock)).await
}

/// `start` with an injected clock (tests move time by hand).
pub async fn start_with_clock(
    config: Config,
    store: Arc<dyn Store>,
    pricing: Pricing,
    clock: Arc<dyn crate::clock::Clock>,
) -> Result<Running, ServeError> {
    let pricing = prepare(&config, pricing, &crate::config::ProcessEnv)?;
    let listener = bind(config.listen).await?;
    let metrics = bind(config.metrics_listen).await?;
    let addr = listener.local_addr()?;
    let metrics_addr = metrics.local_addr()?;
    let app = Arc::new(App::with_clock(config, store, pricing, clock));
    app.boot()
        .await
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(app.clone(), listener, metrics, async move {
        let _ = rx.await;
    }));
    Ok(Running {
        app,
        addr,
        metrics_addr,
        stop: Some(tx),
        task,
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
