//! Runs the real `switchyard` binary as a child process and watches its logs.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SIGHUP: i32 = 1;
pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(10);

type Captured = Arc<Mutex<String>>;

pub struct ProxyProcess {
    pub child: Child,
    pub proxy: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    stderr: Captured,
    stdout: Captured,
}

fn read_captured(c: &Captured) -> String {
    c.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Removes ANSI escape sequences: tracing colours field names, which would
/// otherwise split `proxy=` and defeat plain-text assertions.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters/intermediates until a final byte in @..~
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Finds `key=VALUE` (logfmt / tracing text) or `"key":"VALUE"` (JSON) in a
/// log line; None when absent or not an address (e.g. `admin=off`).
pub fn parse_log_addr(line: &str, key: &str) -> Option<SocketAddr> {
    let patterns = [format!("{key}="), format!("\"{key}\":")];
    for pat in &patterns {
        let mut from = 0;
        while let Some(pos) = line[from..].find(pat.as_str()) {
            let start = from + pos;
            from = start + pat.len();
            // `xproxy=` must not count as `proxy=`.
            let boundary = line[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
            if !boundary {
                continue;
            }
            let value: String = line[from..]
                .trim_start_matches([' ', '"'])
                .chars()
                .take_while(|c| !(c.is_whitespace() || matches!(c, '"' | ',' | '}')))
                .collect();
            if let Ok(addr) = value.parse() {
                return Some(addr);
            }
        }
    }
    None
}

fn capture<R: Read + Send + 'static>(pipe: R, into: Captured, label: &'static str) {
    // Set SWITCHYARD_TEST_ECHO=1 to watch the child live while debugging.
    let echo = std::env::var_os("SWITCHYARD_TEST_ECHO").is_some();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = strip_ansi(&String::from_utf8_lossy(&buf));
                    if echo {
                        eprint!("[switchyard {label}] {line}");
                    }
                    into.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_str(&line);
                }
            }
        }
    });
}

impl ProxyProcess {
    /// Blocks (≤ 20 s) until the child logs `switchyard listening`. Being
    /// synchronous, it stalls a current-thread test runtime meanwhile; use
    /// `#[tokio::test(flavor = "multi_thread")]` if in-process upstreams must
    /// answer during startup.
    pub fn spawn(bin: &str, args: &[&str], env: &[(&str, &str)]) -> ProxyProcess {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Plain logs by default; the caller's env may still override.
        cmd.env("NO_COLOR", "1");
        // The metrics listener defaults to the fixed port 15090; parallel tests need their own.
        cmd.env("SWITCHYARD_METRICS", "127.0.0.1:0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {bin} {args:?} failed: {e}"));
        let stderr: Captured = Arc::default();
        let stdout: Captured = Arc::default();
        capture(
            child.stderr.take().expect("child stderr is piped"),
            stderr.clone(),
            "stderr",
        );
        capture(
            child.stdout.take().expect("child stdout is piped"),
            stdout.clone(),
            "stdout",
        );
        let mut process = ProxyProcess {
            child,
            proxy: None,
            admin: None,
            stderr,
            stdout,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let text = process.stderr_text();
            if let Some(line) = text.lines().find(|l| l.contains("switchyard listening")) {
                process.proxy = parse_log_addr(line, "proxy");
                process.admin = parse_log_addr(line, "admin");
                return process;
            }
            match process.child.try_wait() {
                Ok(Some(status)) => {
                    // Let the reader threads drain what the child wrote last.
                    std::thread::sleep(Duration::from_millis(100));
                    panic!(
                        "{bin} {args:?} exited ({status}) before listening\n--- stderr ---\n{}\n--- stdout ---\n{}",
                        process.stderr_text(),
                        process.stdout_text()
                    );
                }
                Ok(None) => {}
                Err(e) => panic!("waiting on {bin}: {e}"),
            }
            if Instant::now() >= deadline {
                panic!(
                    "{bin} {args:?} did not log `switchyard listening` within {STARTUP_TIMEOUT:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
                    process.stderr_text(),
                    process.stdout_text()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the child wrote to stderr so far, ANSI escapes removed.
    pub fn stderr_text(&self) -> String {
        read_captured(&self.stderr)
    }

    pub fn stdout_text(&self) -> String {
        read_captured(&self.stdout)
    }

    /// Sends `sig` via the `kill` utility, which keeps the tests free of
    /// libc/unsafe.
    pub fn signal(&self, sig: i32) {
        let pid = self.child.id();
        let out = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .output()
            .unwrap_or_else(|e| panic!("running `kill -{sig} {pid}`: {e}"));
        assert!(
            out.status.success(),
            "`kill -{sig} {pid}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Polls for exit; None if still running after `timeout`. Blocks the
    /// thread, so prefer `wait_exit_async` when the test runtime must keep
    /// serving (e.g. an upstream finishing a request during a graceful drain).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => {}
                Err(e) => panic!("waiting on switchyard (pid {}): {e}", self.child.id()),
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    pub async fn wait_exit_async(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => {}
                Err(e) => panic!("waiting on switchyard (pid {}): {e}", self.child.id()),
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until stderr contains `needle` (e.g. a reload log line); false on
    /// timeout. Async so in-process upstreams keep running meanwhile.
    pub async fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr_text().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
