use proptest::prelude::*;

use super::*;

/// The rules written as plainly as possible: a list of waiters in arrival order.
#[derive(Debug, Default)]
struct Model {
    slots: usize,
    max_queue: usize,
    busy: usize,
    waiting: Vec<(u8, u64)>,
    next: u64,
}

impl Model {
    fn arrive(&mut self, priority: u8) -> (Option<u64>, Option<u64>, bool) {
        // (queued ticket, evicted ticket, admitted at once)
        if self.busy < self.slots && self.waiting.is_empty() {
            self.busy += 1;
            return (None, None, true);
        }
        let ticket = self.next;
        self.next += 1;
        if self.waiting.len() < self.max_queue {
            self.waiting.push((priority, ticket));
            return (Some(ticket), None, false);
        }
        let lowest = self.waiting.iter().map(|w| w.0).min().unwrap_or(u8::MAX);
        if self.waiting.is_empty() || lowest >= priority {
            return (None, None, false);
        }
        // The newest of the lowest priority.
        let index = self.waiting.iter().rposition(|w| w.0 == lowest).unwrap();
        let evicted = self.waiting.remove(index).1;
        self.waiting.push((priority, ticket));
        (Some(ticket), Some(evicted), false)
    }

    fn release(&mut self) -> Option<u64> {
        self.busy = self.busy.saturating_sub(1);
        let top = self.waiting.iter().map(|w| w.0).max()?;
        let index = self.waiting.iter().position(|w| w.0 == top).unwrap();
        self.busy += 1;
        Some(self.waiting.remove(index).1)
    }

    fn cancel(&mut self, ticket: u64) -> bool {
        let before = self.waiting.len();
        self.waiting.retain(|w| w.1 != ticket);
        before != self.waiting.len()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Arrive(u8),
    Release,
    Cancel(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..7).prop_map(Op::Arrive),
        2 => Just(Op::Release),
        1 => (0usize..64).prop_map(Op::Cancel),
    ]
}

proptest! {
    #[test]
    fn matches_the_reference_model(
        slots in 1usize..4,
        max_queue in 0usize..9,
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        let mut real = AdmissionQueue::<u8>::new(slots, max_queue);
        let mut model = Model { slots, max_queue, ..Model::default() };
        let mut priorities = std::collections::HashMap::new();
        let mut tickets = Vec::new();
        for op in ops {
            match op {
                Op::Arrive(p) => {
                    let expected = model.arrive(p);
                    let got = match real.arrive(p, p) {
                        Arrival::Admitted => (None, None, true),
                        Arrival::Queued(t, evicted) => (Some(t), evicted.map(|e| e.0), false),
                        Arrival::Rejected(_) => (None, None, false),
                    };
                    prop_assert_eq!(got, expected);
                    if let Some(t) = got.0 {
                        priorities.insert(t, p);
                        tickets.push(t);
                    }
                }
                Op::Release => {
                    prop_assert_eq!(real.release().map(|r| r.0), model.release());
                }
                Op::Cancel(i) => {
                    if let Some(&t) = tickets.get(i % tickets.len().max(1)) {
                        prop_assert_eq!(real.cancel(priorities[&t], t), model.cancel(t));
                    }
                }
            }
            prop_assert_eq!(real.busy(), model.busy);
            prop_assert_eq!(real.waiting(), model.waiting.len());
            prop_assert!(real.waiting() <= max_queue);
            prop_assert!(real.busy() <= slots);
        }
    }
}

#[test]
fn eviction_table() {
    // Queue of 8, every slot busy: 6 5 2 2 2 2 0 0 → a 2 evicts a 0, a 0 is refused.
    let mut q = AdmissionQueue::new(1, 8);
    assert_eq!(q.arrive(9, ()), Arrival::Admitted);
    for p in [6, 5, 2, 2, 2, 2, 0, 0] {
        assert!(matches!(q.arrive(p, ()), Arrival::Queued(_, None)));
    }
    assert!(matches!(q.arrive(0, ()), Arrival::Rejected(())));
    assert!(matches!(q.arrive(2, ()), Arrival::Queued(_, Some((7, ())))));
    assert!(matches!(q.arrive(2, ()), Arrival::Queued(_, Some((6, ())))));
    // Now 6 5 2 2 2 2 2 2: only 5 and 6 get in.
    assert!(matches!(q.arrive(2, ()), Arrival::Rejected(())));
    assert!(matches!(
        q.arrive(5, ()),
        Arrival::Queued(12, Some((10, ())))
    ));
    // Served highest first, FIFO within a priority.
    assert_eq!(q.release().map(|r| r.0), Some(0));
    assert_eq!(q.release().map(|r| r.0), Some(1));
    assert_eq!(q.release().map(|r| r.0), Some(12));
    assert_eq!(q.release().map(|r| r.0), Some(2));
}

#[tokio::test]
async fn waiters_get_permits_in_order_and_evicted_ones_learn_it() {
    let admission = Admission::new(&PriorityAdmission::new(1, 1));
    let Admit::Now(first) = admission.arrive(0) else {
        panic!("a free slot admits at once");
    };
    let Admit::Wait(low) = admission.arrive(0) else {
        panic!("queued");
    };
    let Admit::Wait(high) = admission.arrive(3) else {
        panic!("evicts the low one");
    };
    assert!(low.await.is_none(), "evicted");
    assert!(matches!(admission.arrive(3), Admit::Rejected));
    drop(first);
    let permit = high.await.expect("admitted when the slot frees");
    assert_eq!(admission.load(), (1, 0));
    drop(permit);
    assert_eq!(admission.load(), (0, 0));
}

#[tokio::test]
async fn a_cancelled_waiter_leaves_no_hole() {
    let admission = Admission::new(&PriorityAdmission::new(1, 4));
    let Admit::Now(first) = admission.arrive(0) else {
        panic!()
    };
    let Admit::Wait(a) = admission.arrive(1) else {
        panic!()
    };
    let Admit::Wait(b) = admission.arrive(1) else {
        panic!()
    };
    drop(a);
    assert_eq!(admission.load(), (1, 1));
    drop(first);
    let permit = b.await.expect("b is next");
    // Admitted, then dropped before being polled: the slot is passed on.
    let Admit::Wait(c) = admission.arrive(0) else {
        panic!()
    };
    drop(permit);
    drop(c);
    assert_eq!(admission.load(), (0, 0));
}
