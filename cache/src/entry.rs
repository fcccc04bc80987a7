//! One cached response and its file format.
//!
//! A cache file is, in order (integers little-endian):
//!
//! | bytes | what |
//! |---|---|
//! | 8 | magic `TWCACHE2` (format version 2) |
//! | 32 | the entry's key (a keyed hash: it tells nothing about the request) |
//! | 4 × 8 | stored at, fresh until, stale-usable until, kept until (milliseconds since the Unix epoch) |
//! | 2 | status code |
//! | 4 | number of headers, then for each: 2-byte name length, name, 4-byte value length, value |
//! | 8 | body length, then the body |
//! | 16 | XXH3-128 of everything above (little-endian) |
//!
//! Decoding checks every length against what is left and the checksum before it trusts a byte,
//! so a truncated, torn or tampered file is reported as [`Corrupt`], never served and never a
//! panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::key::CacheKey;

const MAGIC: &[u8; 8] = b"TWCACHE2";
const CHECKSUM_LEN: usize = 16;

/// The file checksum. Not a cryptographic hash: it finds torn, truncated and corrupted files
/// (anyone who can write the folder could write a valid file whatever the checksum), and at
/// tens of GB/s it costs a fraction of reading the file, where BLAKE3 cost several times more.
fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    twox_hash::XxHash3_128::oneshot(bytes).to_le_bytes()
}

/// A response kept by the cache: status, headers, the whole body, and its lifetimes.
#[derive(Debug, Clone)]
pub(crate) struct StoredResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) stored_at: SystemTime,
    /// Fresh (served as a hit) before this.
    pub(crate) expires_at: SystemTime,
    /// Usable as a stale fallback, when the upstream fails, before this.
    pub(crate) stale_until: SystemTime,
    /// Kept (to revalidate, or as a stale fallback) before this; removed after. Never before
    /// `stale_until`.
    pub(crate) keep_until: SystemTime,
}

impl StoredResponse {
    /// Whether it may be served as a hit at `now`.
    pub(crate) fn is_fresh(&self, now: SystemTime) -> bool {
        now < self.expires_at
    }

    /// Whether it may stand in for a failed upstream at `now`.
    pub(crate) fn is_usable_stale(&self, now: SystemTime) -> bool {
        now < self.stale_until
    }

    /// Whether it is still worth keeping at `now`: to revalidate or to stand in for a failure.
    pub(crate) fn is_kept(&self, now: SystemTime) -> bool {
        now < self.keep_until
    }

    /// Its age at `now`, for the `Age` header.
    pub(crate) fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.stored_at).unwrap_or_default()
    }
}

/// A cache file that cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt(pub(crate) &'static str);

/// Writes `entry` for `key` in the file format.
pub(crate) fn encode(key: &CacheKey, entry: &StoredResponse) -> Vec<u8> {
    let headers_len: usize = entry
        .headers
        .iter()
        .map(|(n, v)| 6 + n.as_str().len() + v.len())
        .sum();
    let mut out = Vec::with_capacity(8 + 32 + 32 + 2 + 4 + headers_len + 8 + entry.body.len() + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(key.as_bytes());
    for time in [
        entry.stored_at,
        entry.expires_at,
        entry.stale_until,
        entry.keep_until,
    ] {
        out.extend_from_slice(&millis(time).to_le_bytes());
    }
    out.extend_from_slice(&entry.status.as_u16().to_le_bytes());
    let count = u32::try_from(entry.headers.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    for (name, value) in entry.headers.iter().take(count as usize) {
        let name = name.as_str().as_bytes();
        // Header names are far below 64 KiB and values below 4 GiB: http enforces both.
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(&(entry.body.len() as u64).to_le_bytes());
    out.extend_from_slice(&entry.body);
    let checksum = checksum(&out);
    out.extend_from_slice(&checksum);
    out
}

/// Reads a file written by [`encode`] for `key`.
pub(crate) fn decode(key: &CacheKey, file: &Bytes) -> Result<StoredResponse, Corrupt> {
    if file.len() < MAGIC.len() + 32 + CHECKSUM_LEN {
        return Err(Corrupt("truncated"));
    }
    let (content, stored) = file.split_at(file.len() - CHECKSUM_LEN);
    if checksum(content) != stored {
        return Err(Corrupt("checksum mismatch"));
    }
    let mut reader = Reader {
        buf: content,
        at: 0,
    };
    if reader.take(8)? != MAGIC {
        return Err(Corrupt("unknown format"));
    }
    if reader.take(32)? != key.as_bytes() {
        return Err(Corrupt("file holds another key"));
    }
    let stored_at = from_millis(reader.u64()?);
    let expires_at = from_millis(reader.u64()?);
    let stale_until = from_millis(reader.u64()?);
    let keep_until = from_millis(reader.u64()?);
    let status = StatusCode::from_u16(reader.u16()?).map_err(|_| Corrupt("bad status"))?;
    let count = reader.u32()? as usize;
    let mut headers = HeaderMap::with_capacity(count.min(256));
    for _ in 0..count {
        let name_len = usize::from(reader.u16()?);
        let name = HeaderName::from_bytes(reader.take(name_len)?)
            .map_err(|_| Corrupt("bad header name"))?;
        let value_len = reader.u32()? as usize;
        let value = HeaderValue::from_bytes(reader.take(value_len)?)
            .map_err(|_| Corrupt("bad header value"))?;
        headers.append(name, value);
    }
    let body_len = usize::try_from(reader.u64()?).map_err(|_| Corrupt("body too long"))?;
    let start = reader.at;
    reader.take(body_len)?;
    if reader.at != content.len() {
        return Err(Corrupt("trailing bytes"));
    }
    Ok(StoredResponse {
        status,
        headers,
        body: file.slice(start..start + body_len),
        stored_at,
        expires_at,
        stale_until,
        keep_until,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        let end = self.at.checked_add(n).ok_or(Corrupt("length overflow"))?;
        let bytes = self.buf.get(self.at..end).ok_or(Corrupt("truncated"))?;
        self.at = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Corrupt> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, Corrupt> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, Corrupt> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, Corrupt> {
        self.array().map(u64::from_le_bytes)
    }
}

fn millis(time: SystemTime) -> u64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (CacheKey, StoredResponse) {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-many", HeaderValue::from_static("1"));
        headers.append("x-many", HeaderValue::from_static("2"));
        let now = from_millis(millis(SystemTime::now()));
        let entry = StoredResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"{\"users\":[]}"),
            stored_at: now,
            expires_at: now + Duration::from_secs(60),
            stale_until: now + Duration::from_secs(120),
            keep_until: now + Duration::from_secs(180),
        };
        (CacheKey::from_bytes([7; 32]), entry)
    }

    #[test]
    fn round_trip() {
        let (key, entry) = sample();
        let decoded = decode(&key, &Bytes::from(encode(&key, &entry))).unwrap();
        assert_eq!(decoded.status, entry.status);
        assert_eq!(decoded.headers, entry.headers);
        assert_eq!(decoded.body, entry.body);
        assert_eq!(decoded.stored_at, entry.stored_at);
        assert_eq!(decoded.expires_at, entry.expires_at);
        assert_eq!(decoded.stale_until, entry.stale_until);
        assert_eq!(decoded.keep_until, entry.keep_until);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_corrupt() {
        let (key, entry) = sample();
        let file = encode(&key, &entry);
        for len in 0..file.len() {
            assert!(decode(&key, &Bytes::copy_from_slice(&file[..len])).is_err());
        }
        for at in 0..file.len() {
            let mut bad = file.clone();
            bad[at] ^= 0x40;
            assert!(decode(&key, &Bytes::from(bad)).is_err(), "byte {at}");
        }
    }

    #[test]
    fn another_key_is_refused() {
        let (key, entry) = sample();
        let file = Bytes::from(encode(&key, &entry));
        assert_eq!(
            decode(&CacheKey::from_bytes([8; 32]), &file).unwrap_err(),
            Corrupt("file holds another key")
        );
    }
}
