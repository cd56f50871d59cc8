//! Micro-benchmarks of the stage runtime: the cost of one guest call by
//! chunk size, of creating an instance from a loaded module, and of loading
//! a module from the on-disk cache versus compiling it.
//!
//! Run with: (cd plugins && cargo build --release) && cargo bench -p wasmpipe

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::path::PathBuf;
use std::time::Duration;
use wasmpipe::runtime::{Runtime, RuntimeConfig, Stage, StageSpec, linker};

fn plugin(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../plugins/target/wasm32-wasip1/release/{name}.wasm"
    ));
    assert!(
        p.is_file(),
        "{p:?} is missing: run `cd plugins && cargo build --release` first"
    );
    p
}

fn spec(name: &str) -> StageSpec {
    StageSpec {
        // `enrich` needs its region; the other stages ignore params.
        params: serde_json::json!({ "region": "eu-west-1" }),
        ..StageSpec::standalone(name, plugin(name))
    }
}

fn runtime(cache: Option<PathBuf>) -> Runtime {
    Runtime::new(&RuntimeConfig {
        max_instances: 64,
        max_memory: 1 << 30,
        cache_dir: cache,
    })
    .expect("runtime")
}

fn chunk_calls(c: &mut Criterion) {
    let rt = runtime(None);
    let stage = Stage::load(&rt, &linker(&rt).unwrap(), spec("double")).unwrap();
    let mut inst = stage.instantiate(&rt).unwrap();
    let mut group = c.benchmark_group("map call per chunk (double)");
    for events in [1usize, 16, 256, 4096] {
        let chunk: Vec<u8> = (0..events)
            .flat_map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
            .collect();
        group.throughput(Throughput::Elements(events as u64));
        group.bench_with_input(BenchmarkId::from_parameter(events), &chunk, |b, chunk| {
            b.iter(|| inst.process(b"{}", chunk).unwrap().out.len())
        });
    }
    group.finish();
}

fn instantiation(c: &mut Criterion) {
    let rt = runtime(None);
    let stage = Stage::load(&rt, &linker(&rt).unwrap(), spec("enrich")).unwrap();
    c.bench_function("instance creation (pooling allocator, InstancePre)", |b| {
        b.iter(|| stage.instantiate(&rt).unwrap())
    });
}

fn module_loading(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let cached = runtime(Some(dir.path().to_path_buf()));
    let bytes = std::fs::read(plugin("enrich")).unwrap();
    cached.load_module(&bytes, &plugin("enrich")).unwrap(); // fills the cache
    let mut group = c.benchmark_group("module load (enrich)");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("from cache", |b| {
        b.iter(|| cached.load_module(&bytes, &plugin("enrich")).unwrap())
    });
    let uncached = runtime(None);
    group.bench_function("compile", |b| {
        b.iter(|| uncached.load_module(&bytes, &plugin("enrich")).unwrap())
    });
    group.finish();
}

criterion_group!(benches, chunk_calls, instantiation, module_loading);
criterion_main!(benches);
