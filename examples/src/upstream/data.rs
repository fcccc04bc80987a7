//! The simulated data set: which users exist, how many pages of followers each has, and what
//! those pages hold. Everything is derived from the user id alone, so it is the same on every run.

/// The 20 user ids of the API document's example client, in its order.
///
/// The list is kept exactly as written there: `25044994947` appears twice (a client that does not
/// deduplicate pays for its pages twice, see [`Stats::duplicate_page_fetches`]) and `12345` does
/// not exist (the simulator answers 404 for it by default).
///
/// [`Stats::duplicate_page_fetches`]: super::Stats::duplicate_page_fetches
pub const SEED_USER_IDS: [&str; 20] = [
    "1553030189",
    "12345",
    "4238157586",
    "57606704380",
    "44207170437",
    "58568300401",
    "47857986514",
    "419762293",
    "11461087642",
    "5310983422",
    "25044994947",
    "25044994947",
    "6882128701",
    "37452706560",
    "420842043",
    "1220781192",
    "6388630183",
    "1320664128",
    "6438020799",
    "52027596085",
];

/// The example user id that does not exist unless configured otherwise.
pub const MISSING_SEED_USER_ID: &str = "12345";

/// The largest number of pages of followers any user has.
pub const MAX_PAGES: u32 = 5;

/// FNV-1a, 64 bits: small, and stable across Rust versions (unlike `DefaultHasher`).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separate the parts so that ("ab", "c") and ("a", "bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// How many pages of followers `user_id` has: from 1 to [`MAX_PAGES`], derived from a hash of the
/// id, so a test can know the answer before it asks.
///
/// The answer does not depend on whether the simulator lets the user exist.
///
/// ```
/// use tollway_examples::upstream::{pages_for, MAX_PAGES};
///
/// let pages = pages_for("1553030189");
/// assert!((1..=MAX_PAGES).contains(&pages));
/// assert_eq!(pages, pages_for("1553030189"));
/// ```
pub fn pages_for(user_id: &str) -> u32 {
    // MAX_PAGES is small, so the remainder fits in a u32.
    1 + (fnv1a(&[b"pages", user_id.as_bytes()]) % u64::from(MAX_PAGES)) as u32
}

/// How many followers `user_id` has when pages hold `page_size` users: every page is full except
/// the last, which holds from 1 to `page_size`.
///
/// # Panics
///
/// Panics if `page_size` is 0.
pub fn follower_count(user_id: &str, page_size: usize) -> usize {
    let pages = pages_for(user_id) as usize;
    (pages - 1) * page_size + last_page_len(user_id, page_size)
}

/// The number of users on the last page.
fn last_page_len(user_id: &str, page_size: usize) -> usize {
    assert!(page_size > 0, "page_size must be at least 1");
    // The remainder is below page_size, so it fits in a usize.
    1 + (fnv1a(&[b"last", user_id.as_bytes()]) % page_size as u64) as usize
}

/// The `page_id` that fetches page `page` (2 or more) of `user_id`'s followers: an opaque token,
/// so a client cannot make one up; it has to follow `next_page_id`.
pub(crate) fn page_token(user_id: &str, page: u32) -> String {
    format!(
        "{:016x}",
        fnv1a(&[b"page", user_id.as_bytes(), &page.to_le_bytes()])
    )
}

/// Which page a `page_id` names: `Some(1)` for an empty one, `None` for one that is not a
/// `next_page_id` this user's pages hand out. Page 1 has a token too, which only the
/// [cyclic](super::Hostile::CyclicPages) simulator hands out.
pub(crate) fn page_number(user_id: &str, page_id: &str) -> Option<u32> {
    if page_id.is_empty() {
        return Some(1);
    }
    (1..=pages_for(user_id)).find(|&page| page_token(user_id, page) == page_id)
}

/// One follower, as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Follower {
    pub(crate) pk: String,
    pub(crate) username: String,
}

/// Page `page` (1-based, at most [`pages_for`]) of `user_id`'s followers, and the `next_page_id`
/// that follows it (`None` on the last page).
pub(crate) fn page(user_id: &str, page: u32, page_size: usize) -> (Vec<Follower>, Option<String>) {
    let pages = pages_for(user_id);
    let len = if page == pages {
        last_page_len(user_id, page_size)
    } else {
        page_size
    };
    let users = (0..len)
        .map(|i| Follower {
            // The user id followed by a fixed-width page and index: unique across the data set.
            pk: format!("{user_id}{page:02}{i:04}"),
            username: format!("follower_{user_id}_{page}_{i}"),
        })
        .collect();
    let next = (page < pages).then(|| page_token(user_id, page + 1));
    (users, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_users_have_varied_page_counts() {
        let counts: Vec<u32> = SEED_USER_IDS.iter().map(|id| pages_for(id)).collect();
        assert!(counts.iter().all(|&n| (1..=MAX_PAGES).contains(&n)));
        assert!(counts.contains(&1), "{counts:?}");
        assert!(counts.contains(&MAX_PAGES), "{counts:?}");
    }

    #[test]
    fn the_seed_crawl_has_a_known_size() {
        // Pinned so that a change to the data set is a deliberate one (the README quotes these).
        let existing = || {
            SEED_USER_IDS
                .iter()
                .filter(|&&id| id != MISSING_SEED_USER_ID)
        };
        let as_written: u32 = existing().map(|id| pages_for(id)).sum();
        let unique: std::collections::BTreeSet<_> = existing().collect();
        let deduplicated: u32 = unique.iter().map(|id| pages_for(id)).sum();
        assert_eq!((as_written, deduplicated), (57, 55));
    }

    #[test]
    fn pages_chain_and_end() {
        for id in SEED_USER_IDS {
            let mut page_id = String::new();
            let mut seen = 0;
            let mut pages = 0;
            loop {
                let number = page_number(id, &page_id).expect("a handed-out page id is valid");
                let (users, next) = page(id, number, 25);
                seen += users.len();
                pages += 1;
                match next {
                    Some(next) => page_id = next,
                    None => break,
                }
            }
            assert_eq!(pages, pages_for(id));
            assert_eq!(seen, follower_count(id, 25));
        }
    }

    #[test]
    fn made_up_page_ids_are_refused() {
        assert_eq!(page_number("1553030189", "2"), None);
        assert_eq!(
            page_number("1553030189", &page_token("4238157586", 2)),
            None
        );
    }

    #[test]
    fn pks_are_unique() {
        let mut pks = std::collections::HashSet::new();
        for id in SEED_USER_IDS
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
        {
            for number in 1..=pages_for(id) {
                for user in page(id, number, 25).0 {
                    assert!(pks.insert(user.pk));
                }
            }
        }
    }
}
