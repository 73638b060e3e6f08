//! The admin socket: a Unix socket (`$RUNTIME_DIRECTORY/admin.sock`,
//! `/run/tollgate/admin.sock` under systemd, else `admin.sock` in the
//! data directory) through which the `tollgate` command talks to the
//! running daemon: call records (sled allows one process), the audit
//! trail, firewall bans. One JSON request line; one JSON response line,
//! then, for listings and exports, the data lines until the end.
//!
//! Who asks is read from the socket's peer credentials and mapped to
//! roles ([`super::roles`]); every request is written to the audit trail
//! with its outcome, refusals included. A Unix socket rather than an
//! HTTP endpoint: file permissions and kernel-checked credentials say
//! who is asking, with nothing listening on the network.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;
use zeroize::Zeroizing;

use super::roles::{Operator, Role, Roles};
use crate::admin::approvals::{Action, State};
use crate::admin::erase;
use crate::admin::oversight::{self, Reads};
use crate::calls::core::GuardRequest;
use crate::cdr::record::CSV_HEADER;
use crate::cdr::store::{RecordId, Store};
use crate::telemetry::anomaly::Anomalies;
use crate::telemetry::audit::{self, Audit};

mod admission;
mod records;
mod wire;
use admission::{admit, Admission};
use records::{stream_records, without_records};
use wire::rotation_key;
pub use wire::{Enrolled, Format, Listed, Request, Response, SecretText, Shred};

/// The socket's file name.
pub const SOCKET: &str = "admin.sock";
/// Longest request line.
const MAX_LINE: u64 = 4096;
/// A request must arrive within this; a listing may take longer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once, and per local user (root and the
/// gateway's own user are held only to the total): a local user looping
/// on `connect` cannot starve the admin on call, and each connection
/// lasts at most [`TIMEOUT`] without a request.
pub const MAX_CONNECTIONS: usize = 64;
pub const MAX_CONNECTIONS_PER_USER: usize = 8;

/// Where the daemon binds: `$RUNTIME_DIRECTORY/admin.sock` (systemd's
/// RuntimeDirectory=), else in the data directory.
pub fn path(data_dir: &Path) -> PathBuf {
    match std::env::var_os("RUNTIME_DIRECTORY") {
        Some(d) => PathBuf::from(d).join(SOCKET),
        None => data_dir.join(SOCKET),
    }
}

/// Where the command looks: `$TOLLGATE_ADMIN_SOCKET`, else
/// `/run/tollgate/admin.sock` if there is one, else the data directory's.
pub fn client_path(data_dir: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("TOLLGATE_ADMIN_SOCKET") {
        return PathBuf::from(p);
    }
    let system = Path::new("/run/tollgate").join(SOCKET);
    if system.exists() {
        return system;
    }
    data_dir.join(SOCKET)
}

/// What the socket serves from.
pub struct Admin {
    pub core: mpsc::Sender<GuardRequest>,
    /// `None` when the record store could not open at start (a full
    /// disk): record commands then say so.
    pub store: Option<Arc<Store>>,
    pub roles: Roles,
    pub audit: Audit,
    pub audit_key: Zeroizing<[u8; 32]>,
    /// Names a number in requests and the audit trail (derived from the
    /// audit key).
    pub numbers: crate::admin::erase::NumberHash,
    /// For master-key rotation: the data directory, the running key, and
    /// the development key file when that is the key in use.
    pub data_dir: PathBuf,
    pub master: Arc<crate::keys::Master>,
    pub dev_key: Option<PathBuf>,
    /// The address written into agents' bundles.
    pub agents_address: String,
    /// The running configuration (enrolment checks profiles against it).
    pub config: tokio::sync::watch::Receiver<Arc<crate::config::Config>>,
    /// `tollgate_cdr_retention_held`, cleared by a confirmed shred.
    pub retention_held: prometheus::IntGauge,
    /// Requests to take data out, and their approvals.
    pub approvals: Arc<crate::admin::approvals::Approvals>,
    /// Where unusual access is reported.
    pub anomalies: Anomalies,
    /// Whole-number records each operator read lately.
    pub reads: Reads,
    /// The incident lockdown state.
    pub incident: Arc<crate::incident::Incident>,
    /// What the compliance report reads counters from.
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    /// The configuration file (`None`: the embedded defaults).
    pub config_source: Option<PathBuf>,
    /// Held while a compliance report is made.
    pub reports: tokio::sync::Mutex<()>,
}

/// Binds the socket (replacing a stale one) and serves it until the
/// process ends. With `[admin] socket_group` only that group's members
/// may connect (mode 0660); without, anyone local may (0666). Either way,
/// what they may do is decided by their credentials.
pub fn serve(socket: &Path, admin: Admin) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let group = admin.config.borrow().socket_group.clone();
    let gid = match &group {
        Some(name) => {
            let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
            Some(super::roles::gid_of(name, &groups).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("[admin] socket_group {name:?}: no such group"),
                )
            })?)
        }
        None => None,
    };
    let _ = std::fs::remove_file(socket);
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(socket)?;
    let mode = match gid {
        Some(gid) => {
            std::os::unix::fs::chown(socket, None, Some(gid)).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "[admin] socket_group: cannot give the admin socket to group {gid} ({e}); the service must be a member of it (its groups: {})",
                        super::roles::own_status("Groups:").unwrap_or_default()
                    ),
                )
            })?;
            0o660
        }
        None => 0o666,
    };
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))?;
    let admin = Arc::new(admin);
    let table = Arc::new(std::sync::Mutex::new(Admission::default()));
    let own = super::roles::current_uid();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let uid = stream.peer_cred().map_or(u32::MAX, |c| c.uid());
            let Some(place) = admit(&table, uid, own) else {
                // Said without waiting on the caller (a bounded write to
                // a fresh socket buffer), then closed.
                let (_, mut w) = stream.into_split();
                tokio::spawn(async move {
                    let busy = Response::error(format!(
                        "the admin socket is busy ({MAX_CONNECTIONS} connections, {MAX_CONNECTIONS_PER_USER} per user); try again"
                    ));
                    let _ = tokio::time::timeout(TIMEOUT, send(&mut w, &busy)).await;
                });
                continue;
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                handle(stream, &admin).await;
                drop(place);
            });
        }
    });
    Ok(socket.to_path_buf())
}

fn operator_of(stream: &tokio::net::UnixStream, roles: &Roles) -> Option<Operator> {
    let cred = stream.peer_cred().ok()?;
    let groups = super::peer::groups(stream).ok()?;
    Some(roles.operator(cred.uid(), cred.gid(), &groups))
}

async fn handle(stream: tokio::net::UnixStream, admin: &Admin) {
    let op = operator_of(&stream, &admin.roles);
    let (read, mut write) = stream.into_split();
    // Wiped when dropped: a rotation's request carries a key.
    let mut line = Zeroizing::new(String::new());
    let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_LINE));
    match tokio::time::timeout(TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => {}
        _ => {
            debug!("admin socket: no request in time");
            return;
        }
    }
    let Some(op) = op else {
        let _ = send(
            &mut write,
            &Response::error("cannot read the caller's credentials"),
        )
        .await;
        return;
    };
    let req = match serde_json::from_str::<Request>(line.trim()) {
        Ok(r) => r,
        Err(e) => {
            let _ = send(&mut write, &Response::error(format!("bad request: {e}"))).await;
            return;
        }
    };
    let (action, target) = req.describe(&admin.numbers);
    if let Some(role) = req.needs() {
        if !op.has(role) {
            admin.audit.record(&op.actor(), action, &target, "denied");
            let have = if op.roles.is_empty() {
                "no role".to_string()
            } else {
                op.roles
                    .iter()
                    .map(Role::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = send(
                &mut write,
                &Response::error(format!(
                    "permission denied: {action} needs the {role} role (Unix group {}); {} has {have}",
                    admin.roles.group_for(role),
                    op.actor()
                )),
            )
            .await;
            return;
        }
    }
    let held = req.held_in_lockdown()
        || oversight::touches(&req, &op).is_some_and(|(_, whole_numbers)| whole_numbers);
    if let (true, Some(l)) = (held, admin.incident.current()) {
        admin
            .audit
            .record(&op.actor(), action, &target, "denied: incident lockdown");
        let why = format!(
            "refused: an incident lockdown is in force ({}, by {}); whole-number reads, exports, erasures, shredding and enrolments wait for its release (tollgate incident release, by a second person with the approver role)",
            l.reason, l.by
        );
        let _ = send(&mut write, &Response::error(why)).await;
        return;
    }
    if let Some(why) = oversight::off_hours(&req, &op, admin, action, &target) {
        admin.audit.record(&op.actor(), action, &target, "denied");
        let _ = send(&mut write, &Response::error(why)).await;
        return;
    }
    let outcome = run(req, &op, admin, &mut write).await;
    if action != "whoami" {
        admin.audit.record(&op.actor(), action, &target, &outcome);
    }
}

async fn send(w: &mut tokio::net::unix::OwnedWriteHalf, r: &Response) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(r).unwrap_or_default();
    out.push(b'\n');
    w.write_all(&out).await
}

/// Carries out an allowed request; returns the outcome for the audit.
async fn run(
    req: Request,
    op: &Operator,
    admin: &Admin,
    w: &mut tokio::net::unix::OwnedWriteHalf,
) -> String {
    let gone = || Response::error("the gateway is stopping");
    let response = match req {
        Request::Whoami => Response {
            operator: Some(op.actor()),
            roles: Some(op.roles.clone()),
            ..Response::ok()
        },
        Request::Bans => {
            let (tx, rx) = oneshot::channel();
            match admin.core.send(GuardRequest::Bans(tx)).await {
                Ok(()) => rx.await.map_or_else(
                    |_| gone(),
                    |bans| Response {
                        bans: Some(bans),
                        ..Response::ok()
                    },
                ),
                Err(_) => gone(),
            }
        }
        Request::Unban { addr } => {
            let (tx, rx) = oneshot::channel();
            match admin.core.send(GuardRequest::Unban(addr, tx)).await {
                Ok(()) => rx.await.map_or_else(
                    |_| gone(),
                    |lifted| Response {
                        lifted: Some(lifted),
                        ..Response::ok()
                    },
                ),
                Err(_) => gone(),
            }
        }
        Request::Reload => {
            let (tx, rx) = oneshot::channel();
            match admin.core.send(GuardRequest::Reload(tx)).await {
                Ok(()) => match rx.await {
                    Ok(Ok(())) => Response::ok(),
                    Ok(Err(e)) => Response::error(e),
                    Err(_) => gone(),
                },
                Err(_) => gone(),
            }
        }
        Request::AuditVerify => {
            admin.audit.synced().await;
            // Reading the whole trail is file work: on a blocking thread.
            let (path, key) = (admin.audit.path().to_path_buf(), admin.audit_key.clone());
            match blocking(move || audit::verify(&path, &key)).await {
                Ok(audit::Verdict::Intact { entries, gaps }) => Response {
                    verified: Some(if gaps.is_empty() {
                        format!("intact: {entries} entries")
                    } else {
                        format!(
                            "intact: {entries} entries, with {} gap(s) the gateway recorded: {}",
                            gaps.len(),
                            gaps.join("; ")
                        )
                    }),
                    ..Response::ok()
                },
                Ok(audit::Verdict::Broken { line, why }) => Response {
                    verified: Some(format!("broken at line {line}: {why}")),
                    ..Response::error(format!("the audit trail is broken at line {line}: {why}"))
                },
                Err(e) => Response::error(e),
            }
        }
        Request::RotateMaster { key } => {
            let Some(store) = admin.store.clone() else {
                return without_records(w).await;
            };
            let master = admin.master.clone();
            let (dir, dev) = (admin.data_dir.clone(), admin.dev_key.clone());
            match rotation_key(&key) {
                None => Response::error("the new key must be 64 hex digits"),
                Some(key) => {
                    let rotated = blocking(move || {
                        crate::admin::rotate::rotate(
                            &dir,
                            &store,
                            &master,
                            dev.as_deref(),
                            &key,
                            crate::now_ms(),
                        )
                    })
                    .await;
                    match rotated {
                        Ok(r) => Response {
                            rotated: Some(r),
                            ..Response::ok()
                        },
                        Err(e) => Response::error(e),
                    }
                }
            }
        }
        Request::AgentEnroll { name, profile } => {
            let (dir, master) = (admin.data_dir.clone(), admin.master.clone());
            let address = admin.agents_address.clone();
            // Checked against the configuration running now (a reload
            // publishes its new one).
            let config = admin.config.borrow().clone();
            let done = blocking(move || {
                let known = profile
                    .as_deref()
                    .map(|p| crate::agent::store::KnownProfile::check(p, &config))
                    .transpose()?;
                crate::agent::store::Store::new(&dir).enroll(
                    &master.current(),
                    &name,
                    known,
                    &address,
                )
            })
            .await;
            match done {
                Ok(e) => Response {
                    enrolled: Some(Enrolled {
                        bundle: SecretText::new(&e.bundle),
                        otp_uri: SecretText::new(&e.otp_uri),
                    }),
                    ..Response::ok()
                },
                Err(e) => Response::error(e),
            }
        }
        Request::CdrShred { confirm } => {
            let Some(store) = admin.store.clone() else {
                return without_records(w).await;
            };
            let days = admin.config.borrow().retention_days;
            let now = crate::now_ms();
            let done = blocking(move || {
                let (due, held) = store.retention_plan(days, now);
                let mut out = Shred {
                    retention_days: days,
                    due_days: due,
                    held: held.map(|h| h.to_string()),
                    ..Shred::default()
                };
                if confirm {
                    let e = store.shred_confirmed(days, now)?;
                    out.shredded_days = e.days;
                    out.shredded_records = e.records;
                }
                Ok::<_, crate::cdr::store::CdrError>(out)
            })
            .await;
            match done {
                Ok(shred) => {
                    if confirm {
                        admin.retention_held.set(0);
                    }
                    Response {
                        shred: Some(shred),
                        ..Response::ok()
                    }
                }
                Err(e) => Response::error(e),
            }
        }
        Request::AgentRevoke { name } => {
            let dir = admin.data_dir.clone();
            match blocking(move || crate::agent::store::Store::new(&dir).revoke(&name)).await {
                Ok(()) => Response::ok(),
                Err(e) => Response::error(e),
            }
        }
        Request::CdrShow { id } => match id.parse::<RecordId>() {
            Err(e) => Response::error(e),
            Ok(rid) => {
                let Some(store) = admin.store.clone() else {
                    return without_records(w).await;
                };
                let full = op.has(Role::Auditor);
                let mask = admin.config.borrow().mask;
                match blocking(move || store.get(rid)).await {
                    Ok(Some(r)) => {
                        let r = if full { r } else { r.masked(mask) };
                        let _ = send(
                            w,
                            &Response {
                                stream: true,
                                ..Response::ok()
                            },
                        )
                        .await;
                        let line =
                            serde_json::to_string(&Listed { id, record: r }).unwrap_or_default();
                        let _ = w.write_all(format!("{line}\n").as_bytes()).await;
                        if full {
                            oversight::count_reads(admin, op, 1);
                        }
                        return "ok".into();
                    }
                    Ok(None) => Response::error(format!("no record {id}")),
                    Err(e) => Response::error(e),
                }
            }
        },
        Request::CdrList {
            from_ms,
            to_ms,
            agent,
        } => {
            let full = op.has(Role::Auditor);
            let mask = admin.config.borrow().mask;
            let (outcome, n) = stream_records(admin, w, from_ms, to_ms, None, move |id, r| {
                if agent.as_ref().is_some_and(|a| r.agent.as_ref() != Some(a)) {
                    return None;
                }
                let r = if full { r } else { r.masked(mask) };
                serde_json::to_string(&Listed {
                    id: id.to_string(),
                    record: r,
                })
                .ok()
            })
            .await;
            if full {
                oversight::count_reads(admin, op, n);
            }
            return outcome;
        }
        Request::ExportRequest {
            from_ms,
            to_ms,
            format,
            reason,
        } => {
            let (approvals, who) = (admin.approvals.clone(), op.clone());
            let now = crate::unix_ms(std::time::SystemTime::now());
            // An approval covers the records there were when it was
            // asked for, not those that arrive later.
            let action = Action::Export {
                from_ms,
                to_ms: to_ms.min(now.saturating_add(1)),
                format,
            };
            match blocking(move || approvals.file(&who, action, &reason, now)).await {
                Ok(a) => Response {
                    approval: Some(a),
                    ..Response::ok()
                },
                Err(e) => Response::error(e),
            }
        }
        Request::ApprovalsList => {
            if !(op.has(Role::Approver) || op.has(Role::Auditor)) {
                Response::error(format!(
                    "permission denied: approvals list needs the approver or auditor role; {} has neither",
                    op.actor()
                ))
            } else {
                let approvals = admin.approvals.clone();
                let now = crate::unix_ms(std::time::SystemTime::now());
                match blocking(move || Ok::<_, String>(approvals.list(now))).await {
                    Ok(list) => Response {
                        approvals: Some(list),
                        ..Response::ok()
                    },
                    Err(e) => Response::error(e),
                }
            }
        }
        Request::ApprovalDecide { id, approve } => {
            let (approvals, who) = (admin.approvals.clone(), op.clone());
            let now = crate::unix_ms(std::time::SystemTime::now());
            match blocking(move || approvals.decide(&id, &who, approve, now)).await {
                Ok(a) => Response {
                    approval: Some(a),
                    ..Response::ok()
                },
                Err(e) => Response::error(e),
            }
        }
        Request::CdrExport { approval } => {
            let (approvals, who) = (admin.approvals.clone(), op.clone());
            let now = crate::unix_ms(std::time::SystemTime::now());
            let id = approval.clone();
            let a = match blocking(move || {
                approvals.take(&approval, &who, now, |action| match action {
                    Action::Export { .. } => Ok(()),
                    _ => Err(format!("request {id} is not an export")),
                })
            })
            .await
            {
                Ok(a) => a,
                Err(e) => {
                    let _ = send(w, &Response::error(e.clone())).await;
                    return format!("error: {e}");
                }
            };
            let Action::Export {
                from_ms,
                to_ms,
                format,
            } = a.action.clone()
            else {
                return "error: not an export".into();
            };
            let approved_by = match &a.state {
                State::Approved { by, .. } => by.clone(),
                _ => String::new(),
            };
            // The export names itself, so a copy found elsewhere leads
            // back to its request, requester and approver.
            let mark = serde_json::json!({
                "export": a.id,
                "requested_by": a.requester,
                "approved_by": approved_by,
                "reason": a.reason,
                "from_ms": from_ms,
                "to_ms": to_ms,
            })
            .to_string();
            // On disk before any record leaves: who, whose approval, what.
            admin.audit.record(
                &op.actor(),
                "cdr export start",
                &format!(
                    "request {} by {} approved by {approved_by}: {} reason={:?}",
                    a.id, a.requester, a.action, a.reason
                ),
                "ok",
            );
            admin.audit.synced().await;
            let preamble = match format {
                Format::Csv => format!("# tollgate export {mark}\n{CSV_HEADER}"),
                Format::Jsonl => mark,
            };
            let (outcome, _) = stream_records(
                admin,
                w,
                from_ms,
                to_ms,
                Some(preamble),
                move |id, r| match format {
                    Format::Csv => Some(r.csv_row(&id.to_string())),
                    Format::Jsonl => serde_json::to_string(&Listed {
                        id: id.to_string(),
                        record: r.exported(),
                    })
                    .ok(),
                },
            )
            .await;
            return format!("{outcome}; export {}", a.id);
        }
        Request::EraseRequest { number, reason } => match erase::digits(number.as_str()) {
            Err(e) => Response::error(e),
            Ok(d) => {
                let (approvals, who) = (admin.approvals.clone(), op.clone());
                let now = crate::unix_ms(std::time::SystemTime::now());
                let action = Action::Erase {
                    number_hash: admin.numbers.of(&d),
                };
                match blocking(move || approvals.file(&who, action, &reason, now)).await {
                    Ok(a) => Response {
                        approval: Some(a),
                        ..Response::ok()
                    },
                    Err(e) => Response::error(e),
                }
            }
        },
        Request::CdrErase { approval, number } => {
            let Some(store) = admin.store.clone() else {
                return without_records(w).await;
            };
            let d = match erase::digits(number.as_str()) {
                Ok(d) => Zeroizing::new(d),
                Err(e) => {
                    let _ = send(w, &Response::error(e.clone())).await;
                    return format!("error: {e}");
                }
            };
            let hash = admin.numbers.of(&d);
            let (approvals, who) = (admin.approvals.clone(), op.clone());
            let now = crate::unix_ms(std::time::SystemTime::now());
            let (id, approved) = (approval.clone(), hash.clone());
            let a = match blocking(move || {
                approvals.take(&approval, &who, now, |action| match action {
                    Action::Erase { number_hash } if *number_hash == approved => Ok(()),
                    Action::Erase { .. } => Err(format!(
                        "that is not the number request {id} was approved for"
                    )),
                    _ => Err(format!("request {id} is not an erasure")),
                })
            })
            .await
            {
                Ok(a) => a,
                Err(e) => {
                    let _ = send(w, &Response::error(e.clone())).await;
                    return format!("error: {e}");
                }
            };
            let approved_by = match &a.state {
                State::Approved { by, .. } => by.clone(),
                _ => String::new(),
            };
            // On disk before anything is removed.
            admin.audit.record(
                &op.actor(),
                "cdr erase start",
                &format!(
                    "request {} by {} approved by {approved_by}: number hmac {hash} reason={:?}",
                    a.id, a.requester, a.reason
                ),
                "ok",
            );
            admin.audit.synced().await;
            match blocking(move || erase::erase(&store, &d)).await {
                Ok(e) => {
                    let outcome = format!(
                        "ok: {} records erased of {} read, {} of calls in progress kept, {} unreadable; number hmac {hash}; request {}",
                        e.removed, e.scanned, e.in_progress, e.damaged, a.id
                    );
                    let _ = send(
                        w,
                        &Response {
                            erased: Some(e),
                            approval: Some(a),
                            ..Response::ok()
                        },
                    )
                    .await;
                    return outcome;
                }
                Err(e) => Response::error(e),
            }
        }
        Request::IncidentLockdown { reason } => {
            if let Some(l) = admin.incident.current() {
                Response::error(format!("already in lockdown ({}, by {})", l.reason, l.by))
            } else {
                // The chain's head, on disk and in the journal before
                // anything else happens.
                let (anchor_seq, anchor_hash) = admin.audit.anchored().await.unwrap_or_default();
                let l = crate::incident::Lockdown {
                    since_ms: crate::unix_ms(std::time::SystemTime::now()),
                    reason,
                    by: op.actor(),
                    by_uid: op.uid,
                    anchor_seq,
                    anchor_hash,
                };
                let incident = admin.incident.clone();
                match blocking(move || incident.lock_down(l)).await {
                    Ok(l) => {
                        tracing::warn!(
                            by = %l.by,
                            audit_seq = l.anchor_seq,
                            audit_hash = %l.anchor_hash,
                            "INCIDENT LOCKDOWN: agents out but break-glass, no exports, erasures or shredding"
                        );
                        let outcome = format!(
                            "ok: lockdown; audit head seq {} hash {}",
                            l.anchor_seq, l.anchor_hash
                        );
                        let _ = send(
                            w,
                            &Response {
                                incident: Some(l),
                                ..Response::ok()
                            },
                        )
                        .await;
                        return outcome;
                    }
                    Err(e) => Response::error(e),
                }
            }
        }
        Request::IncidentRelease => {
            let (incident, uid) = (admin.incident.clone(), op.uid);
            match blocking(move || incident.release(uid)).await {
                Ok(l) => {
                    tracing::warn!(by = %op.actor(), "incident lockdown released");
                    Response {
                        incident: Some(l),
                        ..Response::ok()
                    }
                }
                Err(e) => Response::error(e),
            }
        }
        Request::IncidentStatus => {
            if op.roles.is_empty() {
                Response::error(format!(
                    "permission denied: incident status needs a role; {} has none",
                    op.actor()
                ))
            } else {
                Response {
                    incident: admin.incident.current(),
                    ..Response::ok()
                }
            }
        }
        Request::ComplianceReport { json } => {
            // One at a time: each reads the whole audit trail.
            let Ok(_one) = admin.reports.try_lock() else {
                let _ = send(
                    w,
                    &Response::error(
                        "a compliance report is being made; try again when it is done",
                    ),
                )
                .await;
                return "refused: another report in progress".into();
            };
            let rendered = match crate::admin::compliance::gather(admin).await {
                Ok(facts) => {
                    let report = crate::admin::compliance::Report::new(facts);
                    let signer = crate::admin::compliance::sign::Signer::new(&admin.audit_key);
                    blocking(move || {
                        Ok::<_, String>(crate::admin::compliance::render(&report, &signer, json))
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            match rendered {
                Ok(r) => Response {
                    report: Some(r),
                    ..Response::ok()
                },
                Err(e) => Response::error(e),
            }
        }
        Request::AuditList { from_ms, to_ms } => {
            admin.audit.synced().await;
            let path = admin.audit.path().to_path_buf();
            match blocking(move || audit::list(&path, from_ms, to_ms)).await {
                Ok(entries) => {
                    let _ = send(
                        w,
                        &Response {
                            stream: true,
                            ..Response::ok()
                        },
                    )
                    .await;
                    for e in entries {
                        let line = serde_json::to_string(&e).unwrap_or_default();
                        if w.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                            return "cut short".into();
                        }
                    }
                    return "ok".into();
                }
                Err(e) => Response::error(e),
            }
        }
    };
    let outcome = if let Some(r) = &response.rotated {
        format!(
            "ok: key {} replaced key {} ({} record days, {} agents re-sealed)",
            r.new_key, r.old_key, r.record_days, r.agents
        )
    } else if let (true, Some(r)) = (response.ok, &response.report) {
        format!(
            "ok: sha256 {}, signing key {}, {} pass {} warn {} fail",
            r.sha256, r.key, r.pass, r.warn, r.fail
        )
    } else if let (true, Some(a)) = (response.ok, &response.approval) {
        format!("ok: request {}", a.id)
    } else if response.ok {
        "ok".to_string()
    } else {
        format!("error: {}", response.error.as_deref().unwrap_or(""))
    };
    let _ = send(w, &response).await;
    outcome
}

/// Sends `r` to the daemon at `socket` (the command's side, blocking):
/// the response, and a reader for the data lines that follow.
pub fn request(
    socket: &Path,
    r: &Request,
) -> Result<(Response, impl Iterator<Item = String>), String> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach a running gateway at {} ({e}); is it running with this --data-dir?",
            socket.display()
        )
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(300)));
    let mut line = serde_json::to_vec(r).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(s);
    let mut answer = String::new();
    reader
        .read_line(&mut answer)
        .map_err(|e| format!("no answer from the gateway: {e}"))?;
    let resp: Response = serde_json::from_str(answer.trim())
        .map_err(|e| format!("bad answer from the gateway: {e}"))?;
    // Lines exactly as sent (a CSV cell may hold a CR); a stream that
    // breaks off ends with a damaged-line marker, so the command fails
    // rather than leave a short file looking whole.
    let mut broken = false;
    let lines = std::iter::from_fn(move || {
        if broken {
            return None;
        }
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                Some(String::from_utf8_lossy(&buf).into_owned())
            }
            Err(e) => {
                broken = true;
                Some(serde_json::json!({ "damaged": format!("the stream from the gateway broke off: {e}") }).to_string())
            }
        }
    });
    Ok((resp, lines))
}

/// [`request`] for a request answered in one line: the response if the
/// daemon carried it out, else its error.
pub fn ask(socket: &Path, r: &Request) -> Result<Response, String> {
    let (resp, _) = request(socket, r)?;
    if resp.ok {
        Ok(resp)
    } else {
        Err(resp.error.unwrap_or_default())
    }
}

/// Runs blocking work (disk, sealing) off the runtime: its result, with
/// its error or the task's as text.
async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, String>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod admission_tests {
    use super::*;

    #[test]
    fn connections_are_capped_per_user_and_in_all() {
        let t = Arc::new(std::sync::Mutex::new(Admission::default()));
        let own = 999;
        let mallory: Vec<_> = (0..MAX_CONNECTIONS_PER_USER)
            .map(|_| admit(&t, 1001, own).expect("within the user's cap"))
            .collect();
        assert!(admit(&t, 1001, own).is_none(), "over the user's cap");
        // Another user, root and the gateway's own user still get in.
        let alice = admit(&t, 1002, own).expect("another user");
        let root: Vec<_> = (0..20).map(|_| admit(&t, 0, own).expect("root")).collect();
        let _me = admit(&t, own, own).expect("the gateway's user");
        drop(mallory);
        assert!(admit(&t, 1001, own).is_some(), "places come back");
        // The total holds for everyone, root included.
        let rest: Vec<_> = std::iter::from_fn(|| admit(&t, 0, own)).take(100).collect();
        assert_eq!(1 + root.len() + 1 + rest.len(), MAX_CONNECTIONS);
        assert!(admit(&t, 0, own).is_none());
        drop(alice);
        assert!(admit(&t, 0, own).is_some());
    }
}
