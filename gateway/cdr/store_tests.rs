//! Tests of the record store (`store.rs`): records and keys, retention
//! and its clock holds, rotation, recovery.

use super::super::record::{Direction, Party};
use super::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tollgate-cdr-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn record(start: u64, caller: &str) -> Record {
    let mut r = Record::new("call@x", Direction::Inbound, caller, "+442079460000", start);
    r.answer_ms = Some(start + 1000);
    r.finish(start + 61_000, Outcome::Answered, 200, Some(Party::Caller));
    r
}

const DAY0: u64 = 20_000 * DAY_MS;

#[test]
fn records_round_trip_bound_to_their_key_and_the_master_key_is_checked() {
    let d = dir("roundtrip");
    let master = Arc::new(Sealer::from_key(&[1; 32]));
    let s = Store::open(&d, master.clone()).expect("open");
    let a = RecordId {
        start_ms: DAY0 + 5,
        seq: 1,
    };
    let b = RecordId {
        start_ms: DAY0 + 9,
        seq: 2,
    };
    s.put_all(&[
        (a, record(a.start_ms, "+447700900001")),
        (b, record(b.start_ms, "+447700900002")),
    ])
    .expect("put");
    s.flush().expect("flush");
    assert_eq!(
        s.get(a).expect("get").expect("some").caller.reveal(),
        "+447700900001"
    );
    let listed: Vec<_> = s
        .range(DAY0, DAY0 + DAY_MS)
        .map(|r| r.expect("opens").0)
        .collect();
    assert_eq!(listed, vec![a, b]);
    // A record moved under another key does not open.
    let moved = s.records.get(a.to_bytes()).expect("get").expect("some");
    s.records.insert(b.to_bytes(), moved).expect("insert");
    assert!(matches!(s.get(b), Err(CdrError::Damaged(_))));
    // A flipped byte neither.
    let mut v = s
        .records
        .get(a.to_bytes())
        .expect("get")
        .expect("some")
        .to_vec();
    let last = v.len() - 1;
    v[last] ^= 1;
    s.records.insert(a.to_bytes(), v).expect("insert");
    assert!(matches!(s.get(a), Err(CdrError::Damaged(_))));
    drop(s);
    // A wrong master key: refused before the database is opened.
    let e = Store::open(&d, Arc::new(Sealer::from_key(&[2; 32])))
        .err()
        .expect("refused");
    assert!(matches!(e, CdrError::WrongMasterKey { .. }), "{e}");
    let text = std::fs::read_to_string(Store::dir(&d).join("day-keys")).expect("keys");
    assert!(!text.contains("7700900001"));
    let _ = std::fs::remove_dir_all(&d);
}

/// One record a day on days 0 to 9 (from `DAY0`), stored; their ids.
fn ten_days_of_records(s: &Store) -> Vec<RecordId> {
    let ids: Vec<RecordId> = (0..10u64)
        .map(|k| RecordId {
            start_ms: DAY0 + k * DAY_MS + 5,
            seq: k as u32,
        })
        .collect();
    let recs: Vec<_> = ids
        .iter()
        .map(|id| (*id, record(id.start_ms, "+447700900005")))
        .collect();
    s.put_all(&recs).expect("put");
    ids
}

#[test]
fn a_clock_years_ahead_shreds_nothing_until_an_operator_confirms() {
    let d = dir("clock-jump");
    let master = Arc::new(Sealer::from_key(&[4; 32]));
    let s = Store::open(&d, master).expect("open");
    // Ten days of records, then an hourly run on the tenth day.
    let ids = ten_days_of_records(&s);
    let day9 = DAY0 + 9 * DAY_MS + 1;
    assert_eq!(s.expire(365, day9).expect("run"), Expired::default());
    // The clock leaps three years: every day is past retention, and
    // nothing goes.
    let later = day9 + 3 * 365 * DAY_MS;
    let e = s.expire(365, later).expect("run");
    assert_eq!(e.held, Some(Held::TooManyDays { days: 10 }));
    assert_eq!((e.days, e.records), (0, 0));
    assert!(s.get(ids[0]).expect("get").is_some());
    // With retention cut so one day would go: the jump still holds it,
    // even after a call made under the wrong clock.
    let jumped = RecordId {
        start_ms: later,
        seq: 99,
    };
    s.put_all(&[(jumped, record(later, "+447700900006"))])
        .expect("put");
    let (plan, held) = s.retention_plan(1103, later);
    assert_eq!(plan.len(), 1, "{plan:?}");
    assert!(
        matches!(held, Some(Held::ClockAhead { last_seen, .. }) if u64::from(last_seen) == day9 / DAY_MS),
        "{held:?}"
    );
    assert_eq!(s.expire(1103, later).expect("run").days, 0);
    assert!(held.expect("held").to_string().contains("clock jump"));
    // The operator's confirmation shreds, and the mark moves on.
    let e = s.shred_confirmed(365, later).expect("confirmed");
    assert_eq!((e.days, e.records), (10, 10));
    assert!(s.get(ids[9]).expect("get").is_none());
    assert!(s.get(jumped).expect("get").is_some());
    assert_eq!(s.expire(365, later + DAY_MS).expect("next day").held, None);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_clock_stepped_ahead_a_day_at_a_time_cannot_walk_retention_forward() {
    let d = dir("clock-steps");
    let s = Store::open(&d, Arc::new(Sealer::from_key(&[5; 32]))).expect("open");
    let ids = ten_days_of_records(&s);
    // Hourly runs with 5 days kept, on day 9: days 0 to 3 are due,
    // more than a run may take, so it holds (as the operator set it).
    let (t0, day9) = (Instant::now(), DAY0 + 9 * DAY_MS + 1);
    let hour = std::time::Duration::from_secs(3600);
    assert!(s.expire_at(5, day9, t0).expect("run").held.is_some());
    // With 8 kept, day 0 goes; then each hour the clock steps a day.
    assert_eq!(s.expire_at(8, day9, t0).expect("run").days, 1);
    let stepped = s.expire_at(8, day9 + DAY_MS, t0 + hour).expect("run");
    assert_eq!((stepped.days, stepped.held), (1, None), "one day of slack");
    let again = s
        .expire_at(8, day9 + 2 * DAY_MS, t0 + 2 * hour)
        .expect("run");
    assert!(
        matches!(again.held, Some(Held::ClockAhead { .. })),
        "{again:?}"
    );
    assert_eq!(again.days, 0);
    assert!(s.get(ids[2]).expect("get").is_some());
    // Real time passing moves the mark: a day later (monotonic), the
    // clock is believed again.
    let real = s
        .expire_at(8, day9 + 2 * DAY_MS, t0 + hour + 24 * hour)
        .expect("run");
    assert_eq!((real.days, real.held), (1, None));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_clock_set_back_and_put_right_does_not_hold_retention() {
    let d = dir("clock-back");
    let s = Store::open(&d, Arc::new(Sealer::from_key(&[6; 32]))).expect("open");
    let ids = ten_days_of_records(&s);
    let (t0, day9) = (Instant::now(), DAY0 + 9 * DAY_MS + 1);
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(s.expire_at(8, day9, t0).expect("run").days, 1);
    // An hour later the clock reads three days back: nothing is due.
    let back = s
        .expire_at(8, day9 - 3 * DAY_MS + 3_600_000, t0 + hour)
        .expect("run");
    assert_eq!((back.days, back.held), (0, None));
    // Put right, two real days on: day 11, and days 1 and 2 go.
    let later = s
        .expire_at(8, day9 + 2 * DAY_MS, t0 + 48 * hour)
        .expect("run");
    assert_eq!((later.days, later.held), (2, None));
    assert!(s.get(ids[3]).expect("get").is_some());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn open_records_become_interrupted_and_retention_shreds_keys_first() {
    let d = dir("retention");
    let master = Arc::new(Sealer::from_key(&[3; 32]));
    let s = Store::open(&d, master.clone()).expect("open");
    let mut open = record(DAY0 + DAY_MS + 7, "+447700900003");
    open.outcome = Outcome::Open;
    open.end_ms = None;
    let old = RecordId {
        start_ms: DAY0 + 1,
        seq: 1,
    };
    let new = RecordId {
        start_ms: DAY0 + DAY_MS + 7,
        seq: 2,
    };
    s.put_all(&[(old, record(old.start_ms, "+447700900004")), (new, open)])
        .expect("put");
    s.flush().expect("flush");
    drop(s);
    // Copy the database before expiry.
    let copy = dir("retention-copy");
    copy_dir(&Store::dir(&d).join("db"), &copy.join("cdr").join("db"));
    let s = Store::open(&d, master.clone()).expect("reopen");
    assert_eq!(s.recover_open().expect("recover"), 1);
    assert_eq!(
        s.get(new).expect("get").expect("some").outcome,
        Outcome::Interrupted
    );
    assert_eq!(s.recover_open().expect("again"), 0);
    // Two days' retention seen from the day after `new`'s: `old` goes.
    let e = s.expire(1, DAY0 + 2 * DAY_MS + 1).expect("expire");
    assert_eq!(
        e,
        Expired {
            days: 1,
            records: 1,
            held: None,
        }
    );
    assert!(s.get(old).expect("get").is_none());
    assert!(s.get(new).expect("get").is_some());
    drop(s);
    // The old copy, with today's key file: that day no longer opens.
    std::fs::copy(
        Store::dir(&d).join("day-keys"),
        copy.join("cdr").join("day-keys"),
    )
    .expect("copy keys");
    let c = Store::open(&copy, master).expect("open copy");
    assert!(matches!(c.get(old), Err(CdrError::Shredded(_))));
    assert!(c.get(new).expect("the kept day opens").is_some());
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_dir_all(&copy);
}

#[test]
fn rotating_the_master_key_rewraps_every_day() {
    let d = dir("rotate");
    let old = Arc::new(Sealer::from_key(&[4; 32]));
    let s = Store::open(&d, old.clone()).expect("open");
    let id = RecordId {
        start_ms: DAY0 + 3,
        seq: 9,
    };
    s.put_all(&[(id, record(id.start_ms, "+447700900005"))])
        .expect("put");
    s.flush().expect("flush");
    let new = Arc::new(Sealer::from_key(&[5; 32]));
    let before = std::fs::read(Store::dir(&d).join("day-keys")).expect("read");
    let staged = s.stage_master(new.clone(), DAY0 + 10).expect("stage");
    // Nothing changes on disk until the caller puts the file in place.
    assert_eq!(staged.path, Store::dir(&d).join("day-keys"));
    assert_eq!(std::fs::read(&staged.path).expect("read"), before);
    write_private(&staged.path, &staged.bytes, true).expect("write");
    assert_eq!(staged.apply(), 1);
    assert!(s.get(id).expect("get").is_some());
    // A new day's key is sealed under the new master key.
    let later = RecordId {
        start_ms: DAY0 + DAY_MS + 3,
        seq: 10,
    };
    s.put_all(&[(later, record(later.start_ms, "+447700900006"))])
        .expect("put");
    drop(s);
    let e = Store::open(&d, old.clone())
        .err()
        .expect("the old key is refused");
    let msg = e.to_string();
    assert!(matches!(e, CdrError::WrongMasterKey { .. }), "{msg}");
    assert!(msg.contains(old.id()) && msg.contains(new.id()), "{msg}");
    assert!(
        msg.contains("2024-10-04T") && msg.contains("rotate-master"),
        "{msg}"
    );
    let s = Store::open(&d, new).expect("the new key opens it");
    assert_eq!(
        s.get(id).expect("get").expect("some").caller.reveal(),
        "+447700900005"
    );
    assert!(s.get(later).expect("get").is_some());
    let _ = std::fs::remove_dir_all(&d);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

#[test]
fn a_held_database_is_named_in_use_and_freed_once_dropped() {
    let d = dir("in-use");
    let key = Arc::new(Sealer::from_key(&[6; 32]));
    let s = Store::open(&d, key.clone()).expect("open");
    let e = Store::open(&d, key.clone())
        .err()
        .expect("a second holder is refused");
    assert!(matches!(e, CdrError::InUse(_)), "{e}");
    assert!(e.to_string().contains("in use"), "{e}");
    drop(s);
    // The lock goes with the last background flush; open waits for it.
    Store::open(&d, key).expect("opens once the first holder let go");
    let _ = std::fs::remove_dir_all(&d);
}
