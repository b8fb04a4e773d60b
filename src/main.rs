//! The `tollgate` binary: parse arguments, load the config, hand over to
//! the library (`serve`, `mock-upstream`, `demo`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tollgate::config::{Config, LogFormat, ProcessEnv};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A usage-metering gateway for OpenAI-compatible APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the proxy and management API (and metrics on their own listener).
    Serve {
        /// TOML config file; every key can be overridden by TOLLGATE_<KEY>.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the OpenAI-compatible fake upstream.
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Serve HTTPS with this PEM certificate chain (with --tls-key);
        /// benchmarks of https:// upstreams use it.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Exit 0 if the gateway at ADDR answers `GET /healthz` with 200 (the
    /// container image's HEALTHCHECK: no curl in the image).
    Healthcheck {
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
    },
    /// Run everything in one process: memory store, mock upstream, a seeded
    /// user with credit and an API key.
    Demo {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // No colour codes where nobody sees colours (a file, a pipe, journald).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => match Config::load(config.as_deref(), &ProcessEnv) {
            Ok(config) => {
                init_logs(config.log_format);
                serve(config).await
            }
            Err(e) => Err(e.to_string()),
        },
        Command::MockUpstream {
            listen,
            tls_cert,
            tls_key,
        } => {
            init_logs(LogFormat::Text);
            match tls_cert.zip(tls_key) {
                Some((cert, key)) => mock_upstream_tls(listen, &cert, &key).await,
                None => mock_upstream(listen).await,
            }
        }
        Command::Healthcheck { addr } => healthcheck(addr).await,
        Command::Demo { config } => match Config::load(config.as_deref(), &ProcessEnv) {
            Ok(config) => {
                init_logs(config.log_format);
                tollgate::demo::run(config).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> Result<(), String> {
    let pricing = tollgate::pricing::Pricing::load(&config.pricing).map_err(|e| e.to_string())?;
    let pricing =
        tollgate::server::prepare(&config, pricing, &ProcessEnv).map_err(|e| e.to_string())?;
    let store = tollgate::server::open_store(&config)
        .await
        .map_err(|e| e.to_string())?;
    let listener = tollgate::server::bind(config.listen)
        .await
        .map_err(|e| e.to_string())?;
    let metrics = tollgate::server::bind(config.metrics_listen)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(listen = %config.listen, metrics = %config.metrics_listen, store = store.kind(), "tollgate serving");
    let app = std::sync::Arc::new(tollgate::App::new(config, store, pricing));
    app.boot().await.map_err(|e| e.to_string())?;
    tollgate::server::run(app, listener, metrics, tollgate::server::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

async fn mock_upstream(listen: SocketAddr) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, "mock upstream serving");
    tollgate_mock_upstream::MockUpstream::new()
        .serve(listener, tollgate::server::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

/// The mock behind TLS: each connection's handshake, then HTTP/1.1 to the
/// mock's router. Runs until killed (a benchmark tool).
async fn mock_upstream_tls(
    listen: SocketAddr,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, "mock upstream serving https");
    let router = tollgate_mock_upstream::MockUpstream::new().router();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let mut router = router.clone();
                tower_service::Service::call(&mut router, req.map(axum::body::Body::new))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

/// `GET /healthz` on `addr`, at most 5 s: Ok if the answer is a 200.
async fn healthcheck(addr: SocketAddr) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let check = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), check).await {
        Ok(Ok(answer)) if answer.starts_with(b"HTTP/1.1 200") => Ok(()),
        Ok(Ok(answer)) => Err(format!(
            "{addr} answered {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(40)])
        )),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Err(_) => Err(format!("{addr}: no answer in 5 s")),
    }
}
