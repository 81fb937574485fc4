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

use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::schedule::Schedule;
use crate::app::request::check_path;

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
    let text = std::fs::read_to_string(path).map_err(|source| CronFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|problems| CronFileError::Invalid {
        path: path.to_path_buf(),
        problems,
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
    let mut tasks: Vec<Task> = Vec::new();
    let mut names = Vec::new();
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
    names: &mut Vec<String>,
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
        } else if names.contains(name) {
            problems.push(format!(
                "{label}: name: duplicate; an earlier entry is also named {name:?}"
            ));
        } else {
            names.push(name.clone());
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
}
