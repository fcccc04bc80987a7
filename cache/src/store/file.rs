//! The store's file operations: loading an entry, writing a new file, the folder's secret.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use bytes::Bytes;
use tollway_core::durable;

use crate::entry::{self, StoredResponse};
use crate::key::CacheKey;

const SECRET_FILE: &str = "secret";

/// Why a file could not be loaded.
pub(super) enum Load {
    Io(io::Error),
    Corrupt(&'static str),
}

/// The shard folder a file is in.
pub(super) fn shard_of(path: &Path) -> &Path {
    path.parent().unwrap_or(path)
}

/// Reads and decodes an open entry file of `len` bytes (its length when opened: files are
/// replaced, never rewritten in place).
pub(super) fn load(key: &CacheKey, file: File, len: u64) -> Result<StoredResponse, Load> {
    let capacity = usize::try_from(len).map_err(|_| Load::Corrupt("too long"))?;
    let mut bytes = Vec::with_capacity(capacity);
    // `take`: one read, into memory not zeroed first, and no read to find the end.
    file.take(len).read_to_end(&mut bytes).map_err(Load::Io)?;
    entry::decode(key, &Bytes::from(bytes)).map_err(|corrupt| Load::Corrupt(corrupt.0))
}

/// Removes `path`: whether it was there.
pub(super) fn remove_file(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

pub(super) fn write_new_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = durable::private_options()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Reads the folder's secret, creating it (32 random bytes, mode 0600) if it is missing. The
/// caller holds the folder lock, so two processes opening a new folder agree on one secret.
pub(super) fn load_or_create_secret(root: &Path) -> io::Result<[u8; 32]> {
    let path = root.join(SECRET_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let secret: [u8; 32] = rand::random();
            durable::write_atomic(&path, &secret)?;
            secret.to_vec()
        }
        Err(e) => return Err(e),
    };
    bytes.try_into().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a 32-byte cache secret", path.display()),
        )
    })
}
