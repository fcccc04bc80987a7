//! What the in-memory credit ledger costs per request: `budget/reserve_settle` (a service behind
//! `BudgetLayer`: reserve before the call, settle on the response) against `budget/bare` (the same
//! service called directly). `budget/ledger_only` is the ledger's reserve + settle alone, with two
//! limits (day and month); `budget/file_backed` adds the journal's synced write per reservation,
//! one caller at a time; `budget/file_backed_concurrent` is the time per reservation when 64 tasks
//! reserve and settle at once (every grant durable before it is returned; concurrent ones share
//! a sync).
//!
//! Run with `cargo bench -p tollway-benches --bench budget`.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use tollway_budget::{BudgetLayer, Ledger, Priority, Window};
use tower::{Layer, Service, service_fn};

fn ok(_req: Request<()>) -> Ready<Result<Response<()>, Infallible>> {
    ready(Ok(Response::new(())))
}

fn huge_ledger() -> Ledger {
    Ledger::builder()
        .limit(u64::MAX / 2, Window::day())
        .limit(u64::MAX / 2, Window::month())
        .build()
}

fn bench_budget(c: &mut Criterion) {
    let mut group = c.benchmark_group("budget");

    let mut bare = service_fn(ok);
    group.bench_function("bare", |b| {
        b.iter(|| {
            let response = bare.call(black_box(Request::new(()))).now_or_never();
            black_box(response.expect("ready").expect("ok"))
        });
    });

    let mut budgeted = BudgetLayer::new(huge_ledger()).layer(service_fn(ok));
    group.bench_function("reserve_settle", |b| {
        b.iter(|| {
            let response = budgeted.call(black_box(Request::new(()))).now_or_never();
            black_box(response.expect("ready").expect("ok"))
        });
    });

    let ledger = huge_ledger();
    group.bench_function("ledger_only", |b| {
        b.iter(|| {
            let reservation = ledger
                .reserve(black_box(1), Priority::Normal)
                .expect("credit");
            reservation.settle(black_box(1));
        });
    });

    let dir = std::env::temp_dir().join(format!("tollway-budget-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file_backed = Ledger::builder()
        .limit(u64::MAX / 2, Window::day())
        .open(dir.join("budget.journal"))
        .expect("journal");
    group.bench_function("file_backed", |b| {
        b.iter(|| {
            let reservation = file_backed
                .reserve(black_box(1), Priority::Normal)
                .expect("credit");
            reservation.settle(black_box(1));
        });
    });
    drop(file_backed);

    const TASKS: u64 = 64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let concurrent = Ledger::builder()
        .limit(u64::MAX / 2, Window::day())
        .open(dir.join("concurrent.journal"))
        .expect("journal");
    group.bench_function("file_backed_concurrent", |b| {
        b.iter_custom(|iters| {
            let ledger = concurrent.clone();
            runtime.block_on(async move {
                let started = Instant::now();
                let tasks: Vec<_> = (0..TASKS)
                    .map(|task| {
                        let ledger = ledger.clone();
                        // Split `iters` reservations among the tasks.
                        let share = iters / TASKS + u64::from(task < iters % TASKS);
                        tokio::spawn(async move {
                            for _ in 0..share {
                                let reservation = ledger
                                    .reserve_async(black_box(1), Priority::Normal)
                                    .await
                                    .expect("credit");
                                reservation.settle(black_box(1));
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("task");
                }
                started.elapsed().max(Duration::from_nanos(1))
            })
        });
    });
    group.finish();
    drop(concurrent);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench_budget);
criterion_main!(benches);
