//! `tollgate incident drill`: a rehearsal against the running gateway
//! that harms nothing but a throw-away agent, run by an operator holding
//! the admin and auditor roles (root, on the appliance).
//!
//! 1. Enrols a throw-away agent (`drill-XXXXXXXX`, no profile) through
//!    the admin socket and logs it in once, as its owner would.
//! 2. A stolen bundle used from a new network: logs it in again from
//!    127.0.0.2. Detected when the `agent_new_address` anomaly is in the
//!    audit trail.
//! 3. A burst of failed logins: wrong codes until the gateway answers
//!    "locked out". Detected by the `agent locked out` audit entry;
//!    contained when the next attempt is refused before its code is read.
//! 4. A bulk read: whole-number record lists, repeated (at most
//!    [`BULK_PASSES`] times) until the `bulk_read` anomaly names the
//!    operator. A store with no records cannot rehearse it; the report
//!    says so.
//! 5. Revokes the throw-away agent and checks its bundle is refused.
//!
//! Each step is timed from its start to the audit entry that shows it
//! was detected. The drill sets off the alerts a real incident would
//! (TollgatePrivacyAnomaly, TollgateAgentLockedOut): tell whoever is on
//! call first. Records read in step 4 are discarded, not printed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::admin::control::{ask, request, Request};
use crate::agent::client::{Client, Options};
use crate::agent::store::Bundle;
use crate::agent::totp::{code_at, Secret};
use crate::telemetry::audit::Entry;

/// Full-store reads step 4 tries before giving up.
pub const BULK_PASSES: usize = 20;
/// What begins a drill agent's name (the compliance report finds the
/// last drill by it).
pub const PREFIX: &str = "drill-";
/// Wrong codes step 3 sends before giving up.
const MAX_WRONG: usize = 30;
/// How long a step waits for its audit entry.
const DETECT_WITHIN: Duration = Duration::from_secs(10);
/// How long one login attempt may take.
const LOGIN_WITHIN: Duration = Duration::from_secs(10);

/// One step's outcome.
#[derive(Debug, Serialize)]
pub struct Step {
    pub step: String,
    /// Whether the gateway noticed (an audit entry shows it).
    pub detected: bool,
    /// Milliseconds from the step's start to that entry.
    pub detected_ms: Option<u64>,
    /// What stopped it, if anything did.
    pub contained: String,
    /// The audit entry (action: target), if found.
    pub audited: Option<String>,
    /// Why the step could not be rehearsed, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// The drill's report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub started_ms: u64,
    pub agent: String,
    pub steps: Vec<Step>,
}

impl Report {
    /// Whether every step that ran was detected (and none was skipped).
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.detected && s.skipped.is_none())
    }
}

fn now_s() -> u64 {
    crate::unix_ms(std::time::SystemTime::now()) / 1000
}

/// An admin request, off the runtime.
async fn admin(socket: &Path, r: Request) -> Result<crate::admin::control::Response, String> {
    let socket = socket.to_path_buf();
    tokio::task::spawn_blocking(move || ask(&socket, &r))
        .await
        .map_err(|e| e.to_string())?
}

/// Audit entries since `from_ms`.
async fn audit_since(socket: &Path, from_ms: u64) -> Vec<Entry> {
    let socket: PathBuf = socket.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let Ok((r, lines)) = request(
            &socket,
            &Request::AuditList {
                from_ms,
                to_ms: u64::MAX,
            },
        ) else {
            return Vec::new();
        };
        if !r.ok {
            return Vec::new();
        }
        lines
            .filter_map(|l| serde_json::from_str::<Entry>(&l).ok())
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Waits (bounded) for an audit entry since `from_ms` that `f` picks:
/// it, and the milliseconds since `start`.
async fn detect(
    socket: &Path,
    from_ms: u64,
    start: Instant,
    f: impl Fn(&Entry) -> bool,
) -> Option<(Entry, u64)> {
    let end = start + DETECT_WITHIN;
    loop {
        if let Some(e) = audit_since(socket, from_ms).await.into_iter().find(&f) {
            let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            return Some((e, ms));
        }
        if Instant::now() > end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn login(bundle: &Bundle, code: &str, from: Option<SocketAddr>) -> Result<Client, String> {
    let opts = Options {
        bind: from,
        ..Options::default()
    };
    match tokio::time::timeout(LOGIN_WITHIN, Client::connect_with(bundle, code, opts)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
    }
}

fn step(name: &str, found: Option<(Entry, u64)>, contained: String) -> Step {
    Step {
        step: name.into(),
        detected: found.is_some(),
        detected_ms: found.as_ref().map(|(_, ms)| *ms),
        contained,
        audited: found.map(|(e, _)| format!("{}: {}", e.action, e.target)),
        skipped: None,
    }
}

/// Runs the drill against the gateway whose admin socket is `socket`.
pub async fn run(socket: &Path) -> Result<Report, String> {
    let started_ms = crate::unix_ms(std::time::SystemTime::now());
    // Entries of this drill only (the trail's times are milliseconds).
    let since = started_ms.saturating_sub(1);
    let me = admin(socket, Request::Whoami)
        .await?
        .operator
        .unwrap_or_default();
    let name = format!(
        "{PREFIX}{}",
        hex::encode(crate::crypto::random_u32().to_be_bytes())
    );
    let enrolled = admin(
        socket,
        Request::AgentEnroll {
            name: name.clone(),
            profile: None,
        },
    )
    .await?
    .enrolled
    .ok_or("the gateway answered without a bundle")?;
    let bundle: Bundle = toml::from_str(enrolled.bundle.as_str())
        .map_err(|e| format!("the gateway's bundle: {e}"))?;
    let secret = Secret::parse(enrolled.otp_uri.as_str()).ok_or("the gateway's TOTP URI")?;
    let mut steps = Vec::new();
    if let Err(why) = rehearse(socket, &name, &me, &bundle, &secret, since, &mut steps).await {
        // What ran is still reported; the rest could not be rehearsed.
        steps.push(Step {
            step: "rehearsal".into(),
            detected: false,
            detected_ms: None,
            contained: "stopped".into(),
            audited: None,
            skipped: Some(why),
        });
    }

    // 5. The throw-away agent goes, whatever happened above.
    let start = Instant::now();
    let revoked = admin(socket, Request::AgentRevoke { name: name.clone() }).await;
    let refused = match &revoked {
        Ok(_) => {
            // The registry is re-read within a second; until then the
            // agent is still the locked-out one of step 3.
            let mut refused = None;
            for _ in 0..20 {
                match login(&bundle, &code_at(&secret, now_s()), None).await {
                    // Refused for what it is now: revoked (at the
                    // handshake) or unknown. Anything else (still locked
                    // out, a timeout) is not containment.
                    Err(e) if e.contains("Revoked") || e.contains("unknown agent") => {
                        refused = Some((
                            e,
                            u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
                        ));
                        break;
                    }
                    Err(_) => {}
                    Ok(c) => c.conn.close(0u32.into(), b"drill"),
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            refused
        }
        Err(_) => None,
    };
    let found = detect(socket, since, start, |e| {
        e.action == "agent revoke" && e.target == name && e.outcome == "ok"
    })
    .await;
    // Detected here means its bundle is refused (and the revocation
    // audited), timed to the first refusal.
    let mut s = step(
        "throw-away agent removed",
        found.filter(|_| refused.is_some()),
        match (&revoked, &refused) {
            (Err(e), _) => format!("not revoked: {e}"),
            (Ok(_), Some((why, _))) => format!("revoked; its bundle is refused ({why})"),
            (Ok(_), None) => "revoked, yet its bundle is not refused as revoked".into(),
        },
    );
    if let (true, Some((_, ms))) = (s.detected, &refused) {
        s.detected_ms = Some(*ms);
    }
    steps.push(s);
    Ok(Report {
        started_ms,
        agent: name,
        steps,
    })
}

/// Steps 1 to 4.
async fn rehearse(
    socket: &Path,
    name: &str,
    me: &str,
    bundle: &Bundle,
    secret: &Secret,
    since: u64,
    steps: &mut Vec<Step>,
) -> Result<(), String> {
    // 1. Its owner's login sets its usual network.
    let t = now_s();
    let first = login(bundle, &code_at(secret, t), None)
        .await
        .map_err(|e| format!("the throw-away agent cannot log in: {e}"))?;
    first.conn.close(0u32.into(), b"drill");

    // 2. The same bundle and a fresh code from another network.
    let start = Instant::now();
    let elsewhere = SocketAddr::from(([127, 0, 0, 2], 0));
    let stolen = login(bundle, &code_at(secret, t + 30), Some(elsewhere)).await;
    let actor = format!("agent {name}");
    let found = detect(socket, since, start, |e| {
        e.action == crate::telemetry::anomaly::ACTION
            && e.actor == actor
            && e.target.starts_with("agent_new_address")
    })
    .await;
    steps.push(step(
        "stolen bundle used from a new network",
        found,
        match stolen {
            Ok(c) => {
                c.conn.close(0u32.into(), b"drill");
                "flagged, not refused (agents move); revoked at the end of the drill".into()
            }
            Err(e) => format!("refused: {e}"),
        },
    ));

    // 3. Wrong codes until the agent is locked out.
    let start = Instant::now();
    let good = code_at(secret, now_s());
    let wrong = format!(
        "{:06}",
        (good.parse::<u32>().unwrap_or(0) + 500_000) % 1_000_000
    );
    let mut locked = None;
    for _ in 0..MAX_WRONG {
        if let Err(e) = login(bundle, &wrong, Some(elsewhere)).await {
            if e.contains("locked out") {
                locked = Some(e);
                break;
            }
        }
    }
    let found = detect(socket, since, start, |e| {
        e.action == "agent locked out" && e.target == name
    })
    .await;
    steps.push(step(
        "burst of failed logins",
        found,
        match locked {
            Some(_) => "locked out: the next login was refused before its code was read".into(),
            None => format!("not locked out after {MAX_WRONG} wrong codes"),
        },
    ));

    // 4. Whole-number lists until the gateway calls it a bulk read.
    let start = Instant::now();
    let mut read = 0u64;
    let mut found = None;
    for _ in 0..BULK_PASSES {
        let n = {
            let socket = socket.to_path_buf();
            tokio::task::spawn_blocking(move || {
                let (r, lines) = request(
                    &socket,
                    &Request::CdrList {
                        from_ms: 0,
                        to_ms: u64::MAX,
                        agent: None,
                    },
                )?;
                if !r.ok {
                    return Err(r.error.unwrap_or_default());
                }
                Ok::<u64, String>(lines.count() as u64)
            })
            .await
            .map_err(|e| e.to_string())??
        };
        read += n;
        if n == 0 {
            break;
        }
        // The anomaly is recorded before the list's stream ends, and an
        // audit list syncs the trail first: one look is enough.
        found = audit_since(socket, since)
            .await
            .into_iter()
            .find(|e| {
                e.action == crate::telemetry::anomaly::ACTION
                    && e.actor == me
                    && e.target.starts_with("bulk_read")
            })
            .map(|e| (e, u64::try_from(start.elapsed().as_millis()).unwrap_or(0)));
        if found.is_some() {
            break;
        }
    }
    let mut s = step(
        "bulk read of whole numbers",
        found,
        format!("flagged after {read} records read (alert TollgatePrivacyAnomaly)"),
    );
    if read == 0 {
        s.skipped = Some("no call records to read".into());
        s.contained = "not rehearsed".into();
    }
    steps.push(s);
    Ok(())
}
