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
use axum::routing::get;
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
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state);
    Ok((local, async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    }))
}
