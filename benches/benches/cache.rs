//! The cost of a cache hit over the physical floor.
//!
//! `cache/hit_{4k,64k}`: a GET answered by tollway-cache, configured by default, from a fresh
//! entry (key hashing, the memory tier, building the response, collecting its body, on a
//! tokio runtime). The request is built outside the timing: parsing a URL is the caller's
//! cost with or without a cache.
//! `cache/disk_hit_{4k,64k}`: the same with the memory tier off, so every hit opens, reads and
//! verifies (checksums) the whole entry file; files this small are read on the calling task.
//! `cache/raw_read_{4k,64k}`: `std::fs::read` of the same entry file, the physical floor.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use tollway_cache::{CacheLayer, CacheStatus};
use tower::{Layer, ServiceExt, service_fn};

const URL: &str = "https://api.example/v2/user/followers?user_id=1553030189&page_id=";

/// A cache folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "tollway-bench-cache-{label}-{}-{nanos}",
            std::process::id()
        ));
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The one entry file (64 hex digits in a shard folder) under `dir`.
fn entry_file(dir: &Path) -> PathBuf {
    for shard in std::fs::read_dir(dir).expect("cache dir") {
        let shard = shard.expect("entry").path();
        if !shard.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&shard).expect("shard") {
            let path = file.expect("entry").path();
            if path.file_name().and_then(|n| n.to_str()).map(str::len) == Some(64) {
                return path;
            }
        }
    }
    panic!("no entry file in {}", dir.display());
}

fn bench_size(c: &mut Criterion, label: &str, size: usize) {
    bench_hits(c, label, size, true);
    bench_hits(c, label, size, false);
}

fn bench_hits(c: &mut Criterion, label: &str, size: usize, memory: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = TempDir::new(label);
    let mut builder = CacheLayer::builder(&dir.0).ttl(Duration::from_secs(3600));
    if !memory {
        builder = builder.memory_bytes(0);
    }
    let layer = builder.build().expect("cache");
    let body = Bytes::from(vec![b'x'; size]);
    let upstream = service_fn(move |_request: http::Request<()>| {
        let body = body.clone();
        async move { Ok::<_, Infallible>(http::Response::new(Full::new(body))) }
    });
    let service = layer.layer(upstream);
    let request = || {
        http::Request::get(URL)
            .header("x-access-key", "bench-key")
            .body(())
            .expect("request")
    };
    let send = |request: http::Request<()>| {
        let service = service.clone();
        async move {
            let response = service.oneshot(request).await.expect("response");
            let status = CacheStatus::from_headers(response.headers());
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            (status, body.len())
        }
    };
    assert_eq!(
        rt.block_on(send(request())),
        (Some(CacheStatus::Miss), size)
    );
    assert_eq!(rt.block_on(send(request())), (Some(CacheStatus::Hit), size));
    let file = entry_file(&dir.0);

    let mut group = c.benchmark_group("cache");
    let id = if memory { "hit" } else { "disk_hit" };
    group.bench_function(format!("{id}_{label}"), |b| {
        b.iter_batched(
            request,
            |request| {
                let (status, len) = rt.block_on(send(request));
                assert_eq!(len, size);
                status
            },
            BatchSize::SmallInput,
        );
    });
    if !memory {
        group.bench_function(format!("raw_read_{label}"), |b| {
            b.iter(|| std::fs::read(&file).expect("read").len());
        });
    }
    group.finish();
}

fn bench_all(c: &mut Criterion) {
    bench_size(c, "4k", 4 * 1024);
    bench_size(c, "64k", 64 * 1024);
}

criterion_group!(benches, bench_all);
criterion_main!(benches);
