//! The journal's records: encoding, replay and compaction.
//!
//! Every record is 29 bytes: a CRC-32 of the payload, then a kind byte and three little-endian
//! 64-bit fields. Fixed-size framing means a torn or corrupt record is skipped without losing the
//! records after it, and a torn tail (a partial record) is simply ignored.
//!
//! Replay rules (what makes `kill -9` at any instant safe):
//! - a `Reserve` that was never settled nor refunded counts as spent at its full cost;
//! - a `Settle` replaces its `Reserve`, so nothing is counted twice;
//! - a `Refund` removes its `Reserve`.

use std::collections::HashMap;

use crate::window::WindowState;

pub(crate) const RECORD_LEN: usize = 29;

const RESERVE: u8 = 1;
const SETTLE: u8 = 2;
const REFUND: u8 = 3;
const CHARGE: u8 = 4;
const SYNC: u8 = 5;
const LATCH: u8 = 6;
const RESET: u8 = 7;

/// "No time" in a latch record: the latch lifts only by a sync or a reset.
const NEVER: i64 = i64::MIN;

/// One journal entry. Times are wall-clock milliseconds since the unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    Reserve { id: u64, cost: u64, at: i64 },
    Settle { id: u64, charge: u64, at: i64 },
    Refund { id: u64 },
    Charge { amount: u64, at: i64 },
    Sync { balance: u64, at: i64 },
    Latch { until: Option<i64>, at: i64 },
    Reset { at: i64 },
}

impl Record {
    pub(crate) fn encode(self) -> [u8; RECORD_LEN] {
        let (kind, a, b, c) = match self {
            Self::Reserve { id, cost, at } => (RESERVE, id, cost, at),
            Self::Settle { id, charge, at } => (SETTLE, id, charge, at),
            Self::Refund { id } => (REFUND, id, 0, 0),
            Self::Charge { amount, at } => (CHARGE, amount, 0, at),
            Self::Sync { balance, at } => (SYNC, balance, 0, at),
            Self::Latch { until, at } => (LATCH, until.unwrap_or(NEVER) as u64, 0, at),
            Self::Reset { at } => (RESET, 0, 0, at),
        };
        let mut out = [0u8; RECORD_LEN];
        out[4] = kind;
        out[5..13].copy_from_slice(&a.to_le_bytes());
        out[13..21].copy_from_slice(&b.to_le_bytes());
        out[21..29].copy_from_slice(&c.to_le_bytes());
        let crc = crc32(&out[4..]);
        out[..4].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// When the record was made, if it says.
    pub(crate) fn at(&self) -> Option<i64> {
        match *self {
            Self::Reserve { at, .. }
            | Self::Settle { at, .. }
            | Self::Charge { at, .. }
            | Self::Sync { at, .. }
            | Self::Latch { at, .. }
            | Self::Reset { at } => Some(at),
            Self::Refund { .. } => None,
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; RECORD_LEN] = bytes.try_into().ok()?;
        let crc = u32::from_le_bytes(bytes[..4].try_into().ok()?);
        if crc != crc32(&bytes[4..]) {
            return None;
        }
        let field = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
        let (a, b, at) = (field(5), field(13), field(21) as i64);
        Some(match bytes[4] {
            RESERVE => Self::Reserve { id: a, cost: b, at },
            SETTLE => Self::Settle {
                id: a,
                charge: b,
                at,
            },
            REFUND => Self::Refund { id: a },
            CHARGE => Self::Charge { amount: a, at },
            SYNC => Self::Sync { balance: a, at },
            LATCH => Self::Latch {
                until: (a as i64 != NEVER).then_some(a as i64),
                at,
            },
            RESET => Self::Reset { at },
            _ => return None,
        })
    }
}

/// Every intact record of a journal's bytes, and how many 29-byte slots were torn or corrupt.
pub(crate) fn decode_all(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::with_capacity(bytes.len() / RECORD_LEN);
    let mut skipped = 0usize;
    for chunk in bytes.chunks(RECORD_LEN) {
        match Record::decode(chunk) {
            Some(record) => records.push(record),
            None => skipped += 1,
        }
    }
    (records, skipped)
}

/// The bytes of `records`, in order.
pub(crate) fn encode_all(records: &[Record]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(records.len() * RECORD_LEN);
    for record in records {
        bytes.extend_from_slice(&record.encode());
    }
    bytes
}

/// What a journal says, reduced to the events that change a ledger, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// Spend at a time.
    Charge {
        amount: u64,
        at: i64,
    },
    /// A reservation that was neither settled nor refunded.
    Pending {
        id: u64,
        cost: u64,
        at: i64,
    },
    Sync {
        balance: u64,
    },
    Latch {
        until: Option<i64>,
    },
    Reset,
}

/// Reduces `records` to events: a settled reservation becomes one charge at its settle time, a
/// refunded one disappears; reservations still open are kept, or become charges at their
/// reservation time when `pending_as_charges` (their process died: they count as spent).
pub(crate) fn replay(records: &[Record], pending_as_charges: bool) -> (Vec<Event>, u64) {
    let mut events = Vec::with_capacity(records.len());
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut max_id = 0;
    for record in records {
        match *record {
            Record::Reserve { id, cost, at } => {
                max_id = max_id.max(id);
                open.insert(id, events.len());
                events.push(Some(Event::Pending { id, cost, at }));
            }
            Record::Settle { id, charge, at } => {
                max_id = max_id.max(id);
                if let Some(index) = open.remove(&id) {
                    events[index] = None;
                }
                // A settle whose reserve record was lost still charged: count it.
                events.push(Some(Event::Charge { amount: charge, at }));
            }
            Record::Refund { id } => {
                if let Some(index) = open.remove(&id) {
                    events[index] = None;
                }
            }
            Record::Charge { amount, at } => events.push(Some(Event::Charge { amount, at })),
            Record::Sync { balance, .. } => events.push(Some(Event::Sync { balance })),
            Record::Latch { until, .. } => events.push(Some(Event::Latch { until })),
            Record::Reset { .. } => events.push(Some(Event::Reset)),
        }
    }
    let events = events
        .into_iter()
        .flatten()
        .map(|event| match event {
            Event::Pending { cost, at, .. } if pending_as_charges => {
                Event::Charge { amount: cost, at }
            }
            other => other,
        })
        .collect();
    (events, max_id)
}

/// The shortest record list that replays to the same ledger at `now`: charges no window counts
/// any more (and that the balance no longer needs) are dropped, and charges the windows cannot
/// tell apart are merged into one stamped with the latest time (so it expires no earlier).
pub(crate) fn compact(events: &[Event], windows: &[WindowState], now: i64) -> Vec<Record> {
    let last_sync = events.iter().rposition(|e| matches!(e, Event::Sync { .. }));
    let mut out: Vec<Record> = Vec::new();
    let mut last_key: Option<Vec<i64>> = None;
    let mut latch = None;
    let mut pending = Vec::new();
    for (index, event) in events.iter().enumerate() {
        match *event {
            Event::Charge { amount, at } => {
                let after_sync = last_sync.is_some_and(|s| index > s);
                if !after_sync && !windows.iter().any(|w| w.contains(at, now)) {
                    continue;
                }
                let key: Vec<i64> = windows.iter().map(|w| w.cell(at)).collect();
                if let (
                    Some(Record::Charge {
                        amount: total,
                        at: latest,
                    }),
                    Some(prev),
                ) = (out.last_mut(), &last_key)
                    && *prev == key
                {
                    *total = total.saturating_add(amount);
                    *latest = (*latest).max(at);
                    continue;
                }
                out.push(Record::Charge { amount, at });
                last_key = Some(key);
            }
            Event::Sync { balance } => {
                if balance > 0 {
                    latch = None;
                }
                if Some(index) == last_sync {
                    out.push(Record::Sync { balance, at: now });
                    last_key = None;
                }
            }
            Event::Latch { until } => latch = Some(until),
            Event::Reset => latch = None,
            Event::Pending { id, cost, at } => pending.push(Record::Reserve { id, cost, at }),
        }
    }
    if let Some(until) = latch {
        out.push(Record::Latch { until, at: now });
    }
    out.extend(pending);
    out
}

/// CRC-32 (IEEE 802.3, the one zlib and Ethernet use).
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Window;
    use std::time::Duration;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn records_round_trip_and_corruption_is_detected() {
        let records = [
            Record::Reserve {
                id: 7,
                cost: 3,
                at: -5,
            },
            Record::Settle {
                id: 7,
                charge: 2,
                at: 1_700_000_000_000,
            },
            Record::Refund { id: u64::MAX },
            Record::Charge { amount: 9, at: 0 },
            Record::Sync { balance: 42, at: 1 },
            Record::Latch { until: None, at: 2 },
            Record::Latch {
                until: Some(99),
                at: 3,
            },
            Record::Reset { at: 4 },
        ];
        for record in records {
            let mut bytes = record.encode();
            assert_eq!(Record::decode(&bytes), Some(record));
            bytes[20] ^= 0x10;
            assert_eq!(Record::decode(&bytes), None);
        }
        assert_eq!(Record::decode(&[1, 2, 3]), None);
        let mut unknown = Record::Reset { at: 0 }.encode();
        unknown[4] = 200;
        let crc = crc32(&unknown[4..]);
        unknown[..4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Record::decode(&unknown), None);
    }

    #[test]
    fn replay_counts_each_reservation_once() {
        let records = [
            Record::Reserve {
                id: 1,
                cost: 5,
                at: 10,
            },
            Record::Reserve {
                id: 2,
                cost: 5,
                at: 11,
            },
            Record::Reserve {
                id: 3,
                cost: 5,
                at: 12,
            },
            Record::Settle {
                id: 1,
                charge: 4,
                at: 20,
            },
            Record::Refund { id: 2 },
        ];
        let (events, max_id) = replay(&records, true);
        assert_eq!(max_id, 3);
        assert_eq!(
            events,
            vec![
                Event::Charge { amount: 5, at: 12 },
                Event::Charge { amount: 4, at: 20 },
            ]
        );
        let (open, _) = replay(&records, false);
        assert_eq!(
            open[0],
            Event::Pending {
                id: 3,
                cost: 5,
                at: 12
            }
        );
    }

    #[test]
    fn compaction_merges_within_a_cell_and_drops_expired_spend() {
        let now = 10 * 86_400_000 + 1_000;
        let windows = vec![WindowState::new(100, Window::day(), now)];
        let events = [
            Event::Charge {
                amount: 1,
                at: 5 * 86_400_000,
            },
            Event::Charge {
                amount: 2,
                at: now - 500,
            },
            Event::Charge {
                amount: 3,
                at: now - 100,
            },
            Event::Pending {
                id: 4,
                cost: 1,
                at: now,
            },
        ];
        let out = compact(&events, &windows, now);
        assert_eq!(
            out,
            vec![
                Record::Charge {
                    amount: 5,
                    at: now - 100
                },
                Record::Reserve {
                    id: 4,
                    cost: 1,
                    at: now
                },
            ]
        );
        // Balance needs the spend after its last sync, even when no window counts it.
        let rolling = vec![WindowState::new(
            100,
            Window::rolling(Duration::from_secs(1)),
            now,
        )];
        let events = [
            Event::Sync { balance: 50 },
            Event::Charge { amount: 7, at: 0 },
            Event::Latch { until: None },
        ];
        assert_eq!(
            compact(&events, &rolling, now),
            vec![
                Record::Sync {
                    balance: 50,
                    at: now
                },
                Record::Charge { amount: 7, at: 0 },
                Record::Latch {
                    until: None,
                    at: now
                },
            ]
        );
    }
}
