//! What tripped a newcomer, through the real binary: `tollgate demo` on a
//! busy port says "address in use" and names the port; logs written to a
//! pipe carry no colour codes; `tollgate healthcheck` (the image's
//! HEALTHCHECK) passes only against a serving gateway.

// Tests may panic on unexpected errors: that is how they fail.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

#[test]
fn the_demo_on_a_busy_port_says_address_in_use_and_names_the_port() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let out = Command::new(BIN)
        .arg("demo")
        .env("TOLLGATE_LISTEN", addr.to_string())
        .env("TOLLGATE_METRICS_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("address in use") && stderr.contains(&addr.port().to_string()),
        "{stderr}"
    );
    drop(busy);
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let mut child = Command::new(BIN)
        .args(["mock-upstream", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let read = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    read.unwrap();
    assert!(line.contains("mock upstream serving"), "{line:?} {err}");
    assert!(!line.contains('\u{1b}'), "colour codes in {line:?}");
}

#[test]
fn the_healthcheck_command_fails_where_nothing_answers() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let out = Command::new(BIN)
        .args(["healthcheck", "--addr", &port.to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn the_healthcheck_command_passes_against_a_serving_gateway() {
    let mock = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = tollgate::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        upstream_url: format!("http://{}", mock.local_addr().unwrap()),
        ..Default::default()
    };
    let pricing =
        tollgate::pricing::Pricing::parse(include_str!("../config/pricing.toml"), "pricing")
            .unwrap();
    let store = std::sync::Arc::new(tollgate::store::memory::MemoryStore::new());
    let running = tollgate::server::start(config, store, pricing)
        .await
        .unwrap();
    let addr = running.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["healthcheck", "--addr", &addr])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    running.stop().await.unwrap();
}
