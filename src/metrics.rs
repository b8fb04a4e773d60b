//! Metrics: every metric name, declared once, and the Prometheus exporter.
//! Names follow `tollgate_<area>_<name>[_<unit>][_total]`; labels are
//! bounded sets (route, status class, outcome), never a key, user or team.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::money::Nanos;

pub const PROXY_REQUESTS: &str = "tollgate_proxy_requests_total";
pub const PROXY_DURATION: &str = "tollgate_proxy_request_duration_seconds";
pub const UPSTREAM_DURATION: &str = "tollgate_upstream_duration_seconds";
pub const HOLDS: &str = "tollgate_wallet_holds_total";
pub const HOLDS_RELEASED: &str = "tollgate_wallet_holds_released_total";
pub const SETTLEMENTS: &str = "tollgate_wallet_settlements_total";
pub const SPEND: &str = "tollgate_wallet_spend_nanodollars_total";
pub const SUSPENSIONS: &str = "tollgate_wallet_suspension_changes_total";
pub const API_REQUESTS: &str = "tollgate_api_requests_total";
pub const USAGE_CLAMPED: &str = "tollgate_meter_usage_clamped_total";
pub const UPSTREAM_IN_BAND_ERRORS: &str = "tollgate_upstream_in_band_errors_total";
pub const LEDGER_EXPORTED: &str = "tollgate_ledger_exported_entries_total";
pub const LEDGER_EXPORT_FAILURES: &str = "tollgate_ledger_export_failures_total";
pub const LEDGER_EXPORT_LAG: &str = "tollgate_ledger_export_lag_seconds";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the recorder once per process (tests start many gateways).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests, embedding): keep ours
            // for rendering anyway.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            // `build_recorder` spawns no upkeep task, and histogram samples
            // pile up in memory until something drains them: without a
            // scrape, that is ~50 bytes per proxied request, forever. Drain
            // them every 5 s (the exporter's own default) on a thread of
            // our own, which needs no runtime.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                });
            // From here on the hot path may cache handles: they are bound
            // to the recorder now installed, never to the no-op one before.
            let _ = HOT.set(Hot::new());
            handle
        })
        .clone()
}

/// Metric handles the proxy touches on every request, each registered on
/// first use after `install` and kept. The `counter!` macro with a label
/// that is not a literal builds a `Vec` of labels, hashes the key and takes
/// the registry's lock on every call: 2 allocations per call, ~5,000
/// instructions per request in all (callgrind, BENCHMARKS.md). A cached
/// handle is an atomic add.
struct Hot {
    requests: [[OnceLock<Counter>; STATUS_LABELS.len()]; ROUTES.len()],
    duration: [OnceLock<Histogram>; ROUTES.len()],
    upstream: [OnceLock<Histogram>; ROUTES.len()],
    holds: [OnceLock<Counter>; 2],
    released: OnceLock<Counter>,
    settlements: OnceLock<Counter>,
    spend: OnceLock<Counter>,
}

static HOT: OnceLock<Hot> = OnceLock::new();

/// The proxy's route labels (`proxy::Route::label`).
const ROUTES: [&str; 3] = ["chat", "completions", "embeddings"];

impl Hot {
    fn new() -> Hot {
        Hot {
            requests: [const { [const { OnceLock::new() }; STATUS_LABELS.len()] }; ROUTES.len()],
            duration: [const { OnceLock::new() }; ROUTES.len()],
            upstream: [const { OnceLock::new() }; ROUTES.len()],
            holds: [const { OnceLock::new() }; 2],
            released: OnceLock::new(),
            settlements: OnceLock::new(),
            spend: OnceLock::new(),
        }
    }
}

fn route_index(route: &str) -> Option<usize> {
    ROUTES.iter().position(|r| *r == route)
}

fn describe() {
    describe_counter!(PROXY_REQUESTS, "Proxied requests by route and status code.");
    describe_histogram!(
        PROXY_DURATION,
        "Time from request to the end of the response, by route."
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        "Time from forwarding to the upstream's response headers, by route."
    );
    describe_counter!(HOLDS, "Wallet holds by outcome (admitted, refused).");
    describe_counter!(
        HOLDS_RELEASED,
        "Holds released without a charge (upstream failures, refusals)."
    );
    describe_counter!(SETTLEMENTS, "Requests settled against a wallet.");
    describe_counter!(SPEND, "Total settled spend, in nano-dollars.");
    describe_counter!(
        SUSPENSIONS,
        "Wallets crossing the suspension threshold, by direction."
    );
    describe_counter!(API_REQUESTS, "Management API requests by status class.");
    describe_counter!(
        USAGE_CLAMPED,
        "Upstream usage counts above what the request could produce, clamped (M3), by route."
    );
    describe_counter!(
        UPSTREAM_IN_BAND_ERRORS,
        "200 answers that were upstream errors (an error body or event, M5), by route."
    );
    describe_counter!(
        LEDGER_EXPORTED,
        "Ledger entries copied to PostgreSQL and removed from the store's queue (G2)."
    );
    describe_counter!(
        LEDGER_EXPORT_FAILURES,
        "Ledger export passes that failed (PostgreSQL or the store away) and will retry."
    );
    describe_gauge!(
        LEDGER_EXPORT_LAG,
        "Age of the oldest entry the exporter last read; 0 once a queue is drained."
    );
}

/// G2: `n` entries exported (per batch, not per request: not cached).
pub fn ledger_exported(n: u64) {
    counter!(LEDGER_EXPORTED).increment(n);
}

pub fn ledger_export_failed() {
    counter!(LEDGER_EXPORT_FAILURES).increment(1);
}

pub fn ledger_export_lag(lag: Duration) {
    gauge!(LEDGER_EXPORT_LAG).set(lag.as_secs_f64());
}

pub fn proxy_request(route: &'static str, status: u16, took: Duration) {
    let status_i = status_index(status);
    match (HOT.get(), route_index(route)) {
        (Some(hot), Some(r)) => {
            hot.requests[r][status_i]
                .get_or_init(|| counter!(PROXY_REQUESTS, "route" => route, "status" => STATUS_LABELS[status_i]))
                .increment(1);
            hot.duration[r]
                .get_or_init(|| histogram!(PROXY_DURATION, "route" => route))
                .record(took.as_secs_f64());
        }
        _ => {
            counter!(PROXY_REQUESTS, "route" => route, "status" => STATUS_LABELS[status_i])
                .increment(1);
            histogram!(PROXY_DURATION, "route" => route).record(took.as_secs_f64());
        }
    }
}

pub fn upstream_latency(route: &'static str, took: Duration) {
    match (HOT.get(), route_index(route)) {
        (Some(hot), Some(r)) => hot.upstream[r]
            .get_or_init(|| histogram!(UPSTREAM_DURATION, "route" => route))
            .record(took.as_secs_f64()),
        _ => histogram!(UPSTREAM_DURATION, "route" => route).record(took.as_secs_f64()),
    }
}

pub fn hold(admitted: bool) {
    let (i, outcome) = if admitted {
        (0, "admitted")
    } else {
        (1, "refused")
    };
    match HOT.get() {
        Some(hot) => hot.holds[i]
            .get_or_init(|| counter!(HOLDS, "outcome" => outcome))
            .increment(1),
        None => counter!(HOLDS, "outcome" => outcome).increment(1),
    }
}

pub fn hold_released() {
    match HOT.get() {
        Some(hot) => hot
            .released
            .get_or_init(|| counter!(HOLDS_RELEASED))
            .increment(1),
        None => counter!(HOLDS_RELEASED).increment(1),
    }
}

pub fn settlement(cost: Nanos) {
    let spent = cost.0.max(0) as u64;
    match HOT.get() {
        Some(hot) => {
            hot.settlements
                .get_or_init(|| counter!(SETTLEMENTS))
                .increment(1);
            hot.spend.get_or_init(|| counter!(SPEND)).increment(spent);
        }
        None => {
            counter!(SETTLEMENTS).increment(1);
            counter!(SPEND).increment(spent);
        }
    }
}

pub fn wallet_suspension(suspended: bool) {
    let direction = if suspended { "suspended" } else { "resumed" };
    counter!(SUSPENSIONS, "direction" => direction).increment(1);
}

/// M3: a usage count clamped to the request's bounds. Rare: not cached.
pub fn usage_clamped(route: &'static str) {
    counter!(USAGE_CLAMPED, "route" => route).increment(1);
}

/// M5: an in-band upstream error (rare: not cached).
pub fn upstream_in_band_error(route: &'static str) {
    counter!(UPSTREAM_IN_BAND_ERRORS, "route" => route).increment(1);
}

pub fn api_request(status: u16) {
    counter!(API_REQUESTS, "status" => status_label(status)).increment(1);
}

/// Status codes as static labels: a bounded set.
const STATUS_LABELS: [&str; 21] = [
    "200", "201", "204", "400", "401", "402", "403", "404", "409", "410", "413", "422", "429",
    "500", "502", "503", "504", "2xx", "3xx", "4xx", "5xx",
];

fn status_index(status: u16) -> usize {
    match status {
        200 => 0,
        201 => 1,
        204 => 2,
        400 => 3,
        401 => 4,
        402 => 5,
        403 => 6,
        404 => 7,
        409 => 8,
        410 => 9,
        413 => 10,
        422 => 11,
        429 => 12,
        500 => 13,
        502 => 14,
        503 => 15,
        504 => 16,
        s if s < 300 => 17,
        s if s < 400 => 18,
        s if s < 500 => 19,
        _ => 20,
    }
}

fn status_label(status: u16) -> &'static str {
    STATUS_LABELS[status_index(status)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_the_codes_or_their_class() {
        for (code, label) in [
            (200, "200"),
            (402, "402"),
            (299, "2xx"),
            (302, "3xx"),
            (418, "4xx"),
            (599, "5xx"),
            (100, "2xx"),
        ] {
            assert_eq!(status_label(code), label, "{code}");
        }
        for (i, l) in STATUS_LABELS.iter().enumerate().take(17) {
            assert_eq!(status_index(l.parse().unwrap()), i);
        }
    }
}
