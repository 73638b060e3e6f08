//! The control socket: a Unix socket in the data directory
//! (`control.sock`, mode 0600, so only the gateway's own user and root
//! reach it) through which `tollgate firewall bans|unban|reload` talk to
//! a running gateway. One JSON request line, one JSON response line.
//!
//! A Unix socket rather than an HTTP endpoint: lifting a ban is an
//! administrator's act, and file permissions say who may, with nothing
//! listening on the network for it.

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::calls::core::GuardRequest;
use crate::guard::BanInfo;

/// The socket's file name in the data directory.
pub const SOCKET: &str = "control.sock";
/// Longest request line.
const MAX_LINE: u64 = 4096;
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Bans,
    Unban { addr: IpAddr },
    Reload,
}

#[derive(Debug, Serialize, Deserialize, Default, PartialEq)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bans: Option<Vec<BanInfo>>,
    /// For unban: whether the address was banned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifted: Option<bool>,
}

impl Response {
    fn error(e: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(e.into()),
            ..Self::default()
        }
    }
}

/// The socket's path for a data directory.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Binds the socket (replacing a stale one) and serves it until the
/// process ends.
pub fn serve(data_dir: &Path, core: mpsc::Sender<GuardRequest>) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let p = path(data_dir);
    let _ = std::fs::remove_file(&p);
    let listener = UnixListener::bind(&p)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let core = core.clone();
            tokio::spawn(async move {
                if tokio::time::timeout(TIMEOUT, handle(stream, &core))
                    .await
                    .is_err()
                {
                    debug!("control socket: a client timed out");
                }
            });
        }
    });
    Ok(p)
}

async fn handle(stream: tokio::net::UnixStream, core: &mpsc::Sender<GuardRequest>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_LINE));
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let response = match serde_json::from_str::<Request>(line.trim()) {
        Err(e) => Response::error(format!("bad request: {e}")),
        Ok(r) => ask(r, core).await,
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    if let Err(e) = write.write_all(&out).await {
        warn!("control socket: {e}");
    }
}

async fn ask(r: Request, core: &mpsc::Sender<GuardRequest>) -> Response {
    let gone = || Response::error("the gateway is stopping");
    match r {
        Request::Bans => {
            let (tx, rx) = oneshot::channel();
            if core.send(GuardRequest::Bans(tx)).await.is_err() {
                return gone();
            }
            rx.await.map_or_else(
                |_| gone(),
                |bans| Response {
                    ok: true,
                    bans: Some(bans),
                    ..Response::default()
                },
            )
        }
        Request::Unban { addr } => {
            let (tx, rx) = oneshot::channel();
            if core.send(GuardRequest::Unban(addr, tx)).await.is_err() {
                return gone();
            }
            rx.await.map_or_else(
                |_| gone(),
                |lifted| Response {
                    ok: true,
                    lifted: Some(lifted),
                    ..Response::default()
                },
            )
        }
        Request::Reload => {
            let (tx, rx) = oneshot::channel();
            if core.send(GuardRequest::Reload(tx)).await.is_err() {
                return gone();
            }
            match rx.await {
                Ok(Ok(())) => Response {
                    ok: true,
                    ..Response::default()
                },
                Ok(Err(e)) => Response::error(e),
                Err(_) => gone(),
            }
        }
    }
}

/// Sends `r` to the gateway whose data directory is `data_dir` (the CLI's
/// side, blocking).
pub fn request(data_dir: &Path, r: &Request) -> Result<Response, String> {
    let p = path(data_dir);
    let mut s = std::os::unix::net::UnixStream::connect(&p).map_err(|e| {
        format!(
            "cannot reach a running gateway at {} ({e}); is it running with this --data-dir?",
            p.display()
        )
    })?;
    let _ = s.set_read_timeout(Some(TIMEOUT));
    let mut line = serde_json::to_vec(r).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    BufReader::new(s)
        .read_line(&mut answer)
        .map_err(|e| format!("no answer from the gateway: {e}"))?;
    serde_json::from_str(answer.trim()).map_err(|e| format!("bad answer from the gateway: {e}"))
}
