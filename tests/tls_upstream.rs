//! P7: `https://` upstreams, through real sockets. The upstream is the mock
//! behind a TLS front on the loopback whose certificate a CA made here
//! (rcgen) signed: trusted through `upstream_ca_file`, the call is billed
//! exactly and carries the model's own upstream key; without that CA it is
//! a 502, not billed. A bad upstream URL, an unset key variable or an
//! unreadable CA file stop the start, naming the model or the file.

// Tests may panic on unexpected errors: that is how they fail.
#![allow(clippy::unwrap_used)]

#[path = "common/calls.rs"]
mod calls;
mod common;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use calls::{error_code, holds_released};
use common::*;
use reqwest::StatusCode;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tollgate::pricing::Pricing;
use tollgate::store::memory::MemoryStore;

/// The environment variable holding the TLS model's upstream key; only
/// this test binary reads or sets it.
const KEY_VAR: &str = "TOLLGATE_TEST_TLS_UPSTREAM_KEY";
const MODEL_KEY: &str = "sk-model-own-upstream-key";

/// A CA, and a server certificate for 127.0.0.1 and localhost it signed.
struct Pki {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "tollgate test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert: leaf_cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
    }
}

/// A TLS front on the loopback: each connection's TLS is ended here and
/// its bytes relayed to `target` (set once the mock is up). Its URL.
async fn tls_front(pki: &Pki, target: Arc<OnceLock<String>>) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.cert.clone()],
            PrivateKeyDer::Pkcs8(pki.key.clone_key()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, target) = (acceptor.clone(), target.clone());
            tokio::spawn(async move {
                // A client that does not trust the CA aborts the handshake.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let to = target.get().unwrap().trim_start_matches("http://");
                let mut plain = TcpStream::connect(to).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    url
}

/// The shipped pricing plus `tls-mini` (gpt-4o-mini's prices) behind `url`
/// with its own upstream key.
fn pricing_with(url: &str) -> String {
    format!(
        "{PRICING}\n[models.\"tls-mini\"]\ninput = \"0.15\"\noutput = \"0.60\"\n\
         cached_input = \"0.075\"\nupstream_url = \"{url}\"\n\
         upstream_api_key_env = \"{KEY_VAR}\"\n"
    )
}

/// A gateway whose `tls-mini` goes to the mock through the TLS front;
/// `trust`: whether `upstream_ca_file` names the test CA.
async fn tls_gateway(trust: bool) -> (Gateway, tempfile::TempDir) {
    // Once per process, through std (whose lock orders it with every
    // std::env read).
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| std::env::set_var(KEY_VAR, MODEL_KEY));
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_path: PathBuf = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &pki.ca_pem).unwrap();
    let target = Arc::new(OnceLock::new());
    let url = tls_front(&pki, target.clone()).await;
    let g = spawn_gateway_priced(&pricing_with(&url), |c| {
        target.set(c.upstream_url.clone()).unwrap();
        if trust {
            c.upstream_ca_file = Some(ca_path.clone());
        }
    })
    .await;
    (g, dir)
}

fn tls_chat() -> serde_json::Value {
    chat_body("tls-mini")
}

const TOKENS: [(&str, &str); 3] = [
    ("x-mock-prompt-tokens", "1219"),
    ("x-mock-cached-tokens", "1024"),
    ("x-mock-completion-tokens", "10"),
];

#[tokio::test]
async fn an_https_upstream_trusted_through_the_ca_file_is_billed_exactly() {
    let (g, _dir) = tls_gateway(true).await;
    let (u, key) = g.funded("tls@example.com", "10").await;
    for _ in 0..2 {
        let r = g.chat(&key, &tls_chat(), &TOKENS).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["usage"]["prompt_tokens"], 1219);
    }
    let cost = mini_cost(1219, 1024, 10);
    assert_eq!(g.balance(&u).await.0, usd(10_000_000_000 - 2 * cost));
    // The model's own upstream key went, not the gateway's.
    let seen = g.mock.upstream.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        let auth: Vec<&str> = r
            .headers
            .iter()
            .filter(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(auth, [format!("Bearer {MODEL_KEY}")]);
    }
    // Other models keep the plain http:// default and the gateway's key.
    let r = g.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let last = g.mock.upstream.requests().pop().unwrap();
    assert!(last
        .headers
        .contains(&("authorization".into(), format!("Bearer {UPSTREAM_KEY}"))));
}

#[tokio::test]
async fn an_https_upstream_with_an_unknown_ca_is_a_bad_gateway_and_not_billed() {
    let (g, _dir) = tls_gateway(false).await;
    let (u, key) = g.funded("untrusted@example.com", "10").await;
    let r = g.chat(&key, &tls_chat(), &TOKENS).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(error_code(r).await, "upstream_error");
    holds_released(&g, "the hold is released").await;
    assert_eq!(g.balance(&u).await.0, "10.00");
    assert_eq!(g.mock.upstream.request_count(), 0, "nothing got through");
}

/// The start fails with `pricing` and `tweak`; the error's text.
async fn start_error(pricing: &str, tweak: impl FnOnce(&mut tollgate::config::Config)) -> String {
    let mut config = test_config("http://127.0.0.1:9");
    tweak(&mut config);
    let pricing = Pricing::parse(pricing, "test pricing").unwrap();
    match tollgate::server::start(config, Arc::new(MemoryStore::new()), pricing).await {
        Ok(_) => panic!("the start should have failed"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_bad_upstream_url_or_key_variable_stops_the_start_naming_the_model() {
    let model = |extra: &str| {
        format!("[models.\"broken-model\"]\ninput = \"1\"\noutput = \"1\"\n{extra}\n")
    };
    for (extra, says) in [
        (
            "upstream_url = \"ftp://example.com\"",
            "http:// or https://",
        ),
        ("upstream_url = \"example.com:443\"", "http:// or https://"),
        ("upstream_url = \"https://\"", "upstream_url"),
        (
            "upstream_api_key_env = \"TOLLGATE_TEST_NEVER_SET_VAR\"",
            "TOLLGATE_TEST_NEVER_SET_VAR",
        ),
    ] {
        let err = start_error(&model(extra), |_| {}).await;
        assert!(
            err.contains("`broken-model`") && err.contains(says),
            "{extra}: {err}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    for path in [junk, dir.path().join("missing.pem")] {
        let shown = path.display().to_string();
        let err = start_error(PRICING, |c| c.upstream_ca_file = Some(path)).await;
        assert!(err.contains(&shown), "{err}");
    }
}
