//! [`States`]: the policies a request touched and their state, kept inline (no allocation for
//! the usual handful of policies).

use crate::gcra::SlotView;

/// Policies kept without allocating.
const INLINE: usize = 4;

/// `(policy index, state)` pairs, in policy order.
#[derive(Debug, Clone)]
pub(crate) enum States {
    Inline([(usize, SlotView); INLINE], usize),
    Heap(Vec<(usize, SlotView)>),
}

impl Default for States {
    fn default() -> Self {
        Self::Inline([(0, SlotView::default()); INLINE], 0)
    }
}

impl States {
    pub(crate) fn push(&mut self, item: (usize, SlotView)) {
        match self {
            Self::Inline(items, len) if *len < INLINE => {
                items[*len] = item;
                *len += 1;
            }
            Self::Inline(items, len) => {
                let mut spilled = items[..*len].to_vec();
                spilled.push(item);
                *self = Self::Heap(spilled);
            }
            Self::Heap(items) => items.push(item),
        }
    }

    pub(crate) fn clear(&mut self) {
        match self {
            Self::Inline(_, len) => *len = 0,
            Self::Heap(items) => items.clear(),
        }
    }

    pub(crate) fn as_slice(&self) -> &[(usize, SlotView)] {
        match self {
            Self::Inline(items, len) => &items[..*len],
            Self::Heap(items) => items,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_past_the_inline_room_in_order() {
        let mut states = States::default();
        for i in 0..6 {
            states.push((i, SlotView::default()));
        }
        let order: Vec<usize> = states.as_slice().iter().map(|s| s.0).collect();
        assert_eq!(order, [0, 1, 2, 3, 4, 5]);
        states.clear();
        assert!(states.is_empty());
    }
}
