//! Test harness: a private `redis-server` per test, on a free port in a temp
//! dir, with AOF fsynced on every write, so a test can kill it (-9) and
//! start it again on the same port and data and see what survived. It is
//! killed when dropped. Never the shared instance on 6379.
//!
//! Where no redis-server binary exists, `start` says so loudly and returns
//! `None`; the caller skips its Redis half (never silently).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a (re)started server may take to answer PING.
const READY_WITHIN: Duration = Duration::from_secs(15);

pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

/// `$REDIS_SERVER` (if it names a file), else `redis-server` on the PATH,
/// else the Debian path.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REDIS_SERVER") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("redis-server"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let p = PathBuf::from("/usr/bin/redis-server");
        p.is_file().then_some(p)
    })
}

impl RedisServer {
    /// Start a fresh server, or `None` (after a loud message) when there is
    /// no redis-server to start.
    pub fn start(test: &str) -> Option<RedisServer> {
        let Some(binary) = binary() else {
            // Straight to stderr: `eprintln!` is captured, and hidden, for
            // tests that pass.
            let _ = writeln!(
                std::io::stderr().lock(),
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 !!! SKIPPED (Redis half): {test}: no redis-server binary found\n\
                 !!! (set REDIS_SERVER or install redis-server; CI installs it)\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            return None;
        };
        // Another process may take the port between this probe and the
        // server's bind; `spawn` then fails and we try another port.
        let mut last = String::new();
        for _ in 0..5 {
            let mut server = RedisServer {
                binary: binary.clone(),
                port: free_port(),
                dir: tempfile::tempdir().expect("temp dir for redis"),
                child: None,
            };
            match server.spawn() {
                Ok(()) => return Some(server),
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start after 5 tries: {last}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL: no shutdown save, no goodbye to clients. Only what AOF has
    /// fsynced survives.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the server keeps its connections open but answers nothing,
    /// like a hung host. `resume` continues it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis is running").id();
        let ok = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid} failed");
    }

    /// Start again on the same port and data directory (replays the AOF).
    pub fn restart(&mut self) {
        self.kill();
        let started = Instant::now();
        // The port can stay busy for a moment after a kill; retry briefly.
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if started.elapsed() < READY_WITHIN => {
                    eprintln!("redis restart on {} not ready yet: {e}", self.port);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("redis did not restart on port {}: {e}", self.port),
            }
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("redis.log");
        let child = Command::new(&self.binary)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    return Err(format!("redis-server exited ({status}): {log}"));
                }
            }
            if ping(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(format!(
            "redis-server on {} not ready within {READY_WITHIN:?}",
            self.port
        ))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True once the server answers PING with PONG (not `-LOADING` while it
/// replays the AOF).
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) => buf[..n].starts_with(b"+PONG"),
        Err(_) => false,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}
