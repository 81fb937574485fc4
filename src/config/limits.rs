//! What configuration input may cost: the file is read through a bounded
//! reader, so a huge file, `/dev/zero` or an endless pipe stops at a cap
//! instead of filling memory, and its nesting is measured by a cheap scan
//! before a YAML parser spends time on it.

use std::io::Read;
use std::path::Path;

/// Why a configuration file was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum FileError {
    /// It could not be opened or read: the setting that named it is wrong.
    Unreadable(String),
    /// Its content is too big, too deep, or not a mapping.
    Content(String),
}

/// Largest configuration file sqsd reads.
pub const MAX_CONFIG_FILE: u64 = 1024 * 1024;

/// Reads at most `limit` bytes of `path`; a longer file is an error, found
/// after reading one byte past the limit and never more.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let unreadable =
        |e: std::io::Error| FileError::Unreadable(format!("cannot read {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let too_big = || {
        FileError::Content(format!(
            "{} is larger than the limit of {} ({limit} bytes)",
            path.display(),
            size_text(limit)
        ))
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
        .map_err(unreadable)?;
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

/// Deepest nesting accepted in a configuration file. sqsd's own files need
/// four levels (`queues`, an entry, `attributes`, a value).
pub const MAX_NESTING: usize = 32;

/// Refuses text nested deeper than `max` before a YAML parser spends time
/// and memory on it. A cheap, conservative scan: it counts flow brackets
/// where a value may start (outside quotes, comments and block scalars), and
/// block levels by indentation and `- ` markers. It may overcount in odd
/// corners, never by enough to refuse a real configuration.
pub fn check_nesting(text: &str, max: usize) -> Result<(), String> {
    let mut flow = 0usize;
    let mut quote: Option<char> = None;
    let mut block: Vec<usize> = Vec::new();
    // Indentation of the line that opened a `|` or `>` block scalar: the
    // more indented lines after it are text, not structure.
    let mut scalar_parent: Option<usize> = None;
    for (number, line) in text.lines().enumerate() {
        let too_deep = |depth: usize| -> Result<(), String> {
            if depth > max {
                return Err(format!(
                    "is nested too deeply (more than {max} levels, at line {})",
                    number + 1
                ));
            }
            Ok(())
        };
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|b| **b == b' ').count();
        let rest = &line[indent..];
        if let Some(parent) = scalar_parent {
            if rest.trim().is_empty() || indent > parent {
                continue;
            }
            scalar_parent = None;
        }
        if quote.is_none() && flow == 0 && !rest.is_empty() && !rest.starts_with('#') {
            while block.last().is_some_and(|&open| open >= indent) {
                block.pop();
            }
            block.push(indent);
            // `- - x` opens one sequence per marker on a single line.
            let mut col = indent;
            while bytes.get(col) == Some(&b'-') && matches!(bytes.get(col + 1), None | Some(b' ')) {
                col += 1;
                while bytes.get(col) == Some(&b' ') {
                    col += 1;
                }
                block.push(col);
                too_deep(block.len())?;
            }
            too_deep(block.len())?;
        }
        let depth_below = block.len();
        let mut prev: Option<char> = None;
        let mut last_visible: Option<char> = None;
        // First character of the last word outside quotes.
        let mut word_start: Option<char> = None;
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            // A quote or a bracket starts a node only where a value may
            // start; inside a plain scalar (`/a[b`, `it's`) it is text.
            let value_may_start = !matches!(last_visible,
                Some(v) if !matches!(v, '[' | '{' | ',' | ':' | '-' | '?'));
            match quote {
                Some('\'') => {
                    if c == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            quote = None;
                        }
                    }
                }
                Some(_) => {
                    if c == '\\' {
                        chars.next();
                    } else if c == '"' {
                        quote = None;
                    }
                }
                None => {
                    let after_space = !matches!(prev, Some(p) if !p.is_whitespace());
                    if after_space && !c.is_whitespace() {
                        word_start = Some(c);
                    }
                    match c {
                        '#' if after_space => break,
                        '\'' | '"' if value_may_start => quote = Some(c),
                        '[' | '{' if flow > 0 || value_may_start => {
                            flow += 1;
                            too_deep(depth_below + flow)?;
                        }
                        ']' | '}' => flow = flow.saturating_sub(1),
                        _ => {}
                    }
                }
            }
            if !c.is_whitespace() {
                last_visible = Some(c);
            }
            prev = Some(c);
        }
        if quote.is_none() && flow == 0 && matches!(word_start, Some('|' | '>')) {
            scalar_parent = Some(indent);
        }
    }
    Ok(())
}

/// Reads a YAML (or JSON) file within the size and nesting bounds and
/// returns its top-level mapping; `Ok(None)` for an empty document.
pub fn read_yaml_mapping(path: &Path) -> Result<Option<serde_yaml::Mapping>, FileError> {
    let bytes = read_bounded(path, MAX_CONFIG_FILE)?;
    let content = |message: String| FileError::Content(message);
    let text =
        String::from_utf8(bytes).map_err(|_| content("the file is not UTF-8 text".into()))?;
    check_nesting(&text, MAX_NESTING).map_err(|e| content(format!("the file {e}")))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| content(format!("not valid YAML: {e}")))?;
    match doc {
        serde_yaml::Value::Mapping(m) => Ok(Some(m)),
        serde_yaml::Value::Null => Ok(None),
        _ => Err(content("must be a mapping of option: value".into())),
    }
}
