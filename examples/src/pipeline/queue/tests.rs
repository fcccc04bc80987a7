use std::fs;
use std::path::PathBuf;

use super::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tollway-queue-test-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn page(user: &str, page_id: &str, next: Option<&str>, followers: usize) -> Record {
    Record::Page(PageRecord {
        user_id: user.to_owned(),
        page_id: page_id.to_owned(),
        next_page_id: next.map(str::to_owned),
        followers: (0..followers)
            .map(|i| serde_json::json!({ "pk": i }))
            .collect(),
    })
}

fn at(replay: &Replay, user: &str) -> (UserState, u64, u64) {
    let user = replay.user(user);
    (user.state, user.pages, user.followers)
}

#[test]
fn replay_follows_each_users_chain() {
    let dir = temp_dir("chain");
    let (mut journal, replay) = Journal::open(&dir).unwrap();
    assert_eq!(at(&replay, "a"), (UserState::Next(String::new()), 0, 0));
    journal
        .append(&[
            page("a", "", Some("p2"), 3),
            page("b", "", None, 2),
            page("a", "p2", Some("p3"), 4),
        ])
        .unwrap();
    journal
        .append(&[Record::UserFailed(UserFailure {
            user_id: "c".to_owned(),
            reason: "not found".to_owned(),
        })])
        .unwrap();
    drop(journal);

    let (_, replay) = Journal::open(&dir).unwrap();
    assert_eq!(at(&replay, "a"), (UserState::Next("p3".to_owned()), 2, 7));
    assert_eq!(replay.user("a").chain, ["", "p2"]);
    assert_eq!(at(&replay, "b"), (UserState::Done, 1, 2));
    assert_eq!(
        at(&replay, "c"),
        (UserState::Failed("not found".to_owned()), 0, 0)
    );
    assert_eq!(replay.page_count(), 3);
    let followers = load_followers(&dir).unwrap();
    assert_eq!(followers["a"].len(), 7);
    assert_eq!(followers["b"].len(), 2);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_chain_that_loops_is_reported_once_and_the_latest_answer_wins() {
    let dir = temp_dir("loop");
    let (mut journal, _) = Journal::open(&dir).unwrap();
    journal
        .append(&[
            page("a", "", Some("p2"), 1),
            page("a", "p2", Some("p3"), 1),
            page("a", "p3", Some("p2"), 1),
            // A page that points to itself.
            page("b", "", Some("q"), 1),
            page("b", "q", Some("q"), 1),
        ])
        .unwrap();
    drop(journal);
    let (mut journal, replay) = Journal::open(&dir).unwrap();
    let a = replay.user("a");
    assert_eq!(
        (a.state, a.pages, a.chain.len()),
        (UserState::Loops("p3".to_owned()), 3, 3)
    );
    assert_eq!(replay.user("b").state, UserState::Loops("q".to_owned()));
    assert_eq!(load_followers(&dir).unwrap()["a"].len(), 3);

    // The upstream mended the page: asked again, its new answer replaces the looping one.
    journal.append(&[page("a", "p3", None, 1)]).unwrap();
    drop(journal);
    let (_, replay) = Journal::open(&dir).unwrap();
    assert_eq!(at(&replay, "a"), (UserState::Done, 3, 3));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_last_line_is_dropped_and_truncated() {
    let dir = temp_dir("torn");
    let (mut journal, _) = Journal::open(&dir).unwrap();
    journal.append(&[page("a", "", Some("p2"), 1)]).unwrap();
    drop(journal);
    let path = dir.join(JOURNAL_FILE);
    let whole = fs::read(&path).unwrap();
    // Half of a second record, as a kill mid-append leaves it.
    let mut torn = whole.clone();
    torn.extend_from_slice(&whole[..whole.len() / 2]);
    fs::write(&path, &torn).unwrap();

    let (mut journal, replay) = Journal::open(&dir).unwrap();
    assert!(replay.dropped_torn_line);
    assert_eq!(replay.user("a").state, UserState::Next("p2".to_owned()));
    assert_eq!(fs::read(&path).unwrap(), whole, "the torn tail is cut off");
    journal.append(&[page("a", "p2", None, 1)]).unwrap();
    drop(journal);
    let (_, replay) = Journal::open(&dir).unwrap();
    assert!(!replay.dropped_torn_line);
    assert_eq!(at(&replay, "a"), (UserState::Done, 2, 2));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_complete_line_without_newline_counts_as_torn() {
    let dir = temp_dir("nonewline");
    fs::create_dir_all(&dir).unwrap();
    let line = serde_json::to_string(&page("a", "", None, 1)).unwrap();
    fs::write(dir.join(JOURNAL_FILE), line).unwrap();
    let (_, replay) = Journal::open(&dir).unwrap();
    assert!(replay.dropped_torn_line);
    assert_eq!(replay.user("a").state, UserState::Next(String::new()));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damage_before_the_last_line_is_an_error_and_nothing_is_lost() {
    let dir = temp_dir("corrupt");
    fs::create_dir_all(&dir).unwrap();
    let good = serde_json::to_string(&page("a", "", None, 1)).unwrap();
    let content = format!("{good}\nnot json\n{good}\n");
    fs::write(dir.join(JOURNAL_FILE), &content).unwrap();
    let error = Journal::open(&dir).unwrap_err();
    assert!(
        matches!(error, JournalError::Corrupt { line: 2, .. }),
        "{error}"
    );
    assert_eq!(fs::read_to_string(dir.join(JOURNAL_FILE)).unwrap(), content);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_append_is_cut_back_and_later_appends_stay_readable() {
    let dir = temp_dir("short-write");
    let (mut journal, _) = Journal::open(&dir).unwrap();
    journal.append(&[page("a", "", Some("p2"), 2)]).unwrap();
    let good = journal.len();
    // The disk fills up 17 bytes into the next append.
    journal.fail_after = Some(17);
    let error = journal
        .append(&[page("a", "p2", Some("p3"), 2)])
        .unwrap_err();
    assert!(matches!(error, JournalError::Io { .. }), "{error}");
    assert_eq!(journal.len(), good);
    assert_eq!(journal.file_len(), good, "the partial line is cut off");
    // The disk has room again: the retry lands on a clean line.
    journal.append(&[page("a", "p2", None, 2)]).unwrap();
    drop(journal);
    let (_, replay) = Journal::open(&dir).unwrap();
    assert!(!replay.dropped_torn_line);
    assert_eq!(at(&replay, "a"), (UserState::Done, 2, 4));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_record_over_the_line_limit_is_refused_whole() {
    let dir = temp_dir("too-large");
    let (journal, _) = Journal::open(&dir).unwrap();
    let mut journal = journal.with_max_line(200);
    journal.append(&[page("a", "", Some("p2"), 1)]).unwrap();
    let before = journal.len();
    let error = journal
        .append(&[page("b", "", None, 1), page("a", "p2", None, 50)])
        .unwrap_err();
    assert!(
        matches!(error, JournalError::TooLarge { max: 200, .. }),
        "{error}"
    );
    assert_eq!(
        journal.file_len(),
        before,
        "nothing of the batch is written"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_run_per_folder_and_the_files_are_private() {
    let dir = temp_dir("lock");
    let (journal, _) = Journal::open(&dir).unwrap();
    let error = Journal::open(&dir).unwrap_err();
    assert!(matches!(error, JournalError::Locked { .. }), "{error}");
    assert!(error.to_string().contains("another pipeline"), "{error}");
    drop(journal);
    let (_journal, _) = Journal::open(&dir).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(JOURNAL_FILE)), 0o600);
        assert_eq!(mode(&dir.join(LOCK_FILE)), 0o600);
    }
    fs::remove_dir_all(&dir).unwrap();
}
