use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::task::{Context, Poll};

use futures_util::task::noop_waker_ref;
use tollway_breaker::{BreakerConfig, BreakerLayer};
use tower::{Layer, Service, service_fn};

fn ready_call<S>(service: &mut S) -> bool
where
    S: Service<http::Request<()>, Response = http::Response<()>>,
{
    let mut cx = Context::from_waker(noop_waker_ref());
    match service.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("ready"),
    }
    let response = std::pin::pin!(service.call(http::Request::new(())));
    match response.poll(&mut cx) {
        Poll::Ready(result) => black_box(result).is_ok(),
        Poll::Pending => panic!("at once"),
    }
}

fn measure(name: &str, mut f: impl FnMut()) -> f64 {
    const BATCH: usize = 20_000;
    let mut best = f64::MAX;
    for _ in 0..200 {
        let start = std::time::Instant::now();
        for _ in 0..BATCH {
            f();
        }
        best = best.min(start.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{name}: {best:.2} ns");
    }
    best
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _e = runtime.enter();
    let noop = service_fn(|_: http::Request<()>| async { Ok::<_, Infallible>(http::Response::new(())) });
    let mut bare = noop;
    let mut closed = BreakerLayer::new(BreakerConfig::default()).layer(noop);
    for _ in 0..3 {
        let b = measure("bare", || assert!(ready_call(&mut bare)));
        let c = measure("closed", || assert!(ready_call(&mut closed)));
        let arc = std::sync::Arc::new(5u64);
        let a = measure("arc_clone_drop", || drop(black_box(std::sync::Arc::clone(&arc))));
        let n = measure("nothing", || {black_box(0);});
        #[allow(clippy::print_stdout)]
        { println!("=> arc clone+drop {:.1}", a - n); }
        #[allow(clippy::print_stdout)]
        {
            println!("=> closed +{:.1} ns over bare", c - b);
        }
    }
}
