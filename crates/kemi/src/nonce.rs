//! Digest nonces: issued by the challenges, checked by the auth functions.
//!
//! A nonce carries everything needed to check it, so a challenge stores
//! nothing per caller: its expiry (Unix milliseconds), an index, and an
//! HMAC-SHA256 over both and the tenant id, keyed with a secret only this
//! process knows. A nonce that does not verify was not issued here (or was
//! issued for another tenant); one past its expiry is stale, and the
//! caller re-challenges with `stale=true` so the user agent retries
//! without asking its user for the password again.
//!
//! Replay protection (Kamailio's `nonce_count` and `one_time_nonce`) uses
//! a fixed table of [`SLOTS`] slots, indexed by the nonce index modulo the
//! table size. Issuing a nonce claims its slot, so memory stays bounded
//! however many challenges are sent; a nonce whose slot a newer one took
//! can no longer be checked for replay and is refused. Responses with
//! `qop` must count `nc` up (RFC 7616 section 3.4: the highest `nc` seen
//! is kept); responses without `qop` may use their nonce once, except for
//! a retransmission of the very request that used it (same Call-ID and
//! CSeq), which is accepted again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// Slots of the replay table: nonces in flight at once before the oldest
/// lose their replay state (Kamailio's `nc_array_size` default is 1 M
/// entries of one byte; ours are 16 bytes, so 1 MiB holds 64 k).
const SLOTS: usize = 1 << 16;

/// Bytes of a nonce before hex encoding: expiry (8), index (4), MAC (16).
const NONCE_BYTES: usize = 8 + 4 + MAC_BYTES;

/// The HMAC-SHA256 is truncated to 128 bits: forging one is still a 2^128
/// guess, and the nonce stays short (56 hex digits).
const MAC_BYTES: usize = 16;

/// Nonces with expiry and replay protection, shared by every instance of
/// the tenants that use one [`crate::Services`].
pub struct Nonces {
    secret: [u8; 32],
    expiry: Duration,
    /// The index of the next nonce; wraps.
    next: AtomicU32,
    /// Replay state per slot, allocated on the first challenge.
    slots: Mutex<Vec<Slot>>,
}

/// Replay state of the nonce that last claimed a slot.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Index of the nonce that owns the slot.
    index: u32,
    /// Highest `nc` accepted for it (0: none yet).
    nc: u32,
    /// Key of the request that used it without `qop` (0: unused).
    used_by: u64,
}

/// A nonce that verified: ours, for this tenant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verified {
    index: u32,
    /// Past its expiry: the user agent must retry with a fresh nonce.
    pub(crate) expired: bool,
}

/// How a response uses its nonce.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Usage<'a> {
    /// With `qop`: the nonce count, which must exceed every one seen.
    Count(u32),
    /// Without `qop`: once, by the request with this Call-ID and CSeq.
    Once { call_id: &'a str, cseq: &'a str },
}

/// Why a use of a verified nonce was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Used before: `nc` not above the highest seen, or a second request
    /// with a one-time nonce.
    Replayed,
    /// A newer nonce took the slot, so replays can no longer be told.
    Forgotten,
}

impl Nonces {
    /// Kamailio's default nonce_expire: 300 s (OpenSIPS uses 30 s).
    pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(300);

    /// Nonces signed with `secret` that stay fresh for `expiry`. Processes
    /// that share a secret accept each other's nonces (for expiry; replay
    /// state is per process).
    pub fn new(secret: [u8; 32], expiry: Duration) -> Nonces {
        Nonces {
            secret,
            expiry,
            next: AtomicU32::new(0),
            slots: Mutex::new(Vec::new()),
        }
    }

    /// A secret from the operating system's random source, so nonces
    /// cannot be forged by anyone who knows how they are built.
    ///
    /// # Panics
    /// When the operating system has no random source: without one no
    /// secret can be trusted, and authentication must not start.
    pub fn random_secret() -> [u8; 32] {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the operating system's random source");
        secret
    }

    /// A fresh nonce for `tenant`, claiming its replay slot.
    pub(crate) fn issue(&self, tenant: &str) -> String {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        let expires = now_ms().saturating_add(self.expiry.as_millis() as u64);
        {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if slots.is_empty() {
                slots.resize(SLOTS, Slot::default());
            }
            slots[index as usize % SLOTS] = Slot {
                index,
                ..Slot::default()
            };
        }
        let mut raw = Vec::with_capacity(NONCE_BYTES);
        raw.extend_from_slice(&expires.to_be_bytes());
        raw.extend_from_slice(&index.to_be_bytes());
        raw.extend_from_slice(&self.mac(expires, index, tenant)[..MAC_BYTES]);
        hex::encode(raw)
    }

    /// Check that `nonce` was issued here for `tenant`; `None` when it was
    /// not (malformed, forged, or another tenant's).
    pub(crate) fn verify(&self, tenant: &str, nonce: &str) -> Option<Verified> {
        let raw = hex::decode(nonce).ok()?;
        if raw.len() != NONCE_BYTES {
            return None;
        }
        let (expires, rest) = raw.split_at(8);
        let (index, mac) = rest.split_at(4);
        let expires = u64::from_be_bytes(expires.try_into().ok()?);
        let index = u32::from_be_bytes(index.try_into().ok()?);
        let expected = self.mac(expires, index, tenant);
        if !crate::digest::constant_time_eq(mac, &expected[..MAC_BYTES]) {
            return None;
        }
        Some(Verified {
            index,
            expired: now_ms() > expires,
        })
    }

    /// Record a successful use of `nonce`, refusing replays. Called only
    /// once the response proved the password, so failed attempts do not
    /// burn nonce counts (Kamailio's flag 32 behaviour, always on).
    pub(crate) fn record_use(&self, nonce: Verified, usage: Usage<'_>) -> Result<(), Refused> {
        let key = match usage {
            Usage::Count(_) => 0,
            Usage::Once { call_id, cseq } => self.request_key(call_id, cseq),
        };
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = slots.get_mut(nonce.index as usize % SLOTS) else {
            // Nothing issued since start: the nonce is from a process that
            // shared our secret, and we hold no replay state for it.
            return Err(Refused::Forgotten);
        };
        if slot.index != nonce.index {
            return Err(Refused::Forgotten);
        }
        match usage {
            Usage::Count(nc) => {
                if nc <= slot.nc {
                    return Err(Refused::Replayed);
                }
                slot.nc = nc;
            }
            Usage::Once { .. } => {
                if slot.used_by != 0 && slot.used_by != key {
                    return Err(Refused::Replayed);
                }
                slot.used_by = key;
            }
        }
        Ok(())
    }

    /// HMAC-SHA256 of the nonce's fields with the secret (RFC 2104).
    fn mac(&self, expires: u64, index: u32, tenant: &str) -> [u8; 32] {
        hmac_sha256(
            &self.secret,
            &[
                &expires.to_be_bytes(),
                &index.to_be_bytes(),
                tenant.as_bytes(),
            ],
        )
    }

    /// A non-zero key naming one request (its Call-ID and CSeq), keyed
    /// with the secret so nobody can make another request collide with it.
    fn request_key(&self, call_id: &str, cseq: &str) -> u64 {
        let mac = hmac_sha256(
            &self.secret,
            &[b"request\0", call_id.as_bytes(), b"\0", cseq.as_bytes()],
        );
        let mut first = [0u8; 8];
        first.copy_from_slice(&mac[..8]);
        u64::from_be_bytes(first) | 1
    }
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces")
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// HMAC-SHA256 (RFC 2104) of the concatenated `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonces(expiry: Duration) -> Nonces {
        Nonces::new([7; 32], expiry)
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2.
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        let mac = hmac_sha256(
            &[0xaa; 131],
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_nonce_verifies_for_its_tenant_only() {
        let n = nonces(Nonces::DEFAULT_EXPIRY);
        let nonce = n.issue("a");
        assert_eq!(nonce.len(), 2 * NONCE_BYTES);
        let v = n.verify("a", &nonce).expect("ours");
        assert!(!v.expired);
        assert!(n.verify("b", &nonce).is_none(), "another tenant's");
        assert!(
            nonces(Nonces::DEFAULT_EXPIRY).verify("a", &nonce).is_some(),
            "same secret"
        );
        assert!(
            Nonces::new([8; 32], Nonces::DEFAULT_EXPIRY)
                .verify("a", &nonce)
                .is_none(),
            "another secret"
        );
    }

    #[test]
    fn tampered_or_malformed_nonces_are_not_ours() {
        let n = nonces(Nonces::DEFAULT_EXPIRY);
        let nonce = n.issue("a");
        // A later expiry with the old MAC.
        let mut raw = hex::decode(&nonce).unwrap();
        raw[7] ^= 1;
        assert!(n.verify("a", &hex::encode(&raw)).is_none());
        for bad in [
            "",
            "zz",
            &nonce[..nonce.len() - 2],
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        ] {
            assert!(n.verify("a", bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn expired_nonces_still_verify_as_ours_but_stale() {
        let n = nonces(Duration::ZERO);
        let nonce = n.issue("a");
        std::thread::sleep(Duration::from_millis(5));
        assert!(n.verify("a", &nonce).expect("ours").expired);
    }

    #[test]
    fn nonce_counts_must_increase() {
        let n = nonces(Nonces::DEFAULT_EXPIRY);
        let v = n.verify("a", &n.issue("a")).unwrap();
        assert_eq!(n.record_use(v, Usage::Count(0)), Err(Refused::Replayed));
        assert_eq!(n.record_use(v, Usage::Count(1)), Ok(()));
        assert_eq!(n.record_use(v, Usage::Count(1)), Err(Refused::Replayed));
        assert_eq!(n.record_use(v, Usage::Count(3)), Ok(()));
        assert_eq!(n.record_use(v, Usage::Count(2)), Err(Refused::Replayed));
    }

    #[test]
    fn one_time_nonces_accept_only_a_retransmission() {
        let n = nonces(Nonces::DEFAULT_EXPIRY);
        let v = n.verify("a", &n.issue("a")).unwrap();
        let first = Usage::Once {
            call_id: "c1",
            cseq: "2 REGISTER",
        };
        assert_eq!(n.record_use(v, first), Ok(()));
        assert_eq!(n.record_use(v, first), Ok(()), "retransmission");
        let next = Usage::Once {
            call_id: "c1",
            cseq: "3 REGISTER",
        };
        assert_eq!(n.record_use(v, next), Err(Refused::Replayed));
    }

    #[test]
    fn a_slot_taken_by_a_newer_nonce_forgets_the_old_one() {
        let n = nonces(Nonces::DEFAULT_EXPIRY);
        let old = n.verify("a", &n.issue("a")).unwrap();
        for _ in 1..SLOTS {
            n.issue("a");
        }
        let newer = n.verify("a", &n.issue("a")).unwrap();
        assert_eq!(old.index as usize % SLOTS, newer.index as usize % SLOTS);
        assert_eq!(n.record_use(old, Usage::Count(1)), Err(Refused::Forgotten));
        assert_eq!(n.record_use(newer, Usage::Count(1)), Ok(()));
    }

    #[test]
    fn nonces_are_shared_safely_between_threads() {
        let n = std::sync::Arc::new(nonces(Nonces::DEFAULT_EXPIRY));
        let nonce = n.issue("a");
        let v = n.verify("a", &nonce).unwrap();
        let accepted: usize = (1..=8u32)
            .map(|_| {
                let n = n.clone();
                std::thread::spawn(move || {
                    (1..=100u32)
                        .filter(|&nc| n.record_use(v, Usage::Count(nc)).is_ok())
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        // Each accepted use raises the highest nc, which ends at 100: no
        // count was accepted twice, whatever the interleaving.
        assert!((1..=100).contains(&accepted), "{accepted}");
        assert_eq!(n.record_use(v, Usage::Count(100)), Err(Refused::Replayed));
    }

    #[test]
    fn random_secrets_differ() {
        assert_ne!(Nonces::random_secret(), Nonces::random_secret());
    }
}
