//! The media tasks the core asks its driver to start. The core builds
//! each from a call's negotiated media and the sockets it bound; the
//! driver decides where it runs (today a tokio task; a media shard per
//! core is the next step), so the core itself never spawns.

use std::sync::Arc;

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
    /// Relays until the call's control ends or the media times out.
    pub async fn run(self, metrics: Arc<Metrics>) {
        match self {
            Self::Service {
                setup,
                control,
                report,
            } => super::media::run(*setup, control, metrics, report).await,
            Self::Bridge {
                sides,
                control,
                report,
                timeout,
            } => {
                let (a, b) = *sides;
                super::bridge::run(a, b, control.0, control.1, metrics, report, timeout).await;
            }
            Self::Agent {
                media,
                control,
                report,
            } => super::agent_media::run(*media, control, metrics, report).await,
        }
    }
}
