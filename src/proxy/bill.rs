//! Bill: everything needed to settle one request once its answer has been
//! read, and the rules that turn what the upstream said into the billed
//! tokens: counts read one by one and resolved (M2), or estimated from the
//! text when there are none (M4, U4a), then bounded by what the request
//! could produce (M3) so no count, however large, bills past the hold's
//! bounds or wraps a total.

use std::sync::Arc;

use bytes::Bytes;

use super::meter::{clamp, estimate_tokens, resolve, Bounds, RawUsage};
use super::request::prompt_bytes;
use super::Route;
use crate::auth::KeyEntry;
use crate::clock::Clock;
use crate::metrics;
use crate::pricing::{Pricing, Usage};
use crate::store::{RequestStatus, UsageFacts};
use crate::wallet::Hold;

/// One admitted request's hold and what settling it needs. Dropped
/// unsettled (an upstream failure, a refusal), the hold releases itself.
pub struct Billing {
    pub hold: Hold,
    pub pricing: Arc<Pricing>,
    pub model: String,
    pub reference: String,
    pub entry: Arc<KeyEntry>,
    /// The request as the client sent it, for the prompt estimate.
    pub request_body: Bytes,
    pub route: Route,
    /// M3: input at most the context window (the model's, else the
    /// gateway's default), output at most the hold's output bound. A text
    /// request's hold bounds input by its bytes; an upstream reporting more
    /// prompt tokens than that is billed up to the window, so a settlement
    /// passes its hold by at most the window's input price (B6 allows one
    /// request's cost).
    pub bounds: Bounds,
    /// The gateway's clock: the minute a settlement's tokens count in (Q2).
    pub clock: Arc<dyn Clock>,
}

impl Billing {
    /// Settle with what the answer said: `usage` if it carried a usable
    /// one, else the estimate over `generated_text_bytes` (M4).
    pub fn bill(self, usage: Option<RawUsage>, generated_text_bytes: usize, status: RequestStatus) {
        let usage = match usage {
            Some(raw) => resolve(raw, self.route.generates(), self.prompt_estimate_lazy(&raw)),
            None => {
                tracing::debug!(
                    route = self.route.label(),
                    "upstream reported no usage; billing an estimate"
                );
                self.estimate(generated_text_bytes)
            }
        };
        let (usage, clamped) = clamp(usage, self.bounds);
        if clamped {
            // Counts only: never content.
            tracing::warn!(
                route = self.route.label(),
                model = %self.model,
                request_id = %self.reference,
                "upstream usage above what the request could produce; clamped (M3)"
            );
            metrics::usage_clamped(self.route.label());
        }
        self.settle(usage, status);
    }

    /// M5: an in-band upstream error: not billed; the hold is released.
    pub fn in_band_error(self) {
        tracing::warn!(
            route = self.route.label(),
            request_id = %self.reference,
            "upstream answered 200 with an error; not billed (M5)"
        );
        metrics::upstream_in_band_error(self.route.label());
    }

    fn settle(self, usage: Usage, status: RequestStatus) {
        // The price was there at admission; a reload that dropped the model
        // since still bills at the price it was admitted under.
        let cost = self
            .pricing
            .get(&self.model)
            .map(|p| p.cost(&usage))
            .unwrap_or_default();
        let facts = UsageFacts {
            key_id: self.entry.key_id.to_string(),
            member_id: self.entry.member_id.to_string(),
            team_id: self.entry.team_id.as_deref().map(str::to_string),
            model: self.model,
            usage,
            status,
        };
        if let Some(rate) = &self.entry.limits.rate {
            // Q2: tpm counts input + output as settled.
            rate.spend_tokens(self.clock.now(), facts.usage.total_tokens());
        }
        self.hold.settle(cost, self.reference, facts);
    }

    /// The prompt estimate, parsed only for a total-only usage object (the
    /// one shape `resolve` needs it for).
    fn prompt_estimate_lazy(&self, raw: &RawUsage) -> u64 {
        let total_only = raw.total.is_some() && (raw.prompt.is_none() || raw.completion.is_none());
        if !total_only {
            return 0;
        }
        // What the output bound cannot hold is input: the prompt estimate
        // misses tool schemas and token arrays.
        let beyond_output = raw
            .total
            .unwrap_or(0)
            .saturating_sub(self.bounds.max_output);
        estimate_tokens(prompt_bytes(&self.request_body)).max(beyond_output)
    }

    /// M4, U4a: usage by the 4-bytes-a-token rule, when the upstream never
    /// said: the prompt's text and the generated text only.
    fn estimate(&self, generated_text_bytes: usize) -> Usage {
        Usage {
            input_tokens: estimate_tokens(prompt_bytes(&self.request_body)),
            cached_tokens: 0,
            output_tokens: if self.route.generates() {
                estimate_tokens(generated_text_bytes)
            } else {
                0
            },
        }
    }
}
