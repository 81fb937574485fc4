//! What configuration input may cost: files are read through a bounded
//! reader, so a huge file, `/dev/zero` or an endless pipe stops at a cap
//! instead of filling memory.

use std::io::Read;
use std::path::Path;

/// Largest YAML file sqsd reads (its own and Elastic Beanstalk's).
pub const MAX_CONFIG_FILE: u64 = 1024 * 1024;

/// Reads at most `limit` bytes of `path`; a longer file is an error, found
/// after reading one byte past the limit and never more.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let too_big = || {
        format!(
            "{} is larger than the limit of {} ({limit} bytes)",
            path.display(),
            size_text(limit)
        )
    };
    // A regular file says its size: refuse before reading anything.
    if let Ok(meta) = file.metadata() {
        if meta.is_file() && meta.len() > limit {
            return Err(too_big());
        }
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > limit {
        return Err(too_big());
    }
    Ok(bytes)
}

/// `1 MiB`, `64 KiB` or `512 bytes`.
pub fn size_text(bytes: u64) -> String {
    if bytes >= 1024 * 1024 && bytes % (1024 * 1024) == 0 {
        format!("{} MiB", bytes / (1024 * 1024))
    } else if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}
