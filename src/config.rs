//! Configuration: a TOML file (`RawConfig`, unknown keys refused) whose
//! every key can be overridden by an environment variable
//! `TOLLGATE_<KEY>`, validated into `Config`, the type the program uses.
//! The environment is read through the `Env` trait so tests pass a map.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::money::{parse_amount, AmountRules, Nanos};

/// Where the environment comes from: the process, or a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("setting `{key}` ({origin}): {message}")]
    Invalid {
        key: &'static str,
        origin: String,
        message: String,
    },
}

/// The file as written. Every field optional; unknown keys are an error
/// that names the file and the key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    metrics_listen: Option<String>,
    store: Option<String>,
    redis_prefix: Option<String>,
    upstream_url: Option<String>,
    upstream_api_key: Option<String>,
    pricing: Option<String>,
    operator_token: Option<String>,
    suspend_threshold: Option<String>,
    public_url: Option<String>,
    max_body_bytes: Option<u64>,
    max_response_bytes: Option<u64>,
    upstream_connect_timeout_ms: Option<u64>,
    upstream_read_timeout_ms: Option<u64>,
    flush_interval_ms: Option<u64>,
    flush_failure_bound_ms: Option<u64>,
    default_max_output_tokens: Option<u64>,
    default_context_window: Option<u64>,
    session_ttl_hours: Option<u64>,
    negative_cache_ttl_ms: Option<u64>,
    log_format: Option<String>,
    mailer_webhook_url: Option<String>,
    team_close_wait_ms: Option<u64>,
    ledger_url: Option<String>,
    ledger_retention_days: Option<u64>,
    batch_id_ttl_s: Option<u64>,
    memory_ledger_entries: Option<u64>,
    ledger_backlog_max: Option<u64>,
    upstream_ca_file: Option<String>,
    client_header_timeout_ms: Option<u64>,
    client_idle_timeout_ms: Option<u64>,
    max_connections: Option<u64>,
    webhook_allow_private: Option<bool>,
    webhook_retry_delays_ms: Option<String>,
    webhook_poll_ms: Option<u64>,
}

/// Which store backs the gateway. Exactly one, never a silent fallback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    Memory,
    Redis { url: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret from the config: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub store: StoreConfig,
    pub redis_prefix: String,
    pub upstream_url: String,
    pub upstream_api_key: Option<Secret>,
    pub pricing: PathBuf,
    pub operator_token: Option<Secret>,
    pub suspend_threshold: Nanos,
    pub public_url: String,
    pub max_body_bytes: usize,
    pub upstream_connect_timeout: Duration,
    pub upstream_read_timeout: Duration,
    pub flush_interval: Duration,
    /// How long a wallet's flushes may keep failing before it refuses new
    /// holds (503), so unpersisted spend stays bounded.
    pub flush_failure_bound: Duration,
    pub default_max_output_tokens: u64,
    /// Input tokens a request with non-text input may carry, for a model
    /// whose pricing sets no `context_window` (M7).
    pub default_context_window: u64,
    pub session_ttl: Duration,
    pub negative_cache_ttl: Duration,
    pub log_format: LogFormat,
    /// Where invite emails are POSTed as JSON; none: the log mailer.
    pub mailer_webhook_url: Option<String>,
    /// How long team deletion waits for in-flight requests (D1).
    pub team_close_wait: Duration,
    /// Extra PEM roots trusted for `https://` upstreams, beside the
    /// system's (P7).
    pub upstream_ca_file: Option<PathBuf>,
    /// How long a client has to send a whole request head (S2).
    pub client_header_timeout: Duration,
    /// How long a keep-alive client connection may sit idle (S2).
    pub client_idle_timeout: Duration,
    /// Client connections open at once at most; past it, new ones wait
    /// in the listen backlog (S2).
    pub max_connections: usize,
    /// Where the ledger and per-request records live (G1-G3).
    pub ledger: LedgerConfig,
    /// N1: webhook deliveries.
    pub notify: NotifyConfig,
}

/// The `webhook_*` keys (N1).
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    /// Allow webhook URLs that resolve to loopback or private addresses.
    pub allow_private: bool,
    /// The waits before each retry (N1: 5 s, 5 min, 30 min, 2 h, 5 h,
    /// 10 h); after the last retry fails, the delivery is failed. Tests
    /// shorten it with `webhook_retry_delays_ms`.
    pub retry_delays: Vec<Duration>,
    /// How often the delivery worker looks for due deliveries and new events.
    pub poll: Duration,
}

/// The ledger database and what the store keeps without one (G1-G3).
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// `ledger_url`: a `postgres://` URL (may carry a password: never
    /// printed); none keeps entries in the store for `retention_days`.
    pub url: Option<Secret>,
    /// `ledger_retention_days` (7): without a ledger database, per-request
    /// records and ledger entries older than this are dropped (G3).
    pub retention_days: u32,
    /// `batch_id_ttl_s` (86,400): how long a batch id is remembered (G1).
    pub batch_id_ttl: Duration,
    /// `memory_ledger_entries` (100,000): the memory store's ring (G3).
    pub memory_entries: usize,
    /// `ledger_backlog_max` (1,000,000): entries one wallet's export queue
    /// may hold while PostgreSQL is away; past it the wallet refuses new
    /// holds (503) until the exporter catches up (G2).
    pub backlog_max: u64,
}

impl LedgerConfig {
    /// What the store is told to do with ledger entries.
    pub fn policy(&self) -> crate::store::LedgerPolicy {
        crate::store::LedgerPolicy {
            export: self.url.is_some(),
            batch_id_ttl: self.batch_id_ttl,
            backlog_max: self.backlog_max,
            memory_entries: self.memory_entries,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::from_raw(RawConfig::default(), &HashMap::new(), "defaults")
            .expect("built-in defaults are valid")
    }
}

impl Config {
    /// Load `file` (or only defaults when `None`), then apply `env`.
    pub fn load(file: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
        let (raw, origin) = match file {
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: shown.clone(),
                    source,
                })?;
                let raw: RawConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: shown.clone(),
                    message: e.to_string(),
                })?;
                (raw, shown)
            }
            None => (RawConfig::default(), "defaults".to_string()),
        };
        Config::from_raw(raw, env, &origin)
    }

    fn from_raw(raw: RawConfig, env: &dyn Env, origin: &str) -> Result<Config, ConfigError> {
        let s = Settings { env, origin };
        warn_retired(&raw);
        let (ledger, notify) = (s.ledger(&raw)?, s.notify(&raw)?);
        let (client_header_timeout, client_idle_timeout, max_connections) = s.connections(&raw)?;
        let listen: SocketAddr = s.parsed("listen", raw.listen, "127.0.0.1:8080")?;
        let store = s.store(raw.store)?;
        let suspend_threshold = s.amount("suspend_threshold", raw.suspend_threshold, "0.05")?;
        let public_url = s
            .text("public_url", raw.public_url)
            .unwrap_or_else(|| format!("http://{listen}"));
        let upstream_url = s.upstream_url(raw.upstream_url)?;
        let ms = |key, v: Option<u64>, d| s.parsed::<u64>(key, v.map(|v| v.to_string()), d);
        let millis = |key, v, d| ms(key, v, d).map(Duration::from_millis);
        Ok(Config {
            listen,
            metrics_listen: s.parsed("metrics_listen", raw.metrics_listen, "127.0.0.1:9090")?,
            store,
            redis_prefix: s
                .text("redis_prefix", raw.redis_prefix)
                .unwrap_or_else(|| "tollgate:".into()),
            upstream_url: upstream_url.trim_end_matches('/').to_string(),
            upstream_api_key: s
                .text("upstream_api_key", raw.upstream_api_key)
                .filter(|k| !k.is_empty())
                .map(Secret),
            pricing: PathBuf::from(
                s.text("pricing", raw.pricing)
                    .unwrap_or_else(|| "config/pricing.toml".into()),
            ),
            operator_token: s
                .text("operator_token", raw.operator_token)
                .filter(|k| !k.is_empty())
                .map(Secret),
            suspend_threshold,
            public_url: public_url.trim_end_matches('/').to_string(),
            max_body_bytes: ms("max_body_bytes", raw.max_body_bytes, "4194304")? as usize,
            upstream_connect_timeout: millis(
                "upstream_connect_timeout_ms",
                raw.upstream_connect_timeout_ms,
                "5000",
            )?,
            upstream_read_timeout: millis(
                "upstream_read_timeout_ms",
                raw.upstream_read_timeout_ms,
                "300000",
            )?,
            flush_interval: Duration::from_millis(
                ms("flush_interval_ms", raw.flush_interval_ms, "10")?.max(1),
            ),
            flush_failure_bound: millis(
                "flush_failure_bound_ms",
                raw.flush_failure_bound_ms,
                "5000",
            )?,
            default_max_output_tokens: ms(
                "default_max_output_tokens",
                raw.default_max_output_tokens,
                "4096",
            )?,
            default_context_window: ms(
                "default_context_window",
                raw.default_context_window,
                "128000",
            )?,
            session_ttl: Duration::from_secs(
                3600 * ms("session_ttl_hours", raw.session_ttl_hours, "168")?.max(1),
            ),
            negative_cache_ttl: millis("negative_cache_ttl_ms", raw.negative_cache_ttl_ms, "1000")?,
            log_format: s.log_format(raw.log_format.clone())?,
            mailer_webhook_url: s
                .text("mailer_webhook_url", raw.mailer_webhook_url)
                .filter(|u| !u.is_empty()),
            team_close_wait: millis("team_close_wait_ms", raw.team_close_wait_ms, "60000")?,
            ledger,
            upstream_ca_file: s.path("upstream_ca_file", raw.upstream_ca_file),
            client_header_timeout,
            client_idle_timeout,
            max_connections,
            notify,
        })
    }
}

/// Keys kept so old files load, said to be ignored.
fn warn_retired(raw: &RawConfig) {
    if raw.max_response_bytes.is_some() {
        // M8: answers are relayed as they arrive, in bounded memory; only
        // the read timeout bounds them.
        tracing::warn!("`max_response_bytes` is no longer used (M8) and is ignored");
    }
}

/// Reads one setting: the environment variable wins over the file.
struct Settings<'a> {
    env: &'a dyn Env,
    origin: &'a str,
}

impl Settings<'_> {
    fn env_name(key: &str) -> String {
        format!("TOLLGATE_{}", key.to_ascii_uppercase())
    }

    fn text(&self, key: &'static str, file: Option<String>) -> Option<String> {
        self.env.var(&Self::env_name(key)).or(file)
    }

    fn origin_of(&self, key: &'static str) -> String {
        let env = Self::env_name(key);
        if self.env.var(&env).is_some() {
            format!("environment {env}")
        } else {
            self.origin.to_string()
        }
    }

    fn invalid(&self, key: &'static str, message: &str) -> ConfigError {
        ConfigError::Invalid {
            key,
            origin: self.origin_of(key),
            message: message.to_string(),
        }
    }

    /// A file path; unset or empty: none.
    fn path(&self, key: &'static str, file: Option<String>) -> Option<PathBuf> {
        self.text(key, file)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    }

    /// S2: the header and idle timeouts (at least 1 ms) and the
    /// connection limit (at least 1).
    fn connections(&self, raw: &RawConfig) -> Result<(Duration, Duration, usize), ConfigError> {
        let ms = |key, v: Option<u64>, d| {
            self.parsed::<u64>(key, v.map(|v| v.to_string()), d)
                .map(|n| Duration::from_millis(n.max(1)))
        };
        let max: u64 = self.parsed(
            "max_connections",
            raw.max_connections.map(|v| v.to_string()),
            "10000",
        )?;
        Ok((
            ms(
                "client_header_timeout_ms",
                raw.client_header_timeout_ms,
                "10000",
            )?,
            ms(
                "client_idle_timeout_ms",
                raw.client_idle_timeout_ms,
                "60000",
            )?,
            usize::try_from(max.max(1)).unwrap_or(usize::MAX),
        ))
    }

    /// `store`: `memory` or a redis:// URL, never a silent fallback.
    fn store(&self, file: Option<String>) -> Result<StoreConfig, ConfigError> {
        let text = self.text("store", file).unwrap_or_else(|| "memory".into());
        if text == "memory" {
            Ok(StoreConfig::Memory)
        } else if text.starts_with("redis://") || text.starts_with("rediss://") {
            Ok(StoreConfig::Redis { url: text })
        } else {
            Err(self.invalid("store", "must be `memory` or a redis:// URL"))
        }
    }

    /// The `webhook_*` keys (N1).
    fn notify(&self, raw: &RawConfig) -> Result<NotifyConfig, ConfigError> {
        let allow_private = self.parsed(
            "webhook_allow_private",
            raw.webhook_allow_private.map(|b| b.to_string()),
            "false",
        )?;
        let delays = self
            .text(
                "webhook_retry_delays_ms",
                raw.webhook_retry_delays_ms.clone(),
            )
            .unwrap_or_else(|| "5000,300000,1800000,7200000,18000000,36000000".into());
        let retry_delays = delays
            .split(',')
            .map(|d| d.trim().parse::<u64>().map(Duration::from_millis))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                self.invalid(
                    "webhook_retry_delays_ms",
                    "must be a comma-separated list of milliseconds",
                )
            })?;
        let poll: u64 = self.parsed(
            "webhook_poll_ms",
            raw.webhook_poll_ms.map(|v| v.to_string()),
            "1000",
        )?;
        Ok(NotifyConfig {
            allow_private,
            retry_delays,
            poll: Duration::from_millis(poll.max(1)),
        })
    }

    /// The `ledger_*` keys (G1-G3).
    fn ledger(&self, raw: &RawConfig) -> Result<LedgerConfig, ConfigError> {
        let n = |key, v: Option<u64>, d| self.parsed::<u64>(key, v.map(|v| v.to_string()), d);
        let url = self
            .text("ledger_url", raw.ledger_url.clone())
            .filter(|u| !u.is_empty());
        if let Some(u) = &url {
            if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                return Err(self.invalid("ledger_url", "must be a postgres:// URL"));
            }
        }
        let retention = n("ledger_retention_days", raw.ledger_retention_days, "7")?;
        let retention_days = u32::try_from(retention)
            .ok()
            .filter(|d| (1..=36_500).contains(d))
            .ok_or_else(|| self.invalid("ledger_retention_days", "must be 1 to 36500"))?;
        let ttl = n("batch_id_ttl_s", raw.batch_id_ttl_s, "86400")?;
        // A flush retries within seconds; a batch id forgotten before its
        // last retry would let that retry apply twice.
        if ttl < 600 {
            return Err(self.invalid("batch_id_ttl_s", "must be at least 600 (10 minutes)"));
        }
        let entries = n("memory_ledger_entries", raw.memory_ledger_entries, "100000")?;
        let backlog_max = n("ledger_backlog_max", raw.ledger_backlog_max, "1000000")?.max(1);
        Ok(LedgerConfig {
            url: url.map(Secret),
            retention_days,
            batch_id_ttl: Duration::from_secs(ttl),
            memory_entries: usize::try_from(entries).unwrap_or(usize::MAX),
            backlog_max,
        })
    }

    /// A money amount in USD, as written (`"0.05"`).
    fn amount(
        &self,
        key: &'static str,
        file: Option<String>,
        default: &str,
    ) -> Result<Nanos, ConfigError> {
        let text = self.text(key, file).unwrap_or_else(|| default.into());
        parse_amount(&text, AmountRules::ANY).map_err(|e| self.invalid(key, &e.to_string()))
    }

    fn log_format(&self, file: Option<String>) -> Result<LogFormat, ConfigError> {
        match self.text("log_format", file).as_deref() {
            None | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(_) => Err(self.invalid("log_format", "must be `text` or `json`")),
        }
    }

    fn upstream_url(&self, file: Option<String>) -> Result<String, ConfigError> {
        let url = self
            .text("upstream_url", file)
            .unwrap_or_else(|| "http://127.0.0.1:9000".into());
        if let Err(why) = crate::proxy::upstream::target(&url) {
            return Err(self.invalid("upstream_url", &format!("{url:?} {why}")));
        }
        Ok(url)
    }

    fn parsed<T: FromStr>(
        &self,
        key: &'static str,
        file: Option<String>,
        default: &str,
    ) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.text(key, file).unwrap_or_else(|| default.to_string());
        text.trim()
            .parse()
            .map_err(|e: T::Err| self.invalid(key, &format!("{text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.metrics_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.store, StoreConfig::Memory);
        assert_eq!(c.suspend_threshold, Nanos(50_000_000));
        assert_eq!(c.public_url, "http://127.0.0.1:8080");
        assert!(c.operator_token.is_none());
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\nsuspend_threshold = \"1.5\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            &env(&[
                ("TOLLGATE_LISTEN", "127.0.0.1:2"),
                ("TOLLGATE_STORE", "redis://x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 2);
        assert_eq!(c.suspend_threshold, Nanos(1_500_000_000));
        assert_eq!(
            c.store,
            StoreConfig::Redis {
                url: "redis://x".into()
            }
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_their_origin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "lissten = \"x\"\n").unwrap();
        let err = Config::load(Some(&path), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.toml") && err.contains("lissten"), "{err}");
        let err = Config::load(None, &env(&[("TOLLGATE_SUSPEND_THRESHOLD", "abc")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("TOLLGATE_SUSPEND_THRESHOLD"), "{err}");
    }

    #[test]
    fn the_shipped_config_file_loads_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tollgate.toml");
        let c = Config::load(Some(&path), &env(&[])).unwrap();
        let d = Config::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.suspend_threshold, d.suspend_threshold);
        assert_eq!(c.flush_interval, d.flush_interval);
        assert_eq!(c.team_close_wait, d.team_close_wait);
    }

    #[test]
    fn the_flush_failure_bound_defaults_to_five_seconds_and_can_be_set() {
        let d = Config::default();
        assert_eq!(d.flush_failure_bound, Duration::from_secs(5));
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tollgate.toml");
        let c = Config::load(Some(&path), &env(&[])).unwrap();
        assert_eq!(c.flush_failure_bound, d.flush_failure_bound);
        let c = Config::load(None, &env(&[("TOLLGATE_FLUSH_FAILURE_BOUND_MS", "750")])).unwrap();
        assert_eq!(c.flush_failure_bound, Duration::from_millis(750));
    }

    #[test]
    fn ledger_keys_default_to_the_contract_and_refuse_bad_values() {
        let d = Config::default();
        assert!(d.ledger.url.is_none());
        assert_eq!(d.ledger.retention_days, 7);
        assert_eq!(d.ledger.batch_id_ttl, Duration::from_secs(86_400));
        assert_eq!(d.ledger.memory_entries, 100_000);
        let c = Config::load(
            None,
            &env(&[
                ("TOLLGATE_LEDGER_URL", "postgres://u:pw@127.0.0.1:5/l"),
                ("TOLLGATE_BATCH_ID_TTL_S", "3600"),
            ]),
        )
        .unwrap();
        assert!(c.ledger.policy().export);
        assert_eq!(c.ledger.batch_id_ttl, Duration::from_secs(3600));
        assert!(!format!("{c:?}").contains("pw@"));
        for (k, v) in [
            ("TOLLGATE_LEDGER_URL", "mysql://x"),
            ("TOLLGATE_LEDGER_RETENTION_DAYS", "0"),
            ("TOLLGATE_BATCH_ID_TTL_S", "599"),
        ] {
            let err = Config::load(None, &env(&[(k, v)])).unwrap_err().to_string();
            assert!(err.contains(k), "{err}");
        }
    }

    #[test]
    fn connection_bounds_and_the_ca_file_load_with_their_defaults() {
        let d = Config::default();
        assert_eq!(d.client_header_timeout, Duration::from_secs(10));
        assert_eq!(d.client_idle_timeout, Duration::from_secs(60));
        assert_eq!(d.max_connections, 10_000);
        assert!(d.upstream_ca_file.is_none());
        let c = Config::load(
            None,
            &env(&[
                ("TOLLGATE_CLIENT_HEADER_TIMEOUT_MS", "250"),
                ("TOLLGATE_CLIENT_IDLE_TIMEOUT_MS", "500"),
                ("TOLLGATE_MAX_CONNECTIONS", "50"),
                ("TOLLGATE_UPSTREAM_CA_FILE", "/etc/ca.pem"),
                ("TOLLGATE_UPSTREAM_URL", "https://api.example.com/v1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.client_header_timeout, Duration::from_millis(250));
        assert_eq!(c.client_idle_timeout, Duration::from_millis(500));
        assert_eq!(c.max_connections, 50);
        assert_eq!(c.upstream_ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(c.upstream_url, "https://api.example.com/v1");
        let err = Config::load(None, &env(&[("TOLLGATE_UPSTREAM_URL", "ftp://x")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("upstream_url") && err.contains("https://"),
            "{err}"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Config::load(None, &env(&[("TOLLGATE_OPERATOR_TOKEN", "hunter2")])).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
