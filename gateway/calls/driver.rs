//! The core's driver: the one place that owns the SIP transport and turns
//! the core's channels and timers into calls of its sans-IO entry points
//! ([`Core::handle_inbound`], [`Core::handle_timeout`], ...), then carries
//! out what [`Core::poll_output`] asks for.
//!
//! Tests drive the same core on virtual time without this loop.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::agent_media::MediaEnded;
use super::core::{Core, GuardRequest, Output};
use crate::agent::server::AgentEvent;
use crate::guard::Guard;
use crate::sip::transport::{Inbound, Transport};

/// Runs `core` until `shutdown` turns true, then ends every call, lets
/// the transport write what that queued and returns.
pub async fn run(
    mut core: Core,
    mut transport: Transport,
    mut inbound: mpsc::Receiver<Inbound>,
    mut agent_events: mpsc::Receiver<AgentEvent>,
    mut guard_requests: mpsc::Receiver<GuardRequest>,
    mut shutdown: watch::Receiver<bool>,
    shards: std::sync::Arc<crate::shards::Shards>,
) {
    let Some(mut media_ended) = core.media_ended.1.take() else {
        return;
    };
    let Some(mut reports) = core.records.reports_rx.take() else {
        return;
    };
    let mut guard_tick = tokio::time::interval(Guard::TICK);
    // Whether the last turn may have changed calls, transactions or
    // timers. A message dropped before the transaction layer (a flood
    // the IDS refuses, a stranger, garbage) changes none of them, so it
    // costs no deadline query, no transaction pump and no agent count.
    let mut stale = true;
    let mut deadline = None;
    loop {
        if stale {
            deadline = core.poll_timeout();
        }
        stale = true;
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = inbound.recv() => match msg {
                Some(m) => stale = core.handle_inbound(m, Instant::now()),
                None => break,
            },
            ev = agent_events.recv() => match ev {
                Some(e) => core.on_agent_event(e, Instant::now()),
                None => break,
            },
            Some(e) = media_ended.recv() => match e {
                MediaEnded::Agent(call) => core.media_timed_out(call, Instant::now()),
                MediaEnded::Call(id) => core.call_media_timed_out(id, Instant::now()),
            },
            Some(r) = guard_requests.recv() => core.on_guard_request(r, Instant::now()),
            Some(r) = reports.recv() => core.records.on_report(r),
            _ = guard_tick.tick() => core.guard.tick(Instant::now()),
            () = sleep => core.handle_timeout(Instant::now()),
            _ = shutdown.changed() => break,
        }
        if stale {
            core.settle(Instant::now());
        }
        carry_out(&mut core, &mut transport, &shards);
    }
    core.hang_up_all(Instant::now());
    core.pump(Instant::now());
    carry_out(&mut core, &mut transport, &shards);
    // Let the transport tasks write what was queued, and the media tasks
    // report for the records.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while let Ok(r) = reports.try_recv() {
        core.records.on_report(r);
    }
    core.records.flush_pending();
}

/// Does what the core asked for this turn.
fn carry_out(core: &mut Core, transport: &mut Transport, shards: &crate::shards::Shards) {
    let metrics = core.metrics.clone();
    while let Some(o) = core.poll_output() {
        match o {
            Output::Transmit(t) => transport.send(&t),
            Output::Peers { tls, networks } => {
                transport.set_tls_peers(tls);
                transport.set_peers(networks);
            }
            Output::StartMedia(task) => {
                let shard = task.shard().unwrap_or_else(|| shards.pick());
                shards.handle(shard).spawn(task.run(metrics.clone()));
            }
        }
    }
}
