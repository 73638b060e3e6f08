//! Call records streamed to an operator: each record a line after an ok
//! response, read on a blocking thread through a bounded channel, with
//! the SHA-256 of what was sent for the audit trail.

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{send, Admin, Response};
use crate::cdr::store::RecordId;

/// The answer to a record command while the store is not open.
pub(super) async fn without_records(w: &mut tokio::net::unix::OwnedWriteHalf) -> String {
    const WHY: &str = "call records are not being kept: the record store did not open at start (the data directory's disk had no room); free space and restart the gateway";
    let _ = send(w, &Response::error(WHY)).await;
    format!("error: {WHY}")
}

/// Streams records of `[from_ms, to_ms)` through `line` (None skips) as
/// data lines after an ok response. The store is read on a blocking
/// thread; a bounded channel carries the lines, so memory stays flat.
pub(super) async fn stream_records(
    admin: &Admin,
    w: &mut tokio::net::unix::OwnedWriteHalf,
    from_ms: u64,
    to_ms: u64,
    preamble: Option<String>,
    mut line: impl FnMut(RecordId, crate::cdr::record::Record) -> Option<String> + Send + 'static,
) -> (String, u64) {
    let (tx, mut rx) = mpsc::channel::<Result<String, String>>(256);
    let Some(store) = admin.store.clone() else {
        return (without_records(w).await, 0);
    };
    tokio::task::spawn_blocking(move || {
        for item in store.range(from_ms, to_ms) {
            let sent = match item {
                Ok((id, r)) => match line(id, r) {
                    Some(l) => tx.blocking_send(Ok(l)),
                    None => Ok(()),
                },
                Err(e) => tx.blocking_send(Err(e.to_string())),
            };
            if sent.is_err() {
                return;
            }
        }
    });
    if send(
        w,
        &Response {
            stream: true,
            ..Response::ok()
        },
    )
    .await
    .is_err()
    {
        return ("cut short".into(), 0);
    }
    // Everything after the response line, as the caller receives it.
    let mut hash = <sha2::Sha256 as sha2::Digest>::new();
    if let Some(p) = preamble {
        let p = format!("{p}\n");
        sha2::Digest::update(&mut hash, p.as_bytes());
        if w.write_all(p.as_bytes()).await.is_err() {
            return ("cut short".into(), 0);
        }
    }
    let mut n = 0u64;
    let mut damaged = 0u64;
    while let Some(item) = rx.recv().await {
        match item {
            Ok(l) => {
                n += 1;
                let l = format!("{l}\n");
                sha2::Digest::update(&mut hash, l.as_bytes());
                if w.write_all(l.as_bytes()).await.is_err() {
                    return (format!("cut short after {n} records"), n);
                }
            }
            Err(e) => {
                damaged += 1;
                tracing::warn!("listing call records: {e}");
                // Not in the hash: the command prints these to stderr,
                // not into the file.
                let l = format!("{}\n", serde_json::json!({ "damaged": e }));
                if w.write_all(l.as_bytes()).await.is_err() {
                    return (format!("cut short after {n} records"), n);
                }
            }
        }
    }
    let sha256 = hex::encode(sha2::Digest::finalize(hash));
    let outcome = if damaged > 0 {
        format!("ok: {n} records, {damaged} damaged, sha256 {sha256}")
    } else {
        format!("ok: {n} records, sha256 {sha256}")
    };
    (outcome, n)
}
