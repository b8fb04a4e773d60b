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
        Command::MockUpstream { listen } => {
            init_logs(LogFormat::Text);
            mock_upstream(listen).await
        }
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
    app.boot()
        .await
        .map_err(|e| format!("recovery failed: {e}"))?;
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
