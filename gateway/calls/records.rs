//! Call records from the call core's side: a record is begun with the
//! INVITE, marks its ringing and final status from the responses the
//! gateway sends, is written open at answer (so a crash leaves an
//! interrupted record, not none), and is finished at the end with the
//! media its task reports. The writer makes it durable; the core never
//! waits for disk.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::core::{CallRef, Core};
use super::media::{MediaReport, Reporter};
use crate::cdr::record::{Direction, Outcome, Party, Record};
use crate::cdr::store::RecordId;
use crate::cdr::writer::Writer;

/// How long a finished record waits for its media task's report.
const MEDIA_REPORT_WAIT: Duration = Duration::from_secs(1);

/// Refused calls recorded per source a minute (sources outside trusted
/// trunks), within [`REFUSED_RECORDS_PER_MINUTE_ALL`] for all of them;
/// more are counted in `tollgate_cdr_refusals_aggregated_total`.
/// A scanner's thousands of INVITEs are then a counter, not thousands of
/// durable records; a trusted carrier's refused calls (busy, no agent)
/// are all recorded, as billing and abandoned-call reports need them.
pub(super) const REFUSED_RECORDS_PER_MINUTE: u32 = 20;
/// Refused calls recorded a minute from all such sources together: a scan
/// from thousands of addresses stays a counter too, and cannot fill the
/// record writer's queue and push out real calls' records.
pub(super) const REFUSED_RECORDS_PER_MINUTE_ALL: u32 = 600;
/// Sources tracked in one minute; a source beyond them is counted only.
const REFUSAL_SOURCES: usize = 4096;
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// Each source's refused-call records in the current minute.
#[derive(Default)]
pub(super) struct RefusalBudget {
    window: Option<Instant>,
    seen: HashMap<IpAddr, u32>,
    /// Records admitted this minute, all sources.
    admitted: u32,
}

impl RefusalBudget {
    /// Whether a refused call from `source` gets its own record.
    pub(super) fn admit(&mut self, source: IpAddr, now: Instant) -> bool {
        if self
            .window
            .is_none_or(|w| now.saturating_duration_since(w) >= REFUSAL_WINDOW)
        {
            self.seen.clear();
            self.window = Some(now);
            self.admitted = 0;
        }
        if self.seen.len() >= REFUSAL_SOURCES && !self.seen.contains_key(&source) {
            return false;
        }
        let n = self.seen.entry(source).or_insert(0);
        *n = n.saturating_add(1);
        let admit =
            *n <= REFUSED_RECORDS_PER_MINUTE && self.admitted < REFUSED_RECORDS_PER_MINUTE_ALL;
        if admit {
            self.admitted += 1;
        }
        admit
    }
}

/// A call's record while the call lasts.
pub(super) struct CallRecord {
    pub(super) id: RecordId,
    pub(super) record: Record,
}

/// The core's record keeping.
pub(super) struct Records {
    writer: Option<Writer>,
    /// The record of the INVITE being handled, until it becomes a call or
    /// is refused.
    pub(super) new: Option<CallRecord>,
    /// Refused calls' records per untrusted source.
    refusals: RefusalBudget,
    /// Finished records waiting for their media report.
    pending: HashMap<RecordId, (Record, Instant)>,
    reports: mpsc::Sender<MediaReport>,
    pub(super) reports_rx: Option<mpsc::Receiver<MediaReport>>,
    /// What records are stamped with.
    pub(super) wall: crate::Wall,
}

impl Records {
    /// Records stamped by `wall`, written nowhere until
    /// [`Records::set_writer`].
    pub(super) fn new(wall: crate::Wall) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        Self {
            writer: None,
            new: None,
            refusals: RefusalBudget::default(),
            pending: HashMap::new(),
            reports: tx,
            reports_rx: Some(rx),
            wall,
        }
    }
}

impl Records {
    pub(super) fn set_writer(&mut self, w: Writer) {
        self.writer = Some(w);
    }

    /// The record store, for reading off the core's thread.
    pub(super) fn store(&self) -> Option<std::sync::Arc<crate::cdr::store::Store>> {
        self.writer.as_ref()?.store()
    }

    /// A new record (when records are kept).
    pub(super) fn begin(
        &self,
        call_id: &[u8],
        direction: Direction,
        caller: &str,
        callee: &str,
        now: Instant,
    ) -> Option<CallRecord> {
        let w = self.writer.as_ref()?;
        let start = self.wall.ms(now);
        Some(CallRecord {
            id: w.next_id(start),
            record: Record::new(
                &String::from_utf8_lossy(call_id),
                direction,
                caller,
                callee,
                start,
            ),
        })
    }

    /// Where a media task for the record `id` reports.
    pub(super) fn reporter(&self, id: Option<RecordId>) -> Reporter {
        id.map(|id| (id, self.reports.clone()))
    }

    fn write(&self, id: RecordId, r: Record) {
        if let Some(w) = &self.writer {
            w.put(id, r, None);
        }
    }

    /// Writes the record as it stands, open (at answer).
    pub(super) fn write_open(&self, c: &CallRecord) {
        self.write(c.id, c.record.clone());
    }

    /// Finishes a record; it waits for its media report if it had media.
    pub(super) fn finish(
        &mut self,
        mut c: CallRecord,
        outcome: Outcome,
        status: u16,
        by: Option<Party>,
        now: Instant,
    ) {
        let answered = c.record.answer_ms.is_some();
        let outcome = match outcome {
            Outcome::Answered if !answered => Outcome::Failed,
            o => o,
        };
        c.record.finish(self.wall.ms(now), outcome, status, by);
        if answered {
            self.pending
                .insert(c.id, (c.record, now + MEDIA_REPORT_WAIT));
        } else {
            self.write(c.id, c.record);
        }
    }

    /// A media task's report: its record is complete.
    pub(super) fn on_report(&mut self, rep: MediaReport) {
        if let Some((mut r, _)) = self.pending.remove(&rep.id) {
            r.media = rep.media;
            r.guard.extend(rep.guard);
            self.write(rep.id, r);
        }
    }

    /// Records whose report did not come in time are written without it.
    pub(super) fn due(&mut self, now: Instant) {
        for (id, (r, _)) in self.pending.extract_if(|_, (_, at)| *at <= now) {
            if let Some(w) = &self.writer {
                w.put(id, r, None);
            }
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|(_, at)| *at).min()
    }

    /// Writes every pending record now (the gateway is stopping).
    pub(super) fn flush_pending(&mut self) {
        if let Some(w) = &self.writer {
            // Stopping: no call waits any more, so these wait for room
            // rather than being shed.
            for (id, (r, _)) in self.pending.drain() {
                w.put_waiting(id, r, None);
            }
        }
    }
}

impl Core {
    /// A response the gateway sends to the INVITE with this Call-ID: the
    /// INVITE being handled (whose record is not a call's yet), else the
    /// call's.
    pub(super) fn record_response(&mut self, call_id: &[u8], code: u16, now: Instant) {
        let wall = self.records.wall.ms(now);
        let bounded = || crate::cdr::record::bounded_call_id(&String::from_utf8_lossy(call_id));
        match self.records.new.as_mut() {
            Some(n) if n.record.call_id == bounded() => note_response(&mut n.record, code, wall),
            _ => {
                if let Some(h) = self.call_ref(call_id) {
                    self.record_call_response(h, code, now);
                }
            }
        }
    }

    /// A response the gateway sends to call `h`'s INVITE: ringing and the
    /// final status go into its record.
    pub(super) fn record_call_response(&mut self, h: CallRef, code: u16, now: Instant) {
        let wall = self.records.wall.ms(now);
        if let Some(c) = self.calls.get_mut(&h).and_then(|c| c.record.as_mut()) {
            note_response(&mut c.record, code, wall);
        }
    }

    /// The INVITE just handled did not become a call: its record is
    /// written as rejected, with the status it got, within the source's
    /// budget unless the source is a trusted trunk's peer.
    pub(super) fn record_refused(&mut self, source: IpAddr, now: Instant) {
        if let Some(c) = self.records.new.take() {
            if !self.config.trusted_peer(source) && !self.records.refusals.admit(source, now) {
                self.metrics.cdr_refusals_aggregated.inc();
                return;
            }
            let status = c.record.sip_status;
            self.records.finish(c, Outcome::Rejected, status, None, now);
        }
    }

    /// The call was answered: its record is written open.
    pub(super) fn record_answered(&mut self, call_id: CallRef, now: Instant) {
        let wall = self.records.wall.ms(now);
        if let Some(c) = self.calls.get_mut(&call_id).and_then(|c| c.record.as_mut()) {
            if c.record.answer_ms.is_none() {
                c.record.answer_ms = Some(wall);
                c.record.sip_status = 200;
                self.records.write_open(c);
            }
        }
    }
}

/// Ringing and the final status, into a record.
fn note_response(r: &mut crate::cdr::record::Record, code: u16, wall: u64) {
    match code {
        180 | 183 => {
            r.ringing_ms.get_or_insert(wall);
        }
        200..=699 => r.sip_status = code,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_records_are_bounded_per_source_and_per_minute() {
        let mut b = RefusalBudget::default();
        let t0 = Instant::now();
        let (a, c): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
        let admitted = (0..100).filter(|_| b.admit(a, t0)).count();
        assert_eq!(admitted, REFUSED_RECORDS_PER_MINUTE as usize);
        // Another source keeps its own budget.
        assert!(b.admit(c, t0));
        // A minute later the budget is back.
        assert!(!b.admit(a, t0 + Duration::from_secs(59)));
        assert!(b.admit(a, t0 + REFUSAL_WINDOW));
        // Many sources together get the minute's total, no more.
        let mut b = RefusalBudget::default();
        let all = (0..REFUSAL_SOURCES as u32)
            .filter(|i| b.admit(IpAddr::from(i.to_be_bytes()), t0))
            .count();
        assert_eq!(all, REFUSED_RECORDS_PER_MINUTE_ALL as usize);
        // Past the total, a source with its own budget left is counted
        // only, until the next minute.
        assert!(!b.admit(a, t0));
        assert!(b.admit(a, t0 + REFUSAL_WINDOW));
    }
}
