//! Connection IDs for the agents' QUIC endpoints: 8 bytes, 6 of them
//! unpredictable and 2 a keyed check.
//!
//! Why not quinn-proto's default (`HashedConnectionIdGenerator`): it
//! draws 3 random bytes per ID (16.7 million values) and fills the other
//! 5 with a keyed hash of them, and the ID it gives a Retry is not checked
//! against the IDs its connections already hold (only IDs issued to
//! connections are). With thousands of agents on one endpoint, each
//! connection holding several IDs, a Retry's ID matches a live one about
//! once in a thousand logins: the client's next Initial then goes to that
//! other connection, is dropped there, and the login times out after its
//! retransmissions went the same way. `tollgate loadgen --calls 2500`
//! lost a login so in 10 of 15 runs (stop 31, traced with `tcpdump` and
//! the engine's routing to a Retry ID that another connection held), and
//! in none of 6 with this generator. Here 6 bytes of each ID are
//! HMAC-SHA256 of a counter under a random key, so a clash with the ten
//! thousand or so live IDs of a busy endpoint is about one in 10^10 per
//! Retry. quinn-proto makes an ID for every Retry, so for every
//! token-less Initial a stranger sends: no system call is made per ID,
//! and nothing here can fail.
//!
//! The other 2 bytes are a check, HMAC-SHA256 of the first 6 under a
//! second key: a short-header packet with an ID this endpoint did not
//! make gets no stateless reset unless it passes the check by chance, 1
//! in 65,536 (the default's 5-byte check passes 1 in 2^40). Those that
//! pass get a reset, smaller than what they sent and at most one each
//! 20 ms per shard (quinn-proto's limit): nothing worth reflecting. The
//! keys are made when quinn asks the factory for a generator, once per
//! shard's endpoint. The ID stays 8 bytes, which every agent's packet
//! carries.

use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};

const NONCE: usize = 6;
const CHECK: usize = 2;
/// The length of every ID made here (quinn's default length too).
pub const LEN: usize = NONCE + CHECK;

/// One endpoint's generator (quinn asks its factory for one per endpoint).
pub struct Generator {
    nonce_key: ring::hmac::Key,
    check_key: ring::hmac::Key,
    counter: u64,
}

impl Generator {
    pub fn new() -> Self {
        let key = || {
            let mut k = [0u8; 32];
            crate::crypto::random_or_stop(&mut k);
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k)
        };
        Self {
            nonce_key: key(),
            check_key: key(),
            counter: 0,
        }
    }

    fn check(&self, nonce: &[u8]) -> [u8; CHECK] {
        let tag = ring::hmac::sign(&self.check_key, nonce);
        let t = tag.as_ref();
        [t[0], t[1]]
    }
}

impl Default for Generator {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnectionIdGenerator for Generator {
    fn generate_cid(&mut self) -> ConnectionId {
        self.counter = self.counter.wrapping_add(1);
        let mut id = [0u8; LEN];
        let nonce = ring::hmac::sign(&self.nonce_key, &self.counter.to_le_bytes());
        id[..NONCE].copy_from_slice(&nonce.as_ref()[..NONCE]);
        let check = self.check(&id[..NONCE]);
        id[NONCE..].copy_from_slice(&check);
        ConnectionId::new(&id)
    }

    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        if cid.len() != LEN || cid[NONCE..] != self.check(&cid[..NONCE]) {
            return Err(InvalidCid);
        }
        Ok(())
    }

    fn cid_len(&self) -> usize {
        LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// An endpoint configuration whose connection IDs come from [`Generator`].
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut c = quinn::EndpointConfig::default();
    c.cid_generator(|| Box::new(Generator::new()));
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_do_not_repeat_where_quinns_default_does() {
        // Twenty thousand IDs: the default's 24 random bits repeat about
        // a dozen times over that many (birthday bound); 48 bits should
        // not repeat at all.
        let n = 20_000;
        let mut ours = Generator::new();
        let distinct: HashSet<ConnectionId> = (0..n).map(|_| ours.generate_cid()).collect();
        assert_eq!(distinct.len(), n);
        let mut default = quinn_proto::HashedConnectionIdGenerator::new();
        let theirs: HashSet<ConnectionId> = (0..n).map(|_| default.generate_cid()).collect();
        assert!(
            theirs.len() < n,
            "the default generator no longer repeats: this module may be unneeded"
        );
    }

    #[test]
    fn an_endpoint_knows_its_own_ids_and_not_others() {
        let mut a = Generator::new();
        let mut b = Generator::new();
        for _ in 0..1000 {
            let id = a.generate_cid();
            assert_eq!(id.len(), LEN);
            assert!(a.validate(&id).is_ok());
        }
        // Another endpoint's IDs (another key) pass only by chance: 1 in
        // 65,536 each, so a handful at most of a thousand.
        let passed = (0..1000)
            .filter(|_| a.validate(&b.generate_cid()).is_ok())
            .count();
        assert!(passed <= 3, "{passed} of 1000 foreign IDs passed");
        assert!(a.validate(&ConnectionId::new(&[0u8; 4])).is_err());
    }
}
