//! What admission grants a call, and what its result means to the breaker.

use std::time::Duration;

/// A [`Ticket`] in one word (the kind in the low two bits), as response futures carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackedTicket(u64);

impl PackedTicket {
    pub(crate) const UNTRACKED: Self = Self(2);

    #[inline]
    pub(crate) const fn pack(ticket: Ticket) -> Self {
        match ticket {
            Ticket::Closed { generation } => Self(generation << 2),
            Ticket::Probe { generation } => Self((generation << 2) | 1),
            Ticket::Untracked => Self::UNTRACKED,
        }
    }

    #[inline]
    pub(crate) const fn unpack(self) -> Ticket {
        let generation = self.0 >> 2;
        match self.0 & 0b11 {
            0 => Ticket::Closed { generation },
            1 => Ticket::Probe { generation },
            _ => Ticket::Untracked,
        }
    }
}

/// What admission granted; results are only counted for the generation they were admitted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ticket {
    /// A call in the closed state (or in metrics-only mode).
    Closed { generation: u64 },
    /// A half-open probe holding one of the permits.
    Probe { generation: u64 },
    /// The breaker is disabled: nothing is counted.
    Untracked,
}

/// What a finished call means to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Success,
    Failure {
        hint: Option<Duration>,
    },
    /// Not a call the upstream answered (a local rejection below the breaker), or cancelled.
    Ignored,
}
