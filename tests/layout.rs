//! The source tree's architecture, checked: which concern may use which,
//! and no two source files that depend on each other, directly or around a
//! longer circle. It reads `src/` as text, resolving every `crate::` and
//! `super::` path to the file that defines it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Folders that must never reach into the message pipeline (`daemon/`).
const BELOW_DAEMON: &[&str] = &["aws", "app", "admin", "config", "cron", "sqs_server"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/aws/queue.rs` is `["aws", "queue"]`,
/// `src/aws/mod.rs` is `["aws"]`, `src/lib.rs` is `[]`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The file that defines module `path`, or the nearest enclosing one.
fn file_of(modules: &BTreeMap<Vec<String>, PathBuf>, path: &[String]) -> Option<PathBuf> {
    (0..=path.len())
        .rev()
        .find_map(|n| modules.get(&path[..n]).cloned())
}

/// Every `crate::a::b` and `super::c` path in `text`, made absolute, one per
/// leaf of a `use` list (`use crate::a::{b, c::D}` gives `a::b` and `a::c::D`).
fn referenced_paths(text: &str, own: &[String]) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    for start in ["crate::", "super::"] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(start) {
            let before = rest[..at].chars().last();
            rest = &rest[at..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                rest = &rest[start.len()..];
                continue;
            }
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let mut prefix: Vec<String> = Vec::new();
            let mut segments = rest[..end].trim_end_matches(':').split("::");
            match segments.next() {
                Some("crate") => {}
                _ => {
                    // `super` is the parent module: for `a/b.rs` (module
                    // `a::b`) that is `a`, for `a/mod.rs` (module `a`) the
                    // crate root.
                    prefix = own[..own.len().saturating_sub(1)].to_vec();
                }
            }
            for s in segments {
                if s == "super" {
                    prefix.pop();
                } else if !s.is_empty() {
                    prefix.push(s.to_string());
                }
            }
            // A `{ a, b::C }` list: each leaf adds one path.
            let after = &rest[end..];
            if let Some(list) = after.strip_prefix('{') {
                let close = list.find('}').unwrap_or(0);
                let after = list;
                for leaf in after[..close].split(',') {
                    let mut p = prefix.clone();
                    p.extend(
                        leaf.trim()
                            .split("::")
                            .filter(|s| !s.is_empty() && *s != "self")
                            .map(str::to_string),
                    );
                    out.push(p);
                }
            } else {
                out.push(prefix);
            }
            rest = &rest[end.max(1)..];
        }
    }
    out
}

fn graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> =
        files.iter().map(|f| (module_of(f), f.clone())).collect();
    let mut edges = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        // Unit tests beside the code may reach anywhere.
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        let own = module_of(file);
        let targets: BTreeSet<PathBuf> = referenced_paths(text, &own)
            .iter()
            .filter_map(|p| file_of(&modules, p))
            .filter(|t| t != file)
            .collect();
        edges.insert(file.clone(), targets);
    }
    edges
}

fn short(p: &Path) -> String {
    p.strip_prefix(src()).unwrap_or(p).display().to_string()
}

#[test]
fn only_the_daemon_reaches_into_the_pipeline() {
    let mut wrong = Vec::new();
    for (file, targets) in graph() {
        let folder = short(&file).split('/').next().unwrap_or("").to_string();
        if !BELOW_DAEMON.contains(&folder.as_str()) {
            continue;
        }
        for t in targets {
            if short(&t).starts_with("daemon/") {
                wrong.push(format!("{} uses {}", short(&file), short(&t)));
            }
        }
    }
    assert!(wrong.is_empty(), "uses of daemon/: {wrong:#?}");
}

#[test]
fn no_source_files_depend_on_each_other_in_a_circle() {
    let edges = graph();
    assert!(edges.len() > 20, "too few files read: {}", edges.len());
    // Depth-first search for a back edge.
    fn visit(
        node: &PathBuf,
        edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        stack: &mut Vec<PathBuf>,
        done: &mut BTreeSet<PathBuf>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut circle: Vec<String> = stack[at..].iter().map(|p| short(p)).collect();
            circle.push(short(node));
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(circle) = visit(node, &edges, &mut Vec::new(), &mut done) {
            panic!("source files depend on each other: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn the_path_reader_resolves_lists_and_super() {
    let own = vec!["daemon".to_string(), "poller".to_string()];
    let paths = referenced_paths(
        "use super::deliver::Dispatcher;\nuse crate::aws::{Queue, sqs_json::WireMessage};\n// crate::not::this\n",
        &own,
    );
    let text: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        text,
        [
            "aws::Queue",
            "aws::sqs_json::WireMessage",
            "daemon::deliver::Dispatcher"
        ]
    );
    let from_mod = referenced_paths("use super::x::Y;", &["a".to_string()]);
    assert_eq!(from_mod, vec![vec!["x".to_string(), "Y".to_string()]]);
}
