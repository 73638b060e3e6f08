//! A headless softphone on the agent protocol: `tollgate agent connect`.
//! It answers or places calls, plays a WAV file (or silence) as G.711 in
//! SRTP datagrams every 20 ms, records what it receives, and reports each
//! call's packets, loss, jitter and estimated MOS. Tests, load runs and
//! installation smoke tests use it; it is not a product softphone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::client::{Client, ClientError};
use super::protocol::{put_varint, split_datagram, ClientMsg, Media, ServerMsg};
use crate::media::g711;
use crate::media::srtp::{MasterKey, SrtpConfig, SrtpReceiver, SrtpSender, Suite, Way};
use crate::media::stats::{mos_g711, StreamStats};

/// What the softphone does.
#[derive(Default, Clone)]
pub struct Options {
    /// Answer offered calls at once (and say so with `available`).
    pub auto_answer: bool,
    /// Place calls to this number.
    pub dial: Option<String>,
    /// Withhold the call centre's number on those calls.
    pub withhold: bool,
    /// Once the calls are done (or at once, with no call to take or
    /// place), ask for the agent's own recent calls.
    pub history: bool,
    /// Audio to send (8 kHz samples), from the start of each call; silence
    /// after it ends.
    pub play: Option<Vec<i16>>,
    /// Where to write what was received (with `-N` before the extension
    /// for the second call on).
    pub record: Option<PathBuf>,
    /// Hang up this long after the call is answered (otherwise wait for
    /// the far end).
    pub duration: Option<Duration>,
    /// Stop after this many calls (at least 1).
    pub calls: u32,
    /// DTMF digits to send once a call is answered, 200 ms apart.
    pub dtmf: Option<String>,
    /// Be available but let offers ring unanswered (to test queues).
    pub ignore_offers: bool,
    /// Put the call on hold this long after it is answered (and leave it
    /// held).
    pub hold_after: Option<Duration>,
}

/// What happened on one call.
#[derive(Debug, Clone)]
pub struct Report {
    pub call: u64,
    pub outbound: bool,
    /// The caller as shown (inbound) or the number dialled (outbound).
    pub peer: String,
    pub codec: String,
    pub suite: String,
    pub answered: bool,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub jitter_ms: f64,
    pub mos: f64,
    pub dropped: u64,
    pub reason: String,
    pub recorded: Vec<i16>,
    /// DTMF digits the far end sent.
    pub dtmf: String,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "call {} {} {}: {}, {} in SRTP {} over QUIC; sent {} received {} lost {} dropped {} jitter {:.1} ms MOS {:.2}; DTMF heard {:?}; ended: {}",
            self.call,
            if self.outbound { "to" } else { "from" },
            self.peer,
            if self.answered { "answered" } else { "not answered" },
            self.codec,
            self.suite,
            self.sent,
            self.received,
            self.lost,
            self.dropped,
            self.jitter_ms,
            self.mos,
            self.dtmf,
            self.reason
        )
    }
}

/// One call's media state.
struct Call {
    report: Report,
    prefix: ([u8; 8], usize),
    pt: u8,
    alaw: bool,
    tx: SrtpSender,
    rx: SrtpReceiver,
    stats: Option<StreamStats>,
    ssrc: u32,
    seq: u16,
    ts: u32,
    played: usize,
    hangup_at: Option<Instant>,
    hold_at: Option<Instant>,
    /// DTMF digits still to send, and when the next goes.
    dtmf: Vec<char>,
    next_dtmf: Option<Instant>,
    /// DTMF digits received from the far end.
    pub heard_dtmf: String,
}

use crate::crypto::random_u32;

/// What an offered call's media needs on the agent's side: its SRTP
/// both ways, the flow identifier that starts each datagram, and whether
/// the codec is A-law (else mu-law).
pub struct CallKeys {
    pub tx: SrtpSender,
    pub rx: SrtpReceiver,
    pub prefix: ([u8; 8], usize),
    pub alaw: bool,
}

impl CallKeys {
    /// From the gateway's offer; says what is wrong with it otherwise.
    pub fn new(m: &Media) -> Result<Self, &'static str> {
        use base64::Engine;
        let suite = Suite::from_sdes_name(&m.suite)
            .filter(|s| matches!(s, Suite::AeadAes128Gcm | Suite::AeadAes256Gcm))
            .ok_or("unknown SRTP suite")?;
        let key = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(&m.key.0)
                .map_err(|_| "bad key")?,
        );
        let cfg = SrtpConfig::default();
        let master = MasterKey::from_concatenated(suite, &key).map_err(|_| "bad key length")?;
        let way = |w| master.for_way(w).map_err(|_| "bad key");
        let tx = SrtpSender::new(&way(Way::FromAgent)?, cfg).map_err(|_| "bad key")?;
        let rx = SrtpReceiver::new(&way(Way::ToAgent)?, cfg).map_err(|_| "bad key")?;
        let mut prefix = [0u8; 8];
        let n = put_varint(m.flow, &mut prefix).ok_or("bad flow")?;
        let alaw = match m.codec.as_str() {
            "PCMA" => true,
            "PCMU" => false,
            _ => return Err("codec is not G.711"),
        };
        Ok(Self {
            tx,
            rx,
            prefix: (prefix, n),
            alaw,
        })
    }
}

impl Call {
    fn new(call: u64, outbound: bool, peer: String, m: &Media) -> Result<Self, ClientError> {
        let CallKeys {
            tx,
            rx,
            prefix,
            alaw,
        } = CallKeys::new(m)
            .map_err(|what| ClientError::Protocol(format!("call {call}: {what}")))?;
        Ok(Self {
            report: Report {
                call,
                outbound,
                peer,
                codec: m.codec.clone(),
                suite: m.suite.clone(),
                answered: false,
                sent: 0,
                received: 0,
                lost: 0,
                jitter_ms: 0.0,
                mos: 0.0,
                dropped: 0,
                reason: String::new(),
                recorded: Vec::new(),
                dtmf: String::new(),
            },
            prefix,
            pt: m.pt,
            alaw,
            tx,
            rx,
            stats: None,
            ssrc: random_u32(),
            seq: random_u32() as u16,
            ts: random_u32(),
            played: 0,
            hangup_at: None,
            hold_at: None,
            dtmf: Vec::new(),
            next_dtmf: None,
            heard_dtmf: String::new(),
        })
    }

    /// The next 20 ms of audio as a datagram.
    fn packet(&mut self, play: Option<&[i16]>) -> Option<Bytes> {
        let mut p = Vec::with_capacity(self.prefix.1 + 12 + 160 + 16);
        p.extend_from_slice(&self.prefix.0[..self.prefix.1]);
        let start = p.len();
        p.extend_from_slice(&[0x80, self.pt & 0x7f]);
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.ts.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        let encode = if self.alaw {
            g711::linear_to_alaw
        } else {
            g711::linear_to_ulaw
        };
        for i in 0..160 {
            let s = play
                .and_then(|a| a.get(self.played + i))
                .copied()
                .unwrap_or(0);
            p.push(encode(s));
        }
        self.played += 160;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
        let plain = p.len() - start;
        p.resize(p.len() + 16, 0);
        let n = self.tx.seal_rtp(&mut p[start..], plain).ok()?;
        p.truncate(start + n);
        self.report.sent += 1;
        Some(Bytes::from(p))
    }

    fn receive(&mut self, packet: &[u8], now: Instant) {
        let mut buf = packet.to_vec();
        let Ok(n) = self.rx.open_rtp(&mut buf) else {
            self.report.dropped += 1;
            return;
        };
        let Ok(p) = crate::media::rtp::parse(&buf[..n]) else {
            self.report.dropped += 1;
            return;
        };
        if p.payload_type() != self.pt {
            return; // telephone-event and the like
        }
        let stats = self
            .stats
            .get_or_insert_with(|| StreamStats::new(p.ssrc(), 8000));
        stats.on_packet(p.sequence(), p.timestamp(), n, now);
        self.report.received += 1;
        let decode = if self.alaw {
            g711::alaw_to_linear
        } else {
            g711::ulaw_to_linear
        };
        self.report
            .recorded
            .extend(p.payload().iter().map(|&b| decode(b)));
    }

    fn finish(mut self, reason: String) -> Report {
        if let Some(s) = &self.stats {
            let snap = s.snapshot();
            self.report.lost = snap.lost;
            self.report.jitter_ms = snap.jitter_ms;
            self.report.mos = mos_g711(snap.loss, snap.jitter_ms, 0.0);
        }
        self.report.reason = reason;
        self.report.dtmf = std::mem::take(&mut self.heard_dtmf);
        self.report
    }
}

/// What the softphone tells its user as it goes; the CLI prints reports on
/// stdout and notices on stderr, the demo keeps only the reports.
#[derive(Debug)]
pub enum Progress<'a> {
    /// A call ended.
    Report(&'a Report),
    /// Something happened on a call (answered, held, an error, ...).
    Notice(String),
    /// The agent's own recent calls, asked for with [`Options::history`].
    History(&'a [crate::agent::protocol::PastCall]),
}

/// The recording path for the `n`th call (from 1).
pub fn record_path(base: &std::path::Path, n: usize) -> PathBuf {
    if n <= 1 {
        return base.to_path_buf();
    }
    let stem = base.file_stem().unwrap_or_default().to_string_lossy();
    let name = match base.extension() {
        Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    base.with_file_name(name)
}

/// Runs calls until `opts.calls` have ended; returns their reports.
/// `progress` sees each report as its call ends, and notices on the way.
pub async fn run(
    mut client: Client,
    opts: Options,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<Vec<Report>, ClientError> {
    let conn = client.conn.clone();
    let takes_calls = opts.auto_answer || opts.ignore_offers || opts.dial.is_some();
    let want = if opts.history && !takes_calls {
        0
    } else {
        opts.calls.max(1) as usize
    };
    let mut reports = Vec::new();
    let mut call: Option<Call> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    if opts.auto_answer || opts.ignore_offers {
        client
            .send(&ClientMsg::Available { available: true })
            .await?;
    }
    if let Some(n) = &opts.dial {
        client
            .send(&ClientMsg::Dial {
                number: n.clone(),
                withhold: opts.withhold,
            })
            .await?;
    }
    while reports.len() < want {
        let hangup_at = call.as_ref().and_then(|c| c.hangup_at);
        let hangup = async {
            match hangup_at {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let sending = call.as_ref().is_some_and(|c| c.report.answered);
        tokio::select! {
            m = client.recv() => match m? {
                ServerMsg::Offer { call: id, caller, media, .. } => {
                    if opts.ignore_offers {
                        progress(Progress::Notice(format!("offered call {id}; letting it ring")));
                        continue;
                    }
                    if call.is_some() || !opts.auto_answer {
                        client.send(&ClientMsg::Reject { call: id }).await?;
                        continue;
                    }
                    call = Some(Call::new(id, false, caller, &media)?);
                    client.send(&ClientMsg::Answer { call: id }).await?;
                }
                ServerMsg::Dialing { call: id, media } => {
                    let number = opts.dial.clone().unwrap_or_default();
                    call = Some(Call::new(id, true, number, &media)?);
                }
                ServerMsg::Answered { call: id } => {
                    if let Some(c) = call.as_mut().filter(|c| c.report.call == id) {
                        progress(Progress::Notice(format!("answered call {id}")));
                        c.report.answered = true;
                        c.dtmf = opts.dtmf.as_deref().unwrap_or("").chars().collect();
                        c.next_dtmf = (!c.dtmf.is_empty()).then(|| Instant::now() + Duration::from_millis(500));
                        c.hangup_at = opts.duration.map(|d| Instant::now() + d);
                        c.hold_at = opts.hold_after.map(|d| Instant::now() + d);
                    }
                }
                ServerMsg::Ended { call: id, reason }
                    if call.as_ref().is_some_and(|c| c.report.call == id) =>
                {
                    if let Some(c) = call.take() {
                        let r = c.finish(reason);
                        if let Some(base) = &opts.record {
                            let path = record_path(base, reports.len() + 1);
                            super::wav::write(&path, &r.recorded).map_err(ClientError::Protocol)?;
                        }
                        progress(Progress::Report(&r));
                        reports.push(r);
                        if reports.len() < want {
                            if let Some(n) = &opts.dial {
                                client
            .send(&ClientMsg::Dial {
                number: n.clone(),
                withhold: opts.withhold,
            })
            .await?;
                            }
                        }
                    }
                }
                ServerMsg::Dtmf { call: id, digit, .. } => {
                    if let Some(c) = call.as_mut().filter(|c| c.report.call == id) {
                        c.heard_dtmf.push(digit);
                    }
                }
                ServerMsg::Error { code, message, call: None } if call.is_none() && opts.dial.is_some() => {
                    return Err(ClientError::Refused(format!("{message} ({code})")));
                }
                ServerMsg::Held { call: id, hold } => {
                    progress(Progress::Notice(format!("call {id} held: {hold}")));
                }
                ServerMsg::Error { code, message, .. } => {
                    progress(Progress::Notice(format!("gateway: {message} ({code})")));
                }
                _ => {}
            },
            d = conn.read_datagram() => {
                let d = d.map_err(|e| ClientError::Closed(e.to_string()))?;
                if let (Some(c), Some((flow, packet))) = (call.as_mut(), split_datagram(&d)) {
                    let (p, n) = c.prefix;
                    if super::protocol::get_varint(&p[..n]).is_some_and(|(f, _)| f == flow) {
                        c.receive(packet, Instant::now());
                    }
                }
            },
            _ = tick.tick(), if sending => {
                let mut digit = None;
                if let Some(c) = call.as_mut() {
                    if let Some(d) = c.packet(opts.play.as_deref()) {
                        let _ = conn.send_datagram(d);
                    }
                    if c.next_dtmf.is_some_and(|t| t <= Instant::now()) && !c.dtmf.is_empty() {
                        digit = Some((c.report.call, c.dtmf.remove(0)));
                        c.next_dtmf = (!c.dtmf.is_empty()).then(|| Instant::now() + Duration::from_millis(200));
                    }
                }
                if let Some((id, d)) = digit {
                    client.send(&ClientMsg::Dtmf { call: id, digit: d, duration_ms: 100 }).await?;
                }
                let hold = call
                    .as_mut()
                    .filter(|c| c.hold_at.is_some_and(|t| t <= Instant::now()))
                    .map(|c| {
                        c.hold_at = None;
                        c.report.call
                    });
                if let Some(id) = hold {
                    client.send(&ClientMsg::Hold { call: id, hold: true }).await?;
                }
            },
            () = hangup => {
                if let Some(c) = call.as_mut() {
                    c.hangup_at = None;
                    client.send(&ClientMsg::Hangup { call: c.report.call }).await?;
                }
            },
        }
    }
    if opts.history {
        let calls = client.history(None).await?;
        progress(Progress::History(&calls));
    }
    client.close();
    Ok(reports)
}
