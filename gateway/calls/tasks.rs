//! The media tasks the core asks its driver to start. The core builds
//! each from a call's negotiated media and the sockets it bound; the
//! driver decides where it runs (an agent's call on its agent's media
//! shard, [`crate::shards`]; others in turn), so the core itself never
//! spawns. A task moves its sockets to the runtime it runs on.

use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::agent_media::AgentMedia;
use super::bridge::Side;
use super::media::{Control, MediaSetup, Reporter, Timeout};
use crate::telemetry::metrics::Metrics;

/// One call's media, ready to run.
pub enum MediaTask {
    /// A service (echo, tone) on one leg.
    Service {
        setup: Box<MediaSetup>,
        control: mpsc::Receiver<Control>,
        report: Reporter,
    },
    /// Two trunk legs bridged.
    Bridge {
        sides: Box<(Side, Side)>,
        control: (mpsc::Receiver<Control>, mpsc::Receiver<Control>),
        report: Reporter,
        timeout: Option<Timeout>,
    },
    /// A trunk leg and an agent's session.
    Agent {
        media: Box<AgentMedia>,
        control: mpsc::Receiver<Control>,
        report: Reporter,
    },
}

impl MediaTask {
    /// The shard it must run on: its agent's, if it has one.
    pub fn shard(&self) -> Option<usize> {
        match self {
            Self::Agent { media, .. } => Some(media.link.shard),
            _ => None,
        }
    }

    /// Relays until the call's control ends or the media times out.
    pub async fn run(self, metrics: Arc<Metrics>) {
        // A socket bound where the core runs would wake that runtime's
        // reactor: each moves to this one's first.
        if let Err(e) = self.run_here(metrics).await {
            tracing::warn!(error = %e, "media sockets could not move to their shard; the call ends");
        }
    }

    async fn run_here(self, metrics: Arc<Metrics>) -> std::io::Result<()> {
        match self {
            Self::Service {
                setup,
                control,
                report,
            } => {
                let mut s = *setup;
                (s.rtp, s.rtcp) = rehome(s.rtp, s.rtcp)
                    .inspect_err(|_| gave_up(s.timeout.as_ref(), report.clone()))?;
                super::media::run(s, control, metrics, report).await;
            }
            Self::Bridge {
                sides,
                control,
                report,
                timeout,
            } => {
                let (mut a, mut b) = *sides;
                let moved = rehome(a.rtp, a.rtcp).and_then(|ra| Ok((ra, rehome(b.rtp, b.rtcp)?)));
                let ((ar, ac), (br, bc)) =
                    moved.inspect_err(|_| gave_up(timeout.as_ref(), report.clone()))?;
                (a.rtp, a.rtcp, b.rtp, b.rtcp) = (ar, ac, br, bc);
                super::bridge::run(a, b, control.0, control.1, metrics, report, timeout).await;
            }
            Self::Agent {
                media,
                control,
                report,
            } => {
                let mut m = *media;
                (m.rtp, m.rtcp) = rehome(m.rtp, m.rtcp)
                    .inspect_err(|_| gave_up(m.timeout.as_ref(), report.clone()))?;
                // The shard's QUIC engine runs it from here on, beside
                // the agent's connection.
                let conn = m.link.conn.clone();
                let call = super::agent_media::AgentCall::new(m, control, metrics, report);
                conn.adopt(Box::new(call));
            }
        }
        Ok(())
    }
}

/// A task that cannot run ends its call as silence would (if the call
/// has a silence limit) and gives its record an empty media report, so
/// the call is not left up with no media until its longest duration.
fn gave_up(timeout: Option<&Timeout>, report: Reporter) {
    if let Some(t) = timeout {
        let _ = t.tell.send(t.ended.clone());
    }
    if let Some((id, tx)) = report {
        let _ = tx.try_send(super::media::MediaReport {
            id,
            media: Vec::new(),
            guard: Vec::new(),
        });
    }
}

/// An RTP socket (and its RTCP one) registered with the runtime this
/// runs on, taken off the one it was bound on.
fn rehome(
    rtp: UdpSocket,
    rtcp: Option<UdpSocket>,
) -> std::io::Result<(UdpSocket, Option<UdpSocket>)> {
    let again = |s: UdpSocket| UdpSocket::from_std(s.into_std()?);
    Ok((again(rtp)?, rtcp.map(again).transpose()?))
}
