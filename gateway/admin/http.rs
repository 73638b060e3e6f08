//! The admin HTTP listener: `GET /metrics` (Prometheus text format) and
//! `GET /healthz` (200 once the gateway is serving, 503 before).
//!
//! `/metrics` answers only `firewall.admin_networks` (403 otherwise), in
//! the process as well as in nftables: with `nftables = "auto"` on a host
//! that cannot load the table, or with the table flushed by hand, the
//! metrics (trunk names, call counts) still do not leak. `/healthz` says
//! only "ok" and stays open to load balancers and HA probes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing;
use axum::Router;

use crate::telemetry::metrics::Metrics;

/// What the handlers read.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    /// Set once every listener is bound.
    pub ready: AtomicBool,
    /// Who may read `/metrics` (`firewall.admin_networks`; a reload
    /// replaces it).
    pub admin_networks: std::sync::RwLock<Vec<ipnet::IpNet>>,
}

impl AdminState {
    /// Whether `ip` is in the admin networks (IPv4-mapped as IPv4).
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        crate::in_networks(
            &self
                .admin_networks
                .read()
                .unwrap_or_else(|p| p.into_inner()),
            ip,
        )
    }
}

async fn metrics(
    State(s): State<Arc<AdminState>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
) -> axum::response::Response {
    if !s.admits(from.ip()) {
        s.metrics.admin_refused.inc();
        return (StatusCode::FORBIDDEN, "not from an admin network\n").into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn healthz(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// Binds the admin listener; returns its address and the serving future.
pub async fn bind(
    addr: SocketAddr,
    state: Arc<AdminState>,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", routing::get(metrics))
        .route("/healthz", routing::get(healthz))
        .with_state(state);
    Ok((local, async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    }))
}

/// `path` from the admin listener at `admin` (a plain HTTP/1.1 GET: the
/// demo and the load generator read metrics with it).
pub fn get(admin: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    Some(r)
}

/// Waits (at most `wait`) until the gateway at `admin` has `n` agents
/// available.
pub async fn agents_available(
    admin: SocketAddr,
    n: u32,
    wait: std::time::Duration,
) -> Result<(), String> {
    let want = format!("tollgate_agents_available {n}");
    let until = std::time::Instant::now() + wait;
    loop {
        // Blocking I/O off the runtime's threads (a load generator runs
        // on one).
        let text = tokio::task::spawn_blocking(move || get(admin, "/metrics"))
            .await
            .ok()
            .flatten();
        if text.is_some_and(|m| m.lines().any(|l| l == want)) {
            return Ok(());
        }
        if std::time::Instant::now() > until {
            return Err(format!("{n} agents were not available within {wait:?}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}
