//! [`TextDigest`]: a stable, one-way name for a text that may be a credential.
//!
//! ```
//! use tollway_core::TextDigest;
//!
//! let digest = TextDigest::of("sk-live-123");
//! assert_eq!(digest, TextDigest::of("sk-live-123"));
//! assert_eq!(digest.hex().len(), 32);
//! assert!(!format!("{digest:?}").contains("sk-live"));
//! ```

use std::fmt;
use std::hash::Hasher;

/// 128 bits of SipHash-2-4 (two runs under two fixed keys) of a text that may be a credential
/// (an API key, a user id): the same in every process, so that the instances of a fleet agree
/// on a client's key in Redis, and the text cannot be read back from it. The server limiter's
/// keys hold one (hashed again under a key drawn at random per process, so a client cannot
/// choose its bucket); the budget's fleet quotas name their Redis keys with [`hex`](Self::hex).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TextDigest([u64; 2]);

impl TextDigest {
    /// The digest of `text`.
    pub fn of(text: &str) -> Self {
        // Fixed keys (the first 32 bytes of pi's fraction): the digest must be the same in
        // every process of a fleet.
        const KEYS: [(u64, u64); 2] = [
            (0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344),
            (0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89),
        ];
        let half = |(k0, k1): (u64, u64)| {
            // The standard library's keyed SipHash-2-4: deprecated as a `Hasher` for maps,
            // still exactly SipHash-2-4, which is what a stable digest needs.
            #[allow(deprecated)]
            let mut hasher = std::hash::SipHasher::new_with_keys(k0, k1);
            hasher.write(text.as_bytes());
            hasher.finish()
        };
        Self([half(KEYS[0]), half(KEYS[1])])
    }

    /// The two 64-bit halves.
    pub const fn words(&self) -> [u64; 2] {
        self.0
    }

    /// The digest in hexadecimal (32 digits): how Redis names a fleet's text keys.
    pub fn hex(&self) -> String {
        format!("{:016x}{:016x}", self.0[0], self.0[1])
    }
}

impl fmt::Debug for TextDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the text: it may be a credential.
        write!(f, "TextDigest({:08x}…)", self.0[0] >> 32)
    }
}
