//! One line per request, in Istio's default sidecar access-log format (or the same fields as
//! JSON). Lines go through a bounded queue to a writer thread: a slow sink drops lines (and
//! counts them), never requests.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::metrics::Registry;
use crate::proxy::record::{AccessInfo, RequestRecord};

/// Lines buffered before new ones are dropped.
const QUEUE: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    Stderr,
    File(PathBuf),
}

impl std::fmt::Display for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Stdout => f.write_str("stdout"),
            Sink::Stderr => f.write_str("stderr"),
            Sink::File(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Istio's default text format (Envoy's fields plus code details, cluster, route).
    Envoy,
    Json,
}

#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<String>,
    format: Format,
    registry: Arc<Registry>,
}

impl AccessLog {
    /// Opens the sink and starts the writer thread.
    pub fn start(
        sink: Sink,
        format: Format,
        registry: Arc<Registry>,
    ) -> std::io::Result<AccessLog> {
        let out: Box<dyn std::io::Write + Send> = match &sink {
            Sink::Stdout => Box::new(std::io::stdout()),
            Sink::Stderr => Box::new(std::io::stderr()),
            Sink::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, out))?;
        Ok(AccessLog {
            tx,
            format,
            registry,
        })
    }

    pub(crate) fn write(
        &self,
        info: &AccessInfo,
        rec: &RequestRecord,
        status: u16,
        flags: &str,
        duration_ms: u64,
        grpc_status: Option<u8>,
    ) {
        let line = match self.format {
            Format::Envoy => envoy_line(info, rec, status, flags, duration_ms),
            Format::Json => json_line(info, rec, status, flags, duration_ms, grpc_status),
        };
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.registry.proxy.access_log_dropped.inc();
            }
        }
    }
}

fn writer(rx: Receiver<String>, out: Box<dyn std::io::Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(line.as_bytes());
        // Drain what is queued, then flush once: batches under load, prompt when idle.
        while let Ok(more) = rx.recv_timeout(Duration::from_millis(0)) {
            let _ = out.write_all(more.as_bytes());
        }
        let _ = out.flush();
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn addr(a: Option<std::net::SocketAddr>) -> String {
    a.map_or_else(|| "-".to_string(), |a| a.to_string())
}

fn envoy_line(
    info: &AccessInfo,
    rec: &RequestRecord,
    status: u16,
    flags: &str,
    duration_ms: u64,
) -> String {
    let mut s = String::with_capacity(320);
    let _ = writeln!(
        s,
        "[{}] \"{} {} {}\" {} {} {} - \"{}\" {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} - {} {} - {}",
        rfc3339(rec.start_time()),
        or_dash(&info.method),
        or_dash(&info.path),
        info.protocol,
        status,
        flags,
        or_dash(&info.details),
        or_dash(&info.transport_failure),
        rec.request_bytes.load(std::sync::atomic::Ordering::Relaxed),
        rec.response_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        duration_ms,
        info.service_time_ms
            .map_or_else(|| "-".to_string(), |t| t.to_string()),
        or_dash(&info.forwarded_for),
        or_dash(&info.user_agent),
        or_dash(&info.request_id),
        or_dash(&info.authority),
        addr(info.upstream_host),
        or_dash(&info.upstream_cluster),
        addr(info.downstream_local),
        addr(info.downstream_remote),
        or_dash(&info.route_name),
    );
    s
}

fn json_line(
    info: &AccessInfo,
    rec: &RequestRecord,
    status: u16,
    flags: &str,
    duration_ms: u64,
    grpc_status: Option<u8>,
) -> String {
    let v = serde_json::json!({
        "start_time": rfc3339(rec.start_time()),
        "method": info.method,
        "path": info.path,
        "protocol": info.protocol,
        "response_code": status,
        "response_flags": flags,
        "response_code_details": info.details,
        "upstream_transport_failure_reason": info.transport_failure,
        "bytes_received": rec.request_bytes.load(std::sync::atomic::Ordering::Relaxed),
        "bytes_sent": rec.response_bytes.load(std::sync::atomic::Ordering::Relaxed),
        "duration": duration_ms,
        "upstream_service_time": info.service_time_ms,
        "x_forwarded_for": info.forwarded_for,
        "user_agent": info.user_agent,
        "request_id": info.request_id,
        "authority": info.authority,
        "upstream_host": info.upstream_host.map(|a| a.to_string()),
        "upstream_cluster": info.upstream_cluster,
        "downstream_local_address": info.downstream_local.map(|a| a.to_string()),
        "downstream_remote_address": info.downstream_remote.map(|a| a.to_string()),
        "route_name": info.route_name,
        "grpc_status": grpc_status,
    });
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// `2026-11-22T01:04:51.147Z`, without a date library: days-to-civil (H. Hinnant's algorithm).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_with_millis() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_827_891_147);
        assert_eq!(rfc3339(t), "2026-11-28T01:04:51.147Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
