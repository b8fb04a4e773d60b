//! Test harness: `tollgate serve` as a child process (`Gw`), restartable
//! on the same ports, so a test can SIGTERM or kill -9 it; and `Load`,
//! concurrent request loops that count what was served.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;

use crate::common::*;
use crate::redis_harness::RedisServer;

/// Settlements are flushed every this many milliseconds.
pub const FLUSH_MS: u64 = 10;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `tollgate serve` as a child process, restartable on the same ports.
pub struct Gw {
    pub child: Option<Child>,
    pub port: u16,
    pub env: Vec<(String, String)>,
    pub api: Api,
}

impl Gw {
    pub async fn start(redis: &RedisServer, upstream: &str) -> Gw {
        Gw::start_with(&redis.url(), upstream, &[]).await
    }

    /// On the store `store_url`, with `extra` environment settings.
    pub async fn start_with(store_url: &str, upstream: &str, extra: &[(&str, String)]) -> Gw {
        let port = free_port();
        let mut env: Vec<(String, String)> = vec![
            ("TOLLGATE_LISTEN".into(), format!("127.0.0.1:{port}")),
            (
                "TOLLGATE_METRICS_LISTEN".into(),
                format!("127.0.0.1:{}", free_port()),
            ),
            ("TOLLGATE_STORE".into(), store_url.to_string()),
            ("TOLLGATE_UPSTREAM_URL".into(), upstream.to_string()),
            ("TOLLGATE_OPERATOR_TOKEN".into(), OPERATOR.into()),
            (
                "TOLLGATE_PRICING".into(),
                concat!(env!("CARGO_MANIFEST_DIR"), "/config/pricing.toml").into(),
            ),
            ("TOLLGATE_FLUSH_INTERVAL_MS".into(), FLUSH_MS.to_string()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let mut gw = Gw {
            child: None,
            port,
            env,
            api: Api::new(&format!("http://127.0.0.1:{port}")),
        };
        gw.spawn().await;
        gw
    }

    pub async fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        wait_until("gateway ready", || {
            let url = url.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id();
        assert!(Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success());
    }

    /// SIGTERM and wait for a clean exit.
    pub fn term(&mut self) {
        self.signal("-TERM");
        let status = self.child.take().unwrap().wait().unwrap();
        assert!(status.success(), "graceful exit, got {status}");
    }

    pub fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl std::ops::Deref for Gw {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// `tasks` concurrent request loops against one gateway, counting its 200s,
/// until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(url: &str, key: &str, tasks: usize) -> Load {
        let (stop, served) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let api = Arc::new(Api::new(url));
        let handles = load(api, key.to_string(), tasks, stop.clone(), served.clone());
        Load {
            stop,
            served,
            handles,
        }
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Waits until `n` requests were served since the start.
    pub async fn until_served(&self, what: &str, n: u64) {
        wait_until(what, || async { self.served() >= n }).await;
    }

    /// Stops the loops, waits for them, and returns how many were served.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.await.unwrap();
        }
        self.served.load(Ordering::Relaxed)
    }
}

/// Drive `tasks` concurrent request loops until `stop`; count 200s.
pub fn load(
    api: Arc<Api>,
    key: String,
    tasks: usize,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tasks)
        .map(|_| {
            let (api, key, stop, served) = (api.clone(), key.clone(), stop.clone(), served.clone());
            tokio::spawn(async move {
                let t = [
                    ("x-mock-prompt-tokens", "10"),
                    ("x-mock-completion-tokens", "10"),
                ];
                while !stop.load(Ordering::Relaxed) {
                    let r = api
                        .http
                        .post(format!("{}/v1/chat/completions", api.url))
                        .bearer_auth(&key)
                        .header(t[0].0, t[0].1)
                        .header(t[1].0, t[1].1)
                        .json(&chat_body("gpt-4o-mini"))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == StatusCode::OK => {
                            if r.bytes().await.is_ok() {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(_) => {}
                        // The gateway is gone; keep trying until stopped.
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            })
        })
        .collect()
}
