//! The IDS core's tests (a sibling file: the core is read apart from
//! its scenarios).

use super::*;

fn ids(t0: Instant) -> Ids {
    Ids::new(
        Rules::shipped().expect("rules"),
        vec![
            ("203.0.113.0/26".parse().expect("net"), false),
            ("203.0.113.0/24".parse().expect("net"), true),
        ],
        t0,
    )
}

fn invite<'a>(ua: &'a [u8]) -> Facts<'a> {
    Facts {
        class: Class::Invite,
        uri: b"sip:+442079460000@gw",
        user_agent: Some(ua),
        from: Some(b"<sip:+447700900123@192.0.2.1>;tag=1"),
        to: Some(b"<sip:+442079460000@gw>"),
    }
}

const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));
const CARRIER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 65));

#[test]
fn token_buckets_drop_over_rate_and_refill() {
    let t0 = Instant::now();
    let mut ids = ids(t0);
    let f = invite(b"carrier-sbc");
    // An untrusted source's INVITEs: burst 8, then drops; at 2/s,
    // 500 ms buys one more.
    let passed = (0..9)
        .filter(|_| ids.message(ATTACKER, &f, t0) == Verdict::Pass)
        .count();
    assert_eq!(passed, 8);
    assert_eq!(ids.message(ATTACKER, &f, t0), Verdict::Drop(Reason::Rate));
    assert_eq!(
        ids.message(ATTACKER, &f, t0 + Duration::from_millis(500)),
        Verdict::Pass
    );
    // Another class has its own bucket (OPTIONS: burst 30).
    let o = Facts {
        class: Class::Options,
        ..f
    };
    let passed = (0..31)
        .filter(|_| ids.message(ATTACKER, &o, t0 + Duration::from_millis(500)) == Verdict::Pass)
        .count();
    assert_eq!(passed, 30);
}

/// Issue 14 item 15: a distributed INVITE flood on an untrusted trunk
/// let about 11 INVITEs per source through before each ban. Now each
/// source gets at most its burst (8) and what refills before its
/// over-limit strikes ban it; a trusted carrier sending hard at the
/// same time loses nothing.
#[test]
fn a_distributed_flood_gets_at_most_ten_invites_per_source_through() {
    let t0 = Instant::now();
    let mut ids = Ids::new(
        Rules::shipped().expect("rules"),
        vec![
            ("203.0.113.0/24".parse().expect("net"), true),
            ("0.0.0.0/0".parse().expect("net"), false),
        ],
        t0,
    );
    let f = invite(b"x");
    let bots: Vec<IpAddr> = (0..200u32)
        .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0001 + (i << 8))))
        .collect();
    let mut passed = vec![0u32; bots.len()];
    let mut banned = vec![false; bots.len()];
    let mut carrier = 0;
    // 200 bots at 100 INVITEs a second each for 3 s, with the carrier
    // at 400 calls a second among them.
    for tick in 0..300u64 {
        let t = t0 + Duration::from_millis(tick * 10);
        for (i, &b) in bots.iter().enumerate() {
            match ids.message(b, &f, t) {
                Verdict::Pass => passed[i] += 1,
                Verdict::Ban { .. } => banned[i] = true,
                Verdict::Drop(_) => {}
            }
        }
        for _ in 0..4 {
            carrier += usize::from(ids.message(CARRIER, &f, t) == Verdict::Pass);
        }
    }
    let most = passed.iter().copied().max().unwrap_or(0);
    assert!(most <= 10, "a bot got {most} INVITEs through");
    assert!(banned.iter().all(|&b| b), "every bot is banned");
    assert_eq!(carrier, 1200, "the carrier lost calls");
}

#[test]
fn a_flood_is_banned_on_density_and_repeat_bans_grow() {
    let t0 = Instant::now();
    // Limits above the density, so the density is what bans.
    let mut rules = Rules::shipped().expect("rules");
    rules.untrusted_invite = crate::config::rules::Rate {
        rate: 1000.0,
        burst: 1000.0,
    };
    let mut ids = Ids::new(rules, vec![], t0);
    let f = invite(b"x");
    // 201 requests inside one 2 s window: banned on the 201st.
    let mut verdict = Verdict::Pass;
    for i in 0..201u64 {
        verdict = ids.message(ATTACKER, &f, t0 + Duration::from_millis(i * 5));
    }
    assert_eq!(
        verdict,
        Verdict::Ban {
            reason: Reason::Flood,
            duration: Duration::from_secs(300)
        }
    );
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(ids.message(ATTACKER, &f, t1), Verdict::Drop(Reason::Banned));
    assert_eq!(ids.bans(t1).len(), 1);
    // The ban expires; a second offence bans four times longer.
    let t2 = t0 + Duration::from_secs(302);
    assert!(ids.banned_until(ATTACKER, t2).is_none());
    let mut verdict = Verdict::Pass;
    for i in 0..201u64 {
        verdict = ids.message(ATTACKER, &f, t2 + Duration::from_millis(i * 5));
    }
    assert_eq!(
        verdict,
        Verdict::Ban {
            reason: Reason::Flood,
            duration: Duration::from_secs(1200)
        }
    );
    assert!(ids.unban(ATTACKER, t2 + Duration::from_secs(2)));
    assert!(!ids.unban(ATTACKER, t2 + Duration::from_secs(2)));
    // A steady 40 requests a second over many windows, within the
    // rate, is neither a flood nor over a limit.
    let mut ids2 = super::Ids::new(Rules::shipped().expect("rules"), vec![], t0);
    let o = Facts {
        class: Class::Other,
        ..f
    };
    let bans = (0..900u64)
        .filter(|i| {
            matches!(
                ids2.message(ATTACKER, &o, t0 + Duration::from_millis(i * 25)),
                Verdict::Ban { .. }
            )
        })
        .count();
    assert_eq!(bans, 0);
}

#[test]
fn carriers_are_dropped_never_banned() {
    let t0 = Instant::now();
    let mut ids = ids(t0);
    let f = invite(b"friendly-scanner");
    assert_eq!(ids.message(CARRIER, &f, t0), Verdict::Drop(Reason::Scanner));
    let f = invite(b"sbc");
    // 5000 INVITEs in one second: far past flood density, and past the
    // carrier's bucket (burst 40 x 50, refilling at 20 x 50 a second).
    let mut passed = 0;
    let mut over = 0;
    for i in 0..5000u64 {
        match ids.message(CARRIER, &f, t0 + Duration::from_micros(i * 200)) {
            Verdict::Pass => passed += 1,
            Verdict::Drop(Reason::CarrierLimit) => over += 1,
            v => panic!("a carrier got {v:?}"),
        }
    }
    assert!((2900..=3000).contains(&passed), "{passed} passed");
    assert_eq!(passed + over, 5000);
    // Login failures and malformed messages never ban it either.
    for _ in 0..20 {
        assert!(!matches!(
            ids.auth_failure(CARRIER, t0),
            Verdict::Ban { .. }
        ));
        assert!(!matches!(ids.malformed(CARRIER, t0), Verdict::Ban { .. }));
    }
    assert!(ids.bans(t0 + Duration::from_secs(1)).is_empty());
    assert!(ids.is_trusted("::ffff:203.0.113.99".parse().expect("ip")));
    // The first trunk that holds an address decides: an untrusted one
    // listed before the carrier's covers 203.0.113.0/26.
    assert!(!ids.is_trusted("203.0.113.9".parse().expect("ip")));
}

#[test]
fn one_scanner_message_bans() {
    let t0 = Instant::now();
    let mut ids = ids(t0);
    for (n, ua) in [
        &b"friendly-scanner"[..],
        b"SIPVicious 0.3.4",
        b"Mozilla sipcli/v1.8",
    ]
    .into_iter()
    .enumerate()
    {
        let ip = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 100 + n as u8));
        assert!(matches!(
            ids.message(ip, &invite(ua), t0),
            Verdict::Ban {
                reason: Reason::Scanner,
                ..
            }
        ));
    }
    let from = Facts {
        from: Some(b"\"sipvicious\"<sip:100@1.1.1.1>;tag=x"),
        ..invite(b"ok")
    };
    assert!(matches!(
        ids.message(ATTACKER, &from, t0),
        Verdict::Ban {
            reason: Reason::Scanner,
            ..
        }
    ));
    // An ordinary User-Agent passes.
    let ip = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 200));
    assert_eq!(
        ids.message(ip, &invite(b"Asterisk PBX 20.1"), t0),
        Verdict::Pass
    );
}

#[test]
fn malformed_injection_and_login_failures_score_towards_a_ban() {
    let t0 = Instant::now();
    let mut ids = ids(t0);
    // 20 points each, threshold 100: the fifth bans (a millisecond
    // apart: decay must not shave the total under the threshold).
    for i in 0..4 {
        assert_eq!(
            ids.malformed(ATTACKER, t0 + Duration::from_millis(i)),
            Verdict::Pass
        );
    }
    assert!(matches!(
        ids.malformed(ATTACKER, t0 + Duration::from_millis(4)),
        Verdict::Ban {
            reason: Reason::Malformed,
            ..
        }
    ));
    // Decay: 2 points a second, so spread out they never add up.
    let b = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 8));
    for i in 0..20u64 {
        assert_eq!(
            ids.auth_failure(b, t0 + Duration::from_secs(i * 10)),
            Verdict::Pass
        );
    }
    let c = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 9));
    let sqli = Facts {
        uri: b"sip:1' or '1'='1@gw",
        ..invite(b"ok")
    };
    let verdicts: Vec<Verdict> = (0..4).map(|_| ids.message(c, &sqli, t0)).collect();
    assert_eq!(&verdicts[..3], &[Verdict::Pass; 3]);
    assert!(matches!(
        verdicts[3],
        Verdict::Ban {
            reason: Reason::Injection,
            ..
        }
    ));
    // Ordinary SIP punctuation is not injection.
    let d = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 10));
    let normal = Facts {
        uri: b"sip:+442079460000@gw;user=phone",
        from: Some(b"\"O'Brien, Pat\" <sip:+447700900123@192.0.2.1>;tag=1"),
        ..invite(b"ok")
    };
    for _ in 0..8 {
        assert_eq!(ids.message(d, &normal, t0), Verdict::Pass);
    }
}

#[test]
fn extension_enumeration_bans() {
    let t0 = Instant::now();
    let mut ids = ids(t0);
    // The same user refused many times is not enumeration.
    for _ in 0..50 {
        assert_eq!(ids.refused_user(ATTACKER, b"100", t0), Verdict::Pass);
    }
    let mut last = Verdict::Pass;
    for u in 101..110 {
        last = ids.refused_user(ATTACKER, u.to_string().as_bytes(), t0);
    }
    assert!(matches!(
        last,
        Verdict::Ban {
            reason: Reason::Enumeration,
            ..
        }
    ));
    // Spread over windows, it is not.
    let b = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 8));
    for u in 0..30u64 {
        let v = ids.refused_user(
            b,
            u.to_string().as_bytes(),
            t0 + Duration::from_secs(u * 10),
        );
        assert_eq!(v, Verdict::Pass);
    }
}

#[test]
fn prefixes_share_a_larger_bucket_and_memory_is_bounded() {
    let t0 = Instant::now();
    let mut rules = Rules::shipped().expect("rules");
    rules.max_sources = 1000;
    let mut ids = Ids::new(rules, vec![], t0);
    let f = invite(b"x");
    // 10 addresses of one /24, 8 INVITEs each (an untrusted source's
    // burst): 80 > 32 (4 x 8) for the prefix.
    let mut prefix_drops = 0;
    for host in 1..=10u8 {
        let ip = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, host));
        for _ in 0..8 {
            if ids.message(ip, &f, t0) == Verdict::Drop(Reason::PrefixRate) {
                prefix_drops += 1;
            }
        }
    }
    assert_eq!(prefix_drops, 80 - 32);
    for i in 0..5000u32 {
        let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        ids.message(ip, &f, t0);
    }
    assert_eq!(ids.tracked(), 1000);
}

#[test]
fn a_ban_outlives_eviction_and_expires_on_time() {
    let t0 = Instant::now();
    let mut rules = Rules::shipped().expect("rules");
    rules.max_sources = 1000;
    let mut ids = Ids::new(rules, vec![], t0);
    assert!(matches!(
        ids.message(ATTACKER, &invite(b"friendly-scanner"), t0),
        Verdict::Ban { .. }
    ));
    // Two thousand other sources push it out of the LRU.
    for i in 0..2000u32 {
        ids.message(
            IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
            &invite(b"x"),
            t0,
        );
    }
    let t1 = t0 + Duration::from_secs(299);
    assert_eq!(
        ids.message(ATTACKER, &invite(b"x"), t1),
        Verdict::Drop(Reason::Banned)
    );
    assert_eq!(ids.bans_active(), 1);
    assert!(ids.expire(t1).is_empty());
    let t2 = t0 + Duration::from_secs(300);
    assert_eq!(ids.expire(t2), vec![ATTACKER]);
    assert_eq!(ids.bans_active(), 0);
    assert_eq!(ids.message(ATTACKER, &invite(b"x"), t2), Verdict::Pass);
    // The history stays: the next ban is longer.
    assert_eq!(
        ids.message(ATTACKER, &invite(b"sipvicious"), t2),
        Verdict::Ban {
            reason: Reason::Scanner,
            duration: Duration::from_secs(1200)
        }
    );
}
