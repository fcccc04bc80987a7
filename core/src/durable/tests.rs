use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollway-durable-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

#[cfg(unix)]
#[test]
fn files_and_folders_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let root = scratch("modes");
    let dir = root.join("a/b");
    create_dir_all(&dir).unwrap();
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    write_atomic(dir.join("f"), b"x").unwrap();
    assert_eq!(
        fs::metadata(dir.join("f")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    drop(open_append(dir.join("j")).unwrap());
    assert_eq!(
        fs::metadata(dir.join("j")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let _lock = LockFile::try_lock(dir.join("l")).unwrap().unwrap();
    assert_eq!(
        fs::metadata(dir.join("l")).unwrap().permissions().mode() & 0o777,
        0o600
    );
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn atomic_write_replaces_and_a_failed_fill_leaves_the_old_bytes_and_no_temp() {
    let dir = scratch("atomic");
    create_dir_all(&dir).unwrap();
    let path = dir.join("state");
    write_atomic(&path, b"one").unwrap();
    write_atomic(&path, b"two").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"two");
    let err = write_atomic_with(&path, |f| {
        f.write_all(b"partial")?;
        Err(io::Error::other("disk full"))
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "disk full");
    assert_eq!(fs::read(&path).unwrap(), b"two");
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["state"], "no temporary file left behind");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stale_temps_of_one_target_are_swept_and_nothing_else() {
    let dir = scratch("sweep");
    create_dir_all(&dir).unwrap();
    let path = dir.join("journal");
    write_atomic(&path, b"kept").unwrap();
    for name in [
        ".journal.77.0.tmp",
        ".journal.78.3.tmp",
        ".other.1.0.tmp",
        "journal.tmp",
    ] {
        fs::write(dir.join(name), b"x").unwrap();
    }
    assert_eq!(remove_stale_temps(&path).unwrap(), 2);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [".other.1.0.tmp", "journal", "journal.tmp"]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sweeping_one_target_spares_a_write_in_progress_to_a_longer_name() {
    // `journal` and `journal.old` guarded by two locks: sweeping the first's leftovers
    // must not pull the temporary file from under the second's write.
    let dir = scratch("sweep-prefix");
    create_dir_all(&dir).unwrap();
    let mut staged = Staged::create(dir.join("journal.old")).unwrap();
    staged.file_mut().write_all(b"other").unwrap();
    assert_eq!(remove_stale_temps(dir.join("journal")).unwrap(), 0);
    staged.install().unwrap();
    assert_eq!(fs::read(dir.join("journal.old")).unwrap(), b"other");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_staged_write_is_all_or_nothing() {
    let dir = scratch("staged");
    create_dir_all(&dir).unwrap();
    let path = dir.join("journal");
    write_atomic(&path, b"old").unwrap();
    let mut staged = Staged::create(&path).unwrap();
    staged.file_mut().write_all(b"half").unwrap();
    drop(staged);
    assert_eq!(
        fs::read(&path).unwrap(),
        b"old",
        "dropped: the target is untouched"
    );
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["journal"], "and its temporary file is gone");
    let mut staged = Staged::create(&path).unwrap();
    staged.file_mut().write_all(b"new").unwrap();
    staged.sync().unwrap();
    staged.file_mut().write_all(b"+tail").unwrap();
    assert_eq!(staged.target(), path);
    staged.install().unwrap();
    sync_dir(parent_dir(&path)).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new+tail");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_lock_excludes_a_second_holder_until_dropped() {
    let dir = scratch("lock");
    create_dir_all(&dir).unwrap();
    let path = dir.join("x.lock");
    let first = LockFile::try_lock(&path).unwrap().expect("free");
    assert!(LockFile::try_lock(&path).unwrap().is_none());
    let err = LockFile::lock_or_fail(&path).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    let locked = err.get_ref().unwrap().downcast_ref::<Locked>().unwrap();
    assert_eq!(locked.path(), path);
    // A waiter gets it as soon as the holder lets go.
    let waiter = {
        let path = path.clone();
        std::thread::spawn(move || LockFile::lock(path).map(|l| l.path().to_owned()))
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(
        !waiter.is_finished(),
        "the waiter waits while the lock is held"
    );
    drop(first);
    assert_eq!(waiter.join().unwrap().unwrap(), path);
    assert!(path.exists(), "the lock file stays");
    // A bounded wait: refused after its patience while held, granted once let go.
    let held = LockFile::try_lock(&path).unwrap().unwrap();
    let started = std::time::Instant::now();
    let err = LockFile::lock_within(&path, std::time::Duration::from_millis(60)).unwrap_err();
    assert!(started.elapsed() >= std::time::Duration::from_millis(60));
    assert!(err.get_ref().unwrap().is::<Locked>());
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(30));
        drop(held);
    });
    assert!(LockFile::lock_within(&path, std::time::Duration::from_secs(5)).is_ok());
    releaser.join().unwrap();
    fs::remove_dir_all(&dir).unwrap();
}

/// The guarantee a pid file cannot give: a holder killed with `SIGKILL` releases the lock.
#[cfg(target_os = "linux")]
#[test]
fn a_killed_holder_releases_the_lock() {
    if std::process::Command::new("flock")
        .arg("-V")
        .output()
        .is_err()
    {
        return; // util-linux's flock(1) is not installed: nothing to hold the lock with.
    }
    let dir = scratch("kill");
    create_dir_all(&dir).unwrap();
    let path = dir.join("held.lock");
    let mut child = std::process::Command::new("flock")
        // `-o`: the lock stays with flock(1) itself, not with the `sleep` it runs.
        .arg("-o")
        .arg(&path)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while LockFile::try_lock(&path).unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the child never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if LockFile::try_lock(&path).unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lock outlived its holder"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    fs::remove_dir_all(&dir).unwrap();
}
