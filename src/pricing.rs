//! Pricing: USD per million tokens per model (B5), loaded from its own TOML
//! file. Pure: turns token counts into an exact cost and a request's worst
//! case into a hold estimate. The proxy reads it through an `ArcSwap`, so a
//! reload never blocks a request.

use std::collections::HashMap;
use std::path::Path;

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::money::{nanos_ceil, Nanos};

/// Token counts of one call, as the upstream reports them (OpenAI `usage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Usage {
    /// All prompt tokens, cached ones included (OpenAI `prompt_tokens`).
    pub input_tokens: u64,
    /// The cached part of `input_tokens`.
    pub cached_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    /// Input plus output; saturating, so no count can wrap it (M3).
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("cannot read pricing file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("pricing file {path}: {message}")]
    Invalid { path: String, message: String },
    /// P7, at start: a model's upstream cannot be used.
    #[error("pricing: {0}")]
    Upstream(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPricing {
    #[serde(default)]
    models: HashMap<String, RawModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    input: String,
    output: String,
    cached_input: Option<String>,
    max_output_tokens: Option<u64>,
    upstream_url: Option<String>,
    upstream_api_key_env: Option<String>,
    context_window: Option<u64>,
}

/// One model's prices, kept in nano-dollars per token (price per million
/// x 1000), exact.
#[derive(Clone, Debug)]
pub struct ModelPrice {
    pub input: Decimal,
    pub cached_input: Decimal,
    pub output: Decimal,
    pub max_output_tokens: Option<u64>,
    pub upstream_url: Option<String>,
    /// The environment variable holding this model's upstream key (P7).
    pub upstream_api_key_env: Option<String>,
    /// `Bearer <that key>`, read by `resolve_upstreams` at start; sent
    /// instead of the gateway's `upstream_api_key`. Sensitive: never
    /// printed.
    pub upstream_auth: Option<axum::http::HeaderValue>,
    /// The most input tokens a call can carry (M3, M7), where set.
    pub context_window: Option<u64>,
}

impl ModelPrice {
    /// B5: uncached input x input + cached x cached_input + output x output,
    /// exact, rounded up once to a nano-dollar.
    pub fn cost(&self, u: &Usage) -> Nanos {
        let cached = u.cached_tokens.min(u.input_tokens);
        let uncached = u.input_tokens - cached;
        let nanos = Decimal::from(uncached) * self.input
            + Decimal::from(cached) * self.cached_input
            + Decimal::from(u.output_tokens) * self.output;
        // Prices are nano-dollars per token already; rounding is to whole nanos.
        nanos_ceil(nanos)
    }

    /// The most a request can cost: every input token uncached at the
    /// dearer input price, and the largest output it allows. (Computed
    /// in place: it used to clone the whole price, `upstream_url` string
    /// included, on every request.)
    pub fn max_cost(&self, max_input_tokens: u64, max_output_tokens: u64) -> Nanos {
        let nanos = Decimal::from(max_input_tokens) * self.input.max(self.cached_input)
            + Decimal::from(max_output_tokens) * self.output;
        nanos_ceil(nanos)
    }
}

/// All priced models.
#[derive(Clone, Debug, Default)]
pub struct Pricing {
    models: HashMap<String, ModelPrice>,
}

impl Pricing {
    pub fn load(path: &Path) -> Result<Pricing, PricingError> {
        let text = std::fs::read_to_string(path).map_err(|source| PricingError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Pricing::parse(&text, &path.display().to_string())
    }

    /// Parse a pricing file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Pricing, PricingError> {
        let invalid = |message: String| PricingError::Invalid {
            path: origin.to_string(),
            message,
        };
        let raw: RawPricing = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut models = HashMap::with_capacity(raw.models.len());
        for (name, m) in raw.models {
            let price = |field: &str, v: &str| -> Result<Decimal, PricingError> {
                let d: Decimal = v.parse().map_err(|_| {
                    invalid(format!("models.{name}.{field}: {v:?} is not a decimal"))
                })?;
                if d < Decimal::ZERO {
                    return Err(invalid(format!("models.{name}.{field} is negative")));
                }
                // USD per million tokens -> nano-dollars per token.
                Ok(d * Decimal::from(1000))
            };
            let input = price("input", &m.input)?;
            let output = price("output", &m.output)?;
            let cached_input = match &m.cached_input {
                Some(v) => price("cached_input", v)?,
                None => input,
            };
            models.insert(
                name,
                ModelPrice {
                    input,
                    cached_input,
                    output,
                    max_output_tokens: m.max_output_tokens,
                    upstream_url: m.upstream_url.map(|u| u.trim_end_matches('/').to_string()),
                    upstream_api_key_env: m.upstream_api_key_env,
                    upstream_auth: None,
                    context_window: m.context_window,
                },
            );
        }
        Ok(Pricing { models })
    }

    /// P7, at start: every model's `upstream_url` must be a usable
    /// `http://` or `https://` URL, and every `upstream_api_key_env` must
    /// name a set, non-empty variable of `env`, whose value becomes the
    /// model's `upstream_auth`. The first failure names its model.
    pub fn resolve_upstreams(&mut self, env: &dyn crate::config::Env) -> Result<(), PricingError> {
        let invalid = PricingError::Upstream;
        let mut names: Vec<&String> = self.models.keys().collect();
        names.sort_unstable();
        let names: Vec<String> = names.into_iter().cloned().collect();
        for name in names {
            let Some(m) = self.models.get_mut(&name) else {
                continue;
            };
            if let Some(url) = &m.upstream_url {
                crate::proxy::upstream::target(url).map_err(|why| {
                    invalid(format!("model `{name}`: upstream_url {url:?} {why}"))
                })?;
            }
            if let Some(var) = &m.upstream_api_key_env {
                let key = env.var(var).filter(|k| !k.is_empty()).ok_or_else(|| {
                    invalid(format!(
                        "model `{name}`: upstream_api_key_env names {var}, which is not set"
                    ))
                })?;
                m.upstream_auth = Some(crate::proxy::upstream::bearer(&key).ok_or_else(|| {
                    invalid(format!(
                        "model `{name}`: the key in {var} is not a valid header value"
                    ))
                })?);
            }
        }
        Ok(())
    }

    pub fn get(&self, model: &str) -> Option<&ModelPrice> {
        self.models.get(model)
    }

    /// Model names, sorted, for `GET /v1/models`.
    pub fn model_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.models.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pricing() -> Pricing {
        Pricing::parse(
            include_str!("../config/pricing.toml"),
            "config/pricing.toml",
        )
        .unwrap()
    }

    #[test]
    fn upstreams_are_checked_at_start_naming_the_model() {
        let env: HashMap<String, String> = [("UP_KEY".to_string(), "sk-1".to_string())].into();
        let text = |url: &str, var: &str| {
            format!(
                "[models.a]\ninput = \"1\"\noutput = \"1\"\n\
                 [models.bad-one]\ninput = \"1\"\noutput = \"1\"\n\
                 upstream_url = \"{url}\"\nupstream_api_key_env = \"{var}\"\n"
            )
        };
        let mut ok = Pricing::parse(&text("https://api.example.com/v1/", "UP_KEY"), "t").unwrap();
        ok.resolve_upstreams(&env).unwrap();
        let m = ok.get("bad-one").unwrap();
        assert_eq!(
            m.upstream_url.as_deref(),
            Some("https://api.example.com/v1")
        );
        assert_eq!(m.upstream_auth.as_ref().unwrap(), "Bearer sk-1");
        assert!(!format!("{m:?}").contains("sk-1"), "the key never prints");
        assert!(ok.get("a").unwrap().upstream_auth.is_none());
        for (url, var, says) in [
            ("ftp://x", "UP_KEY", "http:// or https://"),
            ("https://x?y=1", "UP_KEY", "query"),
            ("http://x", "NOT_SET_ANYWHERE", "NOT_SET_ANYWHERE"),
        ] {
            let mut p = Pricing::parse(&text(url, var), "t").unwrap();
            let err = p.resolve_upstreams(&env).unwrap_err().to_string();
            assert!(err.contains("`bad-one`") && err.contains(says), "{err}");
        }
    }

    #[test]
    fn cost_splits_cached_input_exactly() {
        let p = pricing();
        let m = p.get("gpt-4o-mini").unwrap();
        // 1000 uncached x 0.15/M + 200 cached x 0.075/M + 500 out x 0.60/M
        // = 0.00015 + 0.000015 + 0.0003 = 0.000465
        let u = Usage {
            input_tokens: 1200,
            cached_tokens: 200,
            output_tokens: 500,
        };
        assert_eq!(m.cost(&u), Nanos(465_000));
    }

    #[test]
    fn fractional_nanos_round_up_once() {
        let p =
            Pricing::parse("[models.m]\ninput = \"0.0001\"\noutput = \"0\"\n", "inline").unwrap();
        let m = p.get("m").unwrap();
        // 0.1 nano per token: 3 tokens = 0.3 nanos -> 1; 10 tokens = exactly 1.
        let u = |n| Usage {
            input_tokens: n,
            ..Usage::default()
        };
        assert_eq!(m.cost(&u(3)), Nanos(1));
        assert_eq!(m.cost(&u(10)), Nanos(1));
        assert_eq!(m.cost(&u(11)), Nanos(2));
    }

    #[test]
    fn max_cost_bounds_every_real_cost() {
        let p = pricing();
        let m = p.get("gpt-4o").unwrap();
        let max = m.max_cost(100, 50);
        for cached in 0..=100 {
            let u = Usage {
                input_tokens: 100,
                cached_tokens: cached,
                output_tokens: 50,
            };
            assert!(m.cost(&u) <= max);
        }
    }

    #[test]
    fn floats_and_unknown_fields_are_refused() {
        assert!(Pricing::parse("[models.m]\ninput = 0.1\noutput = \"1\"\n", "x").is_err());
        assert!(
            Pricing::parse("[models.m]\ninput = \"1\"\noutput = \"1\"\nfoo = 1\n", "x").is_err()
        );
        assert!(Pricing::parse("[models.m]\ninput = \"-1\"\noutput = \"1\"\n", "x").is_err());
    }
}
