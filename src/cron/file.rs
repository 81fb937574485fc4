//! `cron.yaml`: reading and checking Elastic Beanstalk's periodic-task file.
//!
//! ```yaml
//! version: 1
//! cron:
//!   - name: "backup-job"
//!     url: "/backup"
//!     schedule: "0 */12 * * *"
//! ```
//!
//! Every problem is reported at once, each naming the entry (by position and
//! name) and the field.
//!
//! Bounds: at most [`MAX_FILE_BYTES`] are read (through a bounded reader, so
//! `/dev/zero` or an endless pipe stops at the cap) and at most
//! [`MAX_TASKS`] entries are accepted; checking the entries is linear.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::schedule::Schedule;
use crate::app::request::check_path;

/// Largest cron.yaml read: far more than any real schedule needs.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Most tasks in one file.
pub const MAX_TASKS: usize = 1000;

/// Where Elastic Beanstalk looks for the file, in order, when no path is set.
pub const DEFAULT_PATHS: [&str; 2] = ["cron.yaml", "/var/app/current/cron.yaml"];

/// One periodic task.
#[derive(Clone, Debug)]
pub struct Task {
    pub name: String,
    /// Path the task is POSTed to.
    pub url: String,
    pub schedule: Schedule,
}

/// Why the file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CronFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is larger than {limit} bytes (1 MiB), the most sqsd reads from a cron.yaml", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{} is not a valid cron.yaml:\n{}", path.display(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// The file to read: the configured one, else the first default that exists.
pub fn locate(configured: Option<&Path>) -> Option<PathBuf> {
    match configured {
        Some(p) => Some(p.to_path_buf()),
        None => DEFAULT_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file()),
    }
}

/// Reads and checks the file at `path`.
pub fn load(path: &Path) -> Result<Vec<Task>, CronFileError> {
    let text = read_bounded(path)?;
    parse(&text).map_err(|problems| CronFileError::Invalid {
        path: path.to_path_buf(),
        problems,
    })
}

/// The file's text, refused past [`MAX_FILE_BYTES`] before more is read.
fn read_bounded(path: &Path) -> Result<String, CronFileError> {
    let read_error = |source| CronFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let too_large = || CronFileError::TooLarge {
        path: path.to_path_buf(),
        limit: MAX_FILE_BYTES,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    // A regular file says its size; devices and pipes are cut by reading.
    if file
        .metadata()
        .is_ok_and(|m| m.is_file() && m.len() > MAX_FILE_BYTES)
    {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text: {e}"),
        ))
    })
}

const ENTRY_KEYS: [&str; 3] = ["name", "url", "schedule"];

/// Parses the text of a cron.yaml; on failure, every problem found.
pub fn parse(text: &str) -> Result<Vec<Task>, Vec<String>> {
    let doc: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => return Err(vec![format!("not valid YAML: {e}")]),
    };
    let Value::Mapping(top) = doc else {
        return Err(vec![
            "the file must be a mapping with `version: 1` and a `cron:` list".into(),
        ]);
    };
    let mut problems = Vec::new();
    for key in top.keys() {
        let k = key_text(key);
        if k != "version" && k != "cron" {
            problems.push(format!(
                "unknown top-level key {k:?} (expected version, cron)"
            ));
        }
    }
    match top.get("version") {
        None => problems.push("version: missing; it must be 1".into()),
        Some(v) if is_one(v) => {}
        Some(v) => problems.push(format!("version: must be 1, found {}", value_text(v))),
    }
    let entries = match top.get("cron") {
        None => {
            problems.push("cron: missing; it must be a list of tasks".into());
            &[][..]
        }
        Some(Value::Sequence(s)) => s.as_slice(),
        Some(Value::Null) => &[][..],
        Some(v) => {
            problems.push(format!(
                "cron: must be a list of tasks, found {}",
                value_text(v)
            ));
            &[][..]
        }
    };
    if entries.len() > MAX_TASKS {
        problems.push(format!(
            "cron: {} tasks; at most {MAX_TASKS} are allowed",
            entries.len()
        ));
        return Err(problems);
    }
    let mut tasks: Vec<Task> = Vec::new();
    let mut names = HashSet::new();
    for (i, entry) in entries.iter().enumerate() {
        if let Some(task) = parse_entry(i + 1, entry, &mut names, &mut problems) {
            tasks.push(task);
        }
    }
    if problems.is_empty() {
        Ok(tasks)
    } else {
        Err(problems)
    }
}

fn parse_entry(
    n: usize,
    entry: &Value,
    names: &mut HashSet<String>,
    problems: &mut Vec<String>,
) -> Option<Task> {
    let Value::Mapping(map) = entry else {
        problems.push(format!(
            "cron entry {n}: must be a mapping with name, url and schedule, found {}",
            value_text(entry)
        ));
        return None;
    };
    let label = match map.get("name").and_then(Value::as_str) {
        Some(name) if !name.trim().is_empty() => format!("cron entry {n} ({name:?})"),
        _ => format!("cron entry {n}"),
    };
    let before = problems.len();
    for key in map.keys() {
        let k = key_text(key);
        if !ENTRY_KEYS.contains(&k.as_str()) {
            problems.push(format!(
                "{label}: unknown field {k:?} (expected name, url, schedule)"
            ));
        }
    }
    let mut field = |key: &str| -> Option<String> {
        match map.get(key) {
            None => {
                problems.push(format!("{label}: {key}: missing"));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                problems.push(format!(
                    "{label}: {key}: must be a string, found {}",
                    value_text(v)
                ));
                None
            }
        }
    };
    let name = field("name");
    let url = field("url");
    let schedule = field("schedule");
    if let Some(name) = &name {
        if name.trim().is_empty() {
            problems.push(format!("{label}: name: must not be empty"));
        } else if name.chars().any(char::is_control) {
            problems.push(format!(
                "{label}: name: must not contain control characters"
            ));
        } else if !names.insert(name.clone()) {
            problems.push(format!(
                "{label}: name: duplicate; an earlier entry is also named {name:?}"
            ));
        }
    }
    if let Some(url) = &url {
        if let Err(e) = check_path(url) {
            problems.push(format!("{label}: url: {url:?} is not a path: {e}"));
        }
    }
    let schedule = schedule.and_then(|s| match Schedule::parse(&s) {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(format!("{label}: schedule: {e}"));
            None
        }
    });
    if problems.len() > before {
        return None;
    }
    Some(Task {
        name: name?,
        url: url?,
        schedule: schedule?,
    })
}

fn is_one(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_u64() == Some(1),
        Value::String(s) => s.trim() == "1",
        _ => false,
    }
}

fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => value_text(other),
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
version: 1
cron:
  - name: "backup-job"
    url: "/backup"
    schedule: "0 */12 * * *"
  - name: report
    url: /reports/daily?format=csv
    schedule: "*/10 * * * * *"
"#;

    #[test]
    fn reads_elastic_beanstalks_format() {
        let tasks = parse(GOOD).unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0].name, "backup-job");
        assert_eq!(tasks[0].url, "/backup");
        assert_eq!(tasks[0].schedule.as_str(), "0 */12 * * *");
        assert_eq!(tasks[1].url, "/reports/daily?format=csv");
        assert!(parse("version: 1\ncron: []\n").unwrap().is_empty());
        assert!(parse("version: \"1\"\ncron:\n").unwrap().is_empty());
    }

    fn one_problem(text: &str) -> String {
        let problems = parse(text).expect_err(text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems.into_iter().next().unwrap()
    }

    fn entry(fields: &str) -> String {
        format!("version: 1\ncron:\n  - name: ok\n    url: /ok\n    schedule: \"* * * * *\"\n  - {fields}\n")
    }

    #[test]
    fn every_kind_of_bad_file_names_entry_and_field() {
        let cases: &[(&str, &[&str])] = &[
            ("version: 2\ncron: []\n", &["version", "must be 1", "2"]),
            ("cron: []\n", &["version", "missing"]),
            ("version: 1\n", &["cron", "missing"]),
            ("version: 1\ncron: nope\n", &["cron", "must be a list"]),
            (
                "version: 1\ncron: []\nextra: 1\n",
                &["unknown top-level key", "extra"],
            ),
            ("- a\n- b\n", &["must be a mapping"]),
            ("version: 1\ncron: [\n", &["not valid YAML"]),
            (
                &entry("url: /x\n    schedule: \"* * * * *\""),
                &["cron entry 2", "name: missing"],
            ),
            (
                &entry("name: b\n    schedule: \"* * * * *\""),
                &["cron entry 2 (\"b\")", "url: missing"],
            ),
            (
                &entry("name: b\n    url: /x"),
                &["cron entry 2 (\"b\")", "schedule: missing"],
            ),
            (
                &entry("name: \"\"\n    url: /x\n    schedule: \"* * * * *\""),
                &["cron entry 2", "name: must not be empty"],
            ),
            (
                &entry("name: ok\n    url: /x\n    schedule: \"* * * * *\""),
                &["cron entry 2 (\"ok\")", "name: duplicate"],
            ),
            (
                &entry("name: b\n    url: /x\n    schedule: \"61 * * * *\""),
                &["cron entry 2 (\"b\")", "schedule:", "61 * * * *"],
            ),
            (
                &entry("name: b\n    url: /x\n    schedule: \"* * *\""),
                &["cron entry 2 (\"b\")", "schedule:", "3 fields"],
            ),
            (
                &entry("name: b\n    url: http://evil.example/x\n    schedule: \"* * * * *\""),
                &["cron entry 2 (\"b\")", "url:", "not a path"],
            ),
            (
                &entry("name: b\n    url: //evil.example/x\n    schedule: \"* * * * *\""),
                &["cron entry 2 (\"b\")", "url:", "not a path"],
            ),
            (
                &entry("name: b\n    url: /x\n    schedule: \"* * * * *\"\n    timezone: CET"),
                &["cron entry 2 (\"b\")", "unknown field \"timezone\""],
            ),
            (
                &entry("name: b\n    url: /x\n    schedule: 5"),
                &["cron entry 2 (\"b\")", "schedule: must be a string"],
            ),
            (&entry("just text"), &["cron entry 2", "must be a mapping"]),
        ];
        for (text, wanted) in cases {
            let p = one_problem(text);
            for w in *wanted {
                assert!(p.contains(w), "{p:?} should mention {w:?}");
            }
        }
    }

    #[test]
    fn all_problems_are_reported_together() {
        let text = "version: 3\ncron:\n  - name: a\n    url: x\n    schedule: bad\n";
        let problems = parse(text).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn locate_prefers_the_configured_path() {
        let p = Path::new("/nonexistent/cron.yaml");
        assert_eq!(locate(Some(p)).as_deref(), Some(p));
        let e = load(p).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/cron.yaml"), "{e}");
    }

    fn tasks_yaml(n: usize) -> String {
        let mut text = String::from("version: 1\ncron:\n");
        for i in 0..n {
            text.push_str(&format!(
                "  - name: task-{i}\n    url: /t\n    schedule: \"0 3 * * *\"\n"
            ));
        }
        text
    }

    #[test]
    fn at_most_max_tasks_are_accepted() {
        assert_eq!(parse(&tasks_yaml(MAX_TASKS)).unwrap().len(), MAX_TASKS);
        let problems = parse(&tasks_yaml(MAX_TASKS + 1)).unwrap_err();
        assert_eq!(
            problems,
            vec![format!(
                "cron: {} tasks; at most 1000 are allowed",
                MAX_TASKS + 1
            )]
        );
    }

    #[test]
    fn endless_input_stops_at_the_cap() {
        let e = load(Path::new("/dev/zero")).unwrap_err();
        assert!(
            matches!(&e, CronFileError::TooLarge { limit, .. } if *limit == MAX_FILE_BYTES),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains("/dev/zero") && text.contains("1048576"),
            "{text}"
        );
    }

    #[test]
    fn a_regular_file_over_the_cap_is_refused_before_reading() {
        let dir = std::env::temp_dir().join(format!("sqsd-cron-{:08x}", fastrand::u32(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cron.yaml");
        let file = std::fs::File::create(&path).unwrap();
        // Sparse: 4 GiB of nothing costs no disk and would take long to read.
        file.set_len(4 << 30).unwrap();
        let started = std::time::Instant::now();
        let e = load(&path).unwrap_err();
        assert!(matches!(e, CronFileError::TooLarge { .. }), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // Exactly at the cap, the file is read (and judged on its text).
        std::fs::File::create(&path)
            .unwrap()
            .set_len(MAX_FILE_BYTES)
            .unwrap();
        assert!(matches!(load(&path), Err(CronFileError::Invalid { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..12 {
            let prev = level - 1;
            text.push_str(&format!(
                "l{level}: &l{level} [*{}, *{0}, *{0}, *{0}, *{0}, *{0}, *{0}, *{0}, *{0}, *{0}]\n",
                if prev == 0 {
                    "a".to_string()
                } else {
                    format!("l{prev}")
                }
            ));
        }
        text.push_str("version: 1\ncron: []\n");
        let started = std::time::Instant::now();
        let problems = parse(&text).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(problems[0].contains("not valid YAML"), "{problems:?}");
    }
}
