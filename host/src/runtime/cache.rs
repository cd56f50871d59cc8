//! The bound on the compiled-code cache's size.
//!
//! Every new version of a stage leaves a compiled module in the cache, and
//! a JavaScript or Python stage's is about 37 MB: an author saving a
//! stage under `run --watch` a hundred times would leave gigabytes. So
//! when the cache passes its bound (`WASMPIPE_CACHE_MAX`, 2 GiB by
//! default), the entries used least recently are removed until it holds
//! three quarters of it; a hit marks its entry as used.
//!
//! Only wasmpipe's own entries are ever removed: a `cache_dir` may be a
//! folder the user keeps other files in, so an entry is recognised by its
//! name (`<sha256>-<engine hash>.cwasm` at the top, `functions/<2 hex>/<62
//! hex>` below), and nothing else is touched. Removing a module another
//! process has loaded is safe: its mapping keeps the file's data.

use crate::manifest::ByteSize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The folder of compiled functions inside the cache.
pub const FUNCTIONS: &str = "functions";

/// Where a compiled module is kept: `<module's SHA-256>-<engine hash>.cwasm`
/// (a rebuilt module or another engine configuration is a new entry).
pub fn module_file(dir: &Path, module_sha256: &str, engine: u64) -> PathBuf {
    dir.join(format!("{module_sha256}-{engine:016x}.cwasm"))
}

/// Where a compiled function is kept in `functions` (the [`FUNCTIONS`]
/// folder): by the SHA-256 of its key, `<2 hex>/<62 hex>`.
pub fn function_file(functions: &Path, key: &[u8]) -> PathBuf {
    let hash = hex::encode(Sha256::digest(key));
    functions.join(&hash[..2]).join(&hash[2..])
}

/// The bound when `WASMPIPE_CACHE_MAX` is not set.
pub const DEFAULT_MAX: u64 = 2 << 30;

/// `WASMPIPE_CACHE_MAX` (a size such as `"4GiB"`), else [`DEFAULT_MAX`].
pub fn max_bytes() -> u64 {
    let Some(v) = std::env::var_os("WASMPIPE_CACHE_MAX") else {
        return DEFAULT_MAX;
    };
    match v.to_string_lossy().parse::<ByteSize>() {
        Ok(ByteSize(n)) => n,
        Err(e) => {
            tracing::warn!(
                "WASMPIPE_CACHE_MAX: {e}; the cache is bounded at {} instead",
                ByteSize(DEFAULT_MAX)
            );
            DEFAULT_MAX
        }
    }
}

/// Marks an entry as used now (its modification time is the use's).
pub fn touch(path: &Path) {
    let _ = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
}

/// What [`prune`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub files: usize,
    pub bytes: u64,
}

/// When the entries in `dir` add up to more than `max` bytes, removes the
/// least recently used until they hold at most three quarters of it (so
/// the next few entries do not each walk the cache again). `keep`, the
/// entry just written, is never removed.
pub fn prune(dir: &Path, max: u64, keep: &Path) -> Pruned {
    let mut entries = entries(dir);
    let total: u64 = entries.iter().map(|e| e.2).sum();
    let mut pruned = Pruned::default();
    if total <= max {
        return pruned;
    }
    entries.sort_by_key(|e| e.1);
    let target = max / 4 * 3;
    let mut left = total;
    for (path, _, size) in entries {
        if left <= target {
            break;
        }
        if path == keep || std::fs::remove_file(&path).is_err() {
            continue;
        }
        left -= size;
        pruned.files += 1;
        pruned.bytes += size;
    }
    pruned
}

/// wasmpipe's entries in `dir`: (path, last use, size).
fn entries(dir: &Path) -> Vec<(PathBuf, SystemTime, u64)> {
    let mut found = Vec::new();
    let mut add = |path: PathBuf| {
        if let Ok(m) = std::fs::symlink_metadata(&path)
            && m.is_file()
        {
            found.push((
                path,
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.len(),
            ));
        }
    };
    for e in read_dir(dir) {
        if is_module_name(&e) {
            add(dir.join(e));
        }
    }
    let functions = dir.join(FUNCTIONS);
    for prefix in read_dir(&functions).filter(|p| is_hex(p, 2)) {
        let sub = functions.join(&prefix);
        for e in read_dir(&sub).filter(|e| is_hex(e, 62)) {
            add(sub.join(e));
        }
    }
    found
}

fn read_dir(dir: &Path) -> impl Iterator<Item = String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
}

/// `<64 hex>-<16 hex>.cwasm`, as [`module_file`] names a module.
fn is_module_name(name: &str) -> bool {
    name.strip_suffix(".cwasm")
        .and_then(|n| n.split_once('-'))
        .is_some_and(|(module, engine)| is_hex(module, 64) && is_hex(engine, 16))
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(path: &Path, size: usize, age_s: u64) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, vec![0u8; size]).unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(age_s))
            .unwrap();
    }

    fn module(dir: &Path, n: u8) -> PathBuf {
        module_file(dir, &format!("{n:02x}").repeat(32), 0)
    }

    #[test]
    fn removes_the_least_recently_used_entries_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let oldest = module(d, 1);
        let used = module(d, 2);
        let newest = module(d, 3);
        let function = function_file(&d.join(FUNCTIONS), b"a function");
        entry(&oldest, 400, 400);
        entry(&used, 400, 300);
        entry(&function, 400, 200);
        entry(&newest, 400, 1);
        // Not wasmpipe's: never counted, never removed.
        let other = ["notes.txt", "x.cwasm", "functions/ab/short"];
        for o in other {
            entry(&d.join(o), 10_000, 1_000);
        }
        // A hit makes the second-oldest the most recent.
        touch(&used);
        // 1600 bytes against a bound of 1100: down to 825, the two least
        // recently used.
        let pruned = prune(d, 1100, &newest);
        assert_eq!(
            pruned,
            Pruned {
                files: 2,
                bytes: 800
            }
        );
        assert!(!oldest.exists() && !function.exists());
        assert!(used.exists() && newest.exists());
        for o in other {
            assert!(d.join(o).exists(), "{o} is not the cache's");
        }
        assert_eq!(prune(d, 1100, &newest), Pruned::default());
        // The entry just written stays, even alone over the bound.
        assert_eq!(
            prune(d, 100, &newest),
            Pruned {
                files: 1,
                bytes: 400
            }
        );
        assert!(newest.exists() && !used.exists());
    }

    #[test]
    fn a_cache_under_its_bound_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let a = module(tmp.path(), 1);
        entry(&a, 100, 10);
        assert_eq!(prune(tmp.path(), 100, Path::new("")), Pruned::default());
        assert!(a.exists());
    }
}
