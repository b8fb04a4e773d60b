//! Metrics: every metric name, declared once, and the Prometheus exporter.
//! Names follow `tollgate_<area>_<name>[_<unit>][_total]`; labels are
//! bounded sets (route, status class, outcome), never a key, user or team.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_histogram, histogram};
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
            handle
        })
        .clone()
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
}

pub fn proxy_request(route: &'static str, status: u16, took: Duration) {
    counter!(PROXY_REQUESTS, "route" => route, "status" => status_label(status)).increment(1);
    histogram!(PROXY_DURATION, "route" => route).record(took.as_secs_f64());
}

pub fn upstream_latency(route: &'static str, took: Duration) {
    histogram!(UPSTREAM_DURATION, "route" => route).record(took.as_secs_f64());
}

pub fn hold(admitted: bool) {
    let outcome = if admitted { "admitted" } else { "refused" };
    counter!(HOLDS, "outcome" => outcome).increment(1);
}

pub fn hold_released() {
    counter!(HOLDS_RELEASED).increment(1);
}

pub fn settlement(cost: Nanos) {
    counter!(SETTLEMENTS).increment(1);
    counter!(SPEND).increment(cost.0.max(0) as u64);
}

pub fn wallet_suspension(suspended: bool) {
    let direction = if suspended { "suspended" } else { "resumed" };
    counter!(SUSPENSIONS, "direction" => direction).increment(1);
}

pub fn api_request(status: u16) {
    counter!(API_REQUESTS, "status" => status_label(status)).increment(1);
}

/// Status codes as static labels: a bounded set.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        402 => "402",
        403 => "403",
        404 => "404",
        409 => "409",
        410 => "410",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}
