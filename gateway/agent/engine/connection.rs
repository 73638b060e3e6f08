//! One connection as the engine holds it, and what its events do: the
//! session's control stream both ways, media datagrams routed by flow.

use super::*;

/// One connection as the engine holds it.
pub(super) struct Entry {
    pub(super) conn: quinn_proto::Connection,
    pub(super) serial: u64,
    pub(super) remote: SocketAddr,
    /// Until the handshake ends: the listener's place, and when it
    /// expires.
    pub(super) place: Option<Box<dyn Any + Send>>,
    pub(super) closed: watch::Sender<bool>,
    /// Where control-stream bytes go (from the handshake's end until the
    /// stream ends).
    pub(super) control: Option<mpsc::Sender<Bytes>>,
    pub(super) stream: Option<StreamId>,
    /// Control bytes left unread while the session's queue was full.
    pub(super) read_blocked: bool,
    pub(super) pending: VecDeque<Bytes>,
    pub(super) pending_bytes: usize,
    pub(super) flows: HashMap<u64, Route>,
    /// The slots of the calls it carries.
    pub(super) calls: Vec<usize>,
    /// Its timer (quinn-proto's next deadline).
    pub(super) timer: Option<Instant>,
    /// The earliest entry it has in the engine's heap: a later deadline
    /// (an idle timer pushed back by each packet) is not pushed until
    /// that entry comes up.
    pub(super) queued: Option<Instant>,
    pub(super) dirty: bool,
}

/// One application event of connection `e`.
// The engine's fields it needs, borrowed apart from the connection.
#[allow(clippy::too_many_arguments)]
pub(super) fn on_event(
    e: &mut Entry,
    ev: Event,
    key: Key,
    listener: &dyn Listener,
    counters: &Counters,
    cmds: &mpsc::UnboundedSender<Cmd>,
    media: &mpsc::Sender<(Key, Bytes)>,
    calls: (&mut [Option<CallSlot>], &mut Scratch),
) {
    match ev {
        Event::Connected => {
            e.place = None;
            let peer = e
                .conn
                .crypto_session()
                .peer_identity()
                .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
                .map_or_else(Vec::new, |b| *b);
            let (tx, rx) = mpsc::channel(CONTROL_CHUNKS);
            e.control = Some(tx);
            let conn = Conn {
                key,
                remote: e.remote,
                peer: Arc::new(peer),
                cmds: cmds.clone(),
                media: media.clone(),
                closed: e.closed.subscribe(),
            };
            listener.connected(conn, rx);
            read_control(e);
        }
        Event::ConnectionLost { reason } => {
            if e.place.take().is_some() {
                listener.failed(e.remote.ip(), Some(&reason));
            }
            e.control = None;
            e.flows.clear();
            e.closed.send_replace(true);
        }
        Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
            while let Some(id) = e.conn.streams().accept(Dir::Bi) {
                if e.stream.is_none() {
                    e.stream = Some(id);
                } else {
                    // One control stream per session.
                    let _ = e.conn.recv_stream(id).stop(VarInt::from_u32(0));
                }
            }
            read_control(e);
        }
        Event::Stream(StreamEvent::Readable { id }) if Some(id) == e.stream => read_control(e),
        Event::Stream(StreamEvent::Writable { id }) if Some(id) == e.stream => write_pending(e),
        Event::Stream(StreamEvent::Stopped { id, .. }) if Some(id) == e.stream => {
            // The agent will read no more: the session ends.
            e.control = None;
            e.pending.clear();
            e.pending_bytes = 0;
        }
        Event::DatagramReceived => route(e, counters, calls.0, calls.1),
        _ => {}
    }
}

/// Closes `e` from this end: its session and calls hear at once, as
/// they would from quinn (the slot stays until the close has drained).
pub(super) fn close_entry(e: &mut Entry, now: Instant, code: u32, reason: Bytes) {
    e.conn.close(now, VarInt::from_u32(code), reason);
    e.control = None;
    e.flows.clear();
    e.pending.clear();
    e.pending_bytes = 0;
    e.closed.send_replace(true);
}

/// Hands each received datagram to its call's queue, by flow.
fn route(e: &mut Entry, counters: &Counters, calls: &mut [Option<CallSlot>], s: &mut Scratch) {
    while let Some(d) = e.conn.datagrams().recv() {
        let Some((flow, n)) = protocol::get_varint(&d) else {
            counters.unknown.inc();
            continue;
        };
        let to = match e.flows.get(&flow) {
            Some(Route::Call(slot)) => {
                match calls.get_mut(*slot).and_then(Option::as_mut) {
                    Some(c) => c.call.agent_datagram(&d[n..], s),
                    None => counters.unknown.inc(),
                }
                continue;
            }
            Some(Route::Queue(tx)) => Some(tx),
            None => None,
        };
        match to.map(|tx| tx.try_send(d.slice(n..))) {
            Some(Ok(())) => {}
            // The call's task is behind: late audio is dropped audio.
            Some(Err(mpsc::error::TrySendError::Full(_))) => counters.congestion.inc(),
            Some(Err(mpsc::error::TrySendError::Closed(_))) => {
                e.flows.remove(&flow);
                counters.unknown.inc();
            }
            None => counters.unknown.inc(),
        }
    }
}

/// Reads the control stream into the session's queue.
pub(super) fn read_control(e: &mut Entry) {
    let (Some(id), Some(tx)) = (e.stream, e.control.as_ref()) else {
        return;
    };
    let mut ended = false;
    let mut recv = e.conn.recv_stream(id);
    match recv.read(true) {
        Ok(mut chunks) => {
            loop {
                if tx.capacity() == 0 {
                    // The session is behind: the rest stays in quinn-proto,
                    // whose flow control holds the agent back, and is read
                    // on a later tick.
                    e.read_blocked = true;
                    break;
                }
                match chunks.next(CHUNK) {
                    // A copy: a slice would keep the receive arena's
                    // whole block alive while the session is behind.
                    Ok(Some(c)) => {
                        let _ = tx.try_send(Bytes::copy_from_slice(&c.bytes));
                    }
                    Ok(None) | Err(ReadError::Reset(_)) => {
                        ended = true;
                        break;
                    }
                    Err(ReadError::Blocked) => break,
                }
            }
            let _ = chunks.finalize();
        }
        Err(_) => ended = true,
    }
    if ended {
        e.control = None;
    }
}

/// Writes queued control bytes as far as flow control allows.
pub(super) fn write_pending(e: &mut Entry) {
    let Some(id) = e.stream else { return };
    while let Some(front) = e.pending.front_mut() {
        match e.conn.send_stream(id).write(front) {
            Ok(n) => {
                e.pending_bytes -= n;
                if n == front.len() {
                    e.pending.pop_front();
                } else {
                    front.advance(n);
                }
            }
            Err(WriteError::Blocked) => break,
            Err(_) => {
                e.pending.clear();
                e.pending_bytes = 0;
                break;
            }
        }
    }
}
