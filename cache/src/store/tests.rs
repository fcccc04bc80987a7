use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::*;

fn entry(body: &'static [u8]) -> Arc<StoredResponse> {
    let now = SystemTime::now();
    Arc::new(StoredResponse {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: Bytes::from_static(body),
        stored_at: now,
        expires_at: now + Duration::from_secs(60),
        stale_until: now + Duration::from_secs(60),
        keep_until: now + Duration::from_secs(60),
    })
}

fn k(n: u8) -> CacheKey {
    CacheKey::from_bytes([n; 32])
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn on_disk(root: &Path) -> u64 {
    let mut total = 0;
    for shard in fs::read_dir(root).unwrap() {
        let shard = shard.unwrap().path();
        if !shard.is_dir() {
            continue;
        }
        for file in fs::read_dir(shard).unwrap() {
            let file = file.unwrap();
            if CacheKey::from_hex(file.file_name().to_str().unwrap()).is_some() {
                total += file.metadata().unwrap().len();
            }
        }
    }
    total
}

#[test]
fn write_read_and_owner_only_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path(), 1 << 20, 0).unwrap();
    store.write(&k(0xab), &entry(b"hello")).unwrap();
    let Lookup::Found(found) = store.read(&k(0xab)) else {
        panic!("expected the entry")
    };
    assert_eq!(found.body, Bytes::from_static(b"hello"));
    let file = dir.path().join("ab").join(k(0xab).hex());
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&dir.path().join("secret")), 0o600);
    assert_eq!(mode(&dir.path().join("journal")), 0o600);
    assert_eq!(mode(&dir.path().join("ab")), 0o700);
    assert!(matches!(store.read(&k(1)), Lookup::Missing));
}

#[test]
fn secret_persists_and_index_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let first = DiskStore::open(dir.path(), 1 << 20, 0).unwrap();
    first.write(&k(1), &entry(b"one")).unwrap();
    first.write(&k(2), &entry(b"two")).unwrap();
    let second = DiskStore::open(dir.path(), 1 << 20, 0).unwrap();
    assert_eq!(first.secret(), second.secret());
    assert_eq!(second.len(), 2);
    assert_eq!(second.total_bytes(), first.total_bytes());
    fs::write(dir.path().join("secret"), b"short").unwrap();
    assert_eq!(
        DiskStore::open(dir.path(), 1, 0).unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
}

#[test]
fn truncated_and_garbage_files_are_corrupt_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path(), 1 << 20, 0).unwrap();
    store
        .write(&k(0xcd), &entry(b"a body of some length"))
        .unwrap();
    let file = dir.path().join("cd").join(k(0xcd).hex());
    let full = fs::read(&file).unwrap();
    fs::write(&file, &full[..full.len() / 2]).unwrap();
    assert!(matches!(store.read(&k(0xcd)), Lookup::Corrupt));
    assert!(store.remove(&k(0xcd), RemoveIf::Corrupt).unwrap());
    assert!(!file.exists());
    assert_eq!(store.len(), 0);
    fs::write(&file, b"garbage").unwrap();
    assert!(matches!(store.read(&k(0xcd)), Lookup::Corrupt));
    fs::write(&file, b"").unwrap();
    assert!(matches!(store.read(&k(0xcd)), Lookup::Corrupt));
}

#[test]
fn conditional_removal_judges_the_file_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path(), 1 << 20, 0).unwrap();
    store.write(&k(1), &entry(b"fresh")).unwrap();
    // Someone rewrote it fresh since the caller found it corrupt or expired: kept.
    assert!(!store.remove(&k(1), RemoveIf::Corrupt).unwrap());
    assert!(
        !store
            .remove(&k(1), RemoveIf::Expired(SystemTime::now()))
            .unwrap()
    );
    assert_eq!(store.len(), 1);
    let later = SystemTime::now() + Duration::from_secs(61);
    assert!(store.remove(&k(1), RemoveIf::Expired(later)).unwrap());
    assert_eq!((store.len(), store.total_bytes()), (0, 0));
    assert!(!store.remove(&k(1), RemoveIf::Always).unwrap());
}

#[test]
fn eviction_keeps_total_under_cap_dropping_least_recent() {
    let dir = tempfile::tempdir().unwrap();
    let one = entry::encode(&k(1), &entry(&[7; 100])).len() as u64;
    let store = DiskStore::open(dir.path(), one * 3, 0).unwrap();
    for n in 1..=3 {
        assert_eq!(store.write(&k(n), &entry(&[7; 100])).unwrap(), 0);
    }
    assert!(matches!(store.read(&k(1)), Lookup::Found(_))); // 2 is now least recent
    assert_eq!(store.write(&k(4), &entry(&[7; 100])).unwrap(), 1);
    assert!(matches!(store.read(&k(2)), Lookup::Missing));
    for n in [1, 3, 4] {
        assert!(matches!(store.read(&k(n)), Lookup::Found(_)), "{n}");
    }
    assert!(store.total_bytes() <= one * 3);
    assert_eq!(on_disk(dir.path()), store.total_bytes());
    // Too big for the whole cap: not written, and the older entry under that key goes.
    assert_eq!(store.write(&k(4), &entry(&[7; 1000])).unwrap(), 0);
    assert!(matches!(store.read(&k(4)), Lookup::Missing));
}

#[test]
fn two_stores_on_one_folder_share_the_cap_and_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let one = entry::encode(&k(1), &entry(&[7; 100])).len() as u64;
    let a = DiskStore::open(dir.path(), one * 4, 0).unwrap();
    let b = DiskStore::open(dir.path(), one * 4, 0).unwrap();
    for n in 0..20 {
        let store = if n % 2 == 0 { &a } else { &b };
        store.write(&k(n), &entry(&[7; 100])).unwrap();
        assert!(on_disk(dir.path()) <= one * 4, "after {n}");
    }
    // Each knows the folder, not only its own writes.
    assert_eq!(b.len(), 4);
    assert_eq!(b.total_bytes(), on_disk(dir.path()));
    // A removal by one reaches the other's index (and memory tier) at its next write.
    b.remove(&k(19), RemoveIf::Always).unwrap();
    a.write(&k(100), &entry(&[7; 100])).unwrap();
    assert_eq!(a.total_bytes(), on_disk(dir.path()));
}

#[test]
fn a_torn_journal_record_is_cut_off_and_a_lost_journal_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path(), 1 << 20, 0).unwrap();
    store.write(&k(1), &entry(b"one")).unwrap();
    let journal = dir.path().join("journal");
    let good = fs::metadata(&journal).unwrap().len();
    // A crash in the middle of another process's append.
    let mut file = fs::OpenOptions::new().append(true).open(&journal).unwrap();
    file.write_all(&[1, 2, 3, 4, 5]).unwrap();
    drop(file);
    store.write(&k(2), &entry(b"two")).unwrap();
    assert_eq!(store.len(), 2);
    let other = DiskStore::open(dir.path(), 1 << 20, 0).unwrap();
    assert_eq!(other.len(), 2);
    assert!(fs::metadata(&journal).unwrap().len() > good);
    // Gone altogether: rebuilt from the files at the next change.
    fs::remove_file(&journal).unwrap();
    store.write(&k(3), &entry(b"three")).unwrap();
    assert_eq!(store.len(), 3);
    assert_eq!(store.total_bytes(), on_disk(dir.path()));
}

#[test]
fn the_journal_is_compacted_and_others_follow_the_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let a = DiskStore::open(dir.path(), 1 << 20, 0).unwrap();
    let b = DiskStore::open(dir.path(), 1 << 20, 0).unwrap();
    a.write(&k(1), &entry(b"again and again")).unwrap();
    let size = a.total_bytes();
    // Past 1028 records for one entry, the journal is rewritten. (Records alone: a thousand
    // fsynced writes would take seconds.)
    for _ in 0..1100 {
        a.mutate(|txn| txn.append(&[Record::Put(k(1), size)]))
            .unwrap();
    }
    let journal = dir.path().join("journal");
    assert!(fs::metadata(&journal).unwrap().len() < 16 + 100 * 45);
    b.write(&k(2), &entry(b"two")).unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b.total_bytes(), on_disk(dir.path()));
}

#[test]
fn leftover_temporary_and_lock_files_are_swept_or_ignored() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("aa")).unwrap();
    fs::write(dir.path().join("aa").join(".tmp-junk"), b"partial").unwrap();
    let orphan = dir
        .path()
        .join("aa")
        .join(format!("{}.lock", k(0xaa).hex()));
    fs::write(&orphan, b"").unwrap();
    let store = DiskStore::open(dir.path(), 1 << 20, 0).unwrap();
    assert_eq!(store.len(), 0);
    assert!(!orphan.exists(), "a lock nobody holds is swept");
    assert!(
        dir.path().join("aa").join(".tmp-junk").exists(),
        "young: kept"
    );
}

#[test]
fn a_lowered_cap_evicts_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path(), 1 << 20, 0).unwrap();
    for n in 0..10 {
        store.write(&k(n), &entry(&[1; 500])).unwrap();
    }
    drop(store);
    let small = DiskStore::open(dir.path(), 2000, 0).unwrap();
    assert!(small.total_bytes() <= 2000);
    assert_eq!(on_disk(dir.path()), small.total_bytes());
}
