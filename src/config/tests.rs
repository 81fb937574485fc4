use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use super::*;

const QUEUE: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/jobs";

fn load_with(
    flags: &[(&str, &str)],
    env: &[(&str, &str)],
    file: Option<&str>,
) -> Result<Loaded, ConfigError> {
    let mut flags: BTreeMap<String, String> = flags
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let _tmp;
    if let Some(text) = file {
        let mut f = tempfile();
        f.1.write_all(text.as_bytes()).unwrap();
        flags.insert("config".into(), f.0.display().to_string());
        _tmp = f;
    }
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |name: &str| env.get(name).cloned();
    load(&Inputs {
        flags: &flags,
        env: &lookup,
    })
}

/// A uniquely named file that is removed when dropped.
struct TempFile(std::path::PathBuf, std::fs::File);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
fn tempfile() -> TempFile {
    let path = std::env::temp_dir().join(format!("sqsd-config-{}.yaml", fastrand::u64(..)));
    let file = std::fs::File::create(&path).unwrap();
    TempFile(path, file)
}

#[test]
fn defaults_match_the_contract() {
    let c = load_with(&[("queue_url", QUEUE)], &[], None)
        .unwrap()
        .config;
    assert_eq!(c.http_path, "/");
    assert_eq!(c.worker_url, "http://localhost:80");
    assert_eq!(c.mime_type, "application/json");
    assert_eq!(c.http_connections, 50);
    assert_eq!(c.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.inactivity_timeout, Duration::from_secs(299));
    assert_eq!(c.visibility_timeout, 300);
    assert_eq!(c.error_visibility_timeout, 2);
    assert_eq!(c.retention_period, Duration::from_secs(345_600));
    assert_eq!(c.max_retries, 10);
    assert_eq!(c.admin_addr.to_string(), "127.0.0.1:9191");
    assert_eq!(c.success_codes, SuccessCodes::Only200);
    assert_eq!(c.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.endpoint_url, None);
    assert_eq!(c.queue_name(), "jobs");
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let file = "queue_url: https://sqs.us-east-1.amazonaws.com/1/q\nhttp_connections: 7\nhttp_path: /file\nmime_type: text/plain\n";
    let env = [("SQSD_HTTP_CONNECTIONS", "8"), ("SQSD_HTTP_PATH", "/env")];
    let flags = [("http_path", "/flag")];
    let loaded = load_with(&flags, &env, Some(file)).unwrap();
    let c = loaded.config;
    assert_eq!(c.http_path, "/flag");
    assert_eq!(c.http_connections, 8);
    assert_eq!(c.mime_type, "text/plain");
    assert_eq!(c.drain_timeout, Duration::from_secs(30));
    assert_eq!(
        loaded.layers.get("http_path").unwrap().1,
        Source::Flag("http-path")
    );
    assert_eq!(
        loaded.layers.get("http_connections").unwrap().1,
        Source::Env("SQSD_HTTP_CONNECTIONS")
    );
}

#[test]
fn durations_accept_seconds_and_units() {
    assert_eq!(parse_duration("300").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
    assert!(parse_duration("5 parsecs").is_err());
    assert!(parse_duration("").is_err());
    assert!(parse_duration("-1").is_err());
}

#[test]
fn every_bad_setting_is_reported_with_its_source() {
    let file = "http_connections: 0\nbogus_key: 1\n";
    let env = [
        ("SQSD_VISIBILITY_TIMEOUT", "99999"),
        ("SQSD_SUCCESS_CODES", "3xx"),
    ];
    let flags = [("worker_url", "ftp://x"), ("connect_timeout", "soon")];
    let err = load_with(&flags, &env, Some(file))
        .err()
        .expect("must fail");
    let text = err.to_string();
    let settings: Vec<&str> = err.problems.iter().map(|p| p.setting.as_str()).collect();
    for s in [
        "queue_url",
        "http_connections",
        "bogus_key",
        "visibility_timeout",
        "success_codes",
        "worker_url",
        "connect_timeout",
    ] {
        assert!(settings.contains(&s), "{s} missing from {text}");
    }
    assert!(
        text.contains("environment variable SQSD_VISIBILITY_TIMEOUT"),
        "{text}"
    );
    assert!(text.contains("flag --worker-url"), "{text}");
    assert!(text.contains("allowed 1 to 1000"), "{text}");
    assert!(text.contains("unknown key"), "{text}");
}

#[test]
fn ranges_are_enforced_at_both_ends() {
    let cases = [
        ("http_connections", "1001"),
        ("connect_timeout", "61"),
        ("connect_timeout", "500ms"),
        ("inactivity_timeout", "36001"),
        ("visibility_timeout", "43201"),
        ("visibility_timeout", "1.5"),
        ("error_visibility_timeout", "43201"),
        ("retention_period", "59"),
        ("retention_period", "1209601"),
        ("max_retries", "0"),
        ("max_retries", "101"),
        ("http_path", "relative"),
        ("http_path", "//host/x"),
        ("mime_type", "json"),
        ("admin_addr", "localhost"),
        ("log_format", "xml"),
        ("queue_url", "not a url"),
    ];
    for (key, value) in cases {
        let err = load_with(&[("queue_url", QUEUE), (key, value)], &[], None)
            .err()
            .unwrap_or_else(|| panic!("{key}={value} accepted"));
        assert_eq!(err.problems.len(), 1, "{key}={value}: {err}");
        assert_eq!(err.problems[0].setting, key);
    }
    let ok = load_with(
        &[
            ("queue_url", QUEUE),
            ("visibility_timeout", "0"),
            ("success_codes", "2xx"),
        ],
        &[],
        None,
    )
    .unwrap()
    .config;
    assert_eq!(ok.visibility_timeout, 0);
    assert_eq!(ok.success_codes, SuccessCodes::Any2xx);
}

#[test]
fn unreadable_file_and_config_key_in_file_are_errors() {
    let err = load_with(
        &[("queue_url", QUEUE), ("config", "/nonexistent/sqsd.yaml")],
        &[],
        None,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("/nonexistent/sqsd.yaml"), "{err}");
    let err = load_with(&[("queue_url", QUEUE)], &[], Some("config: other.yaml\n"))
        .err()
        .unwrap();
    assert_eq!(err.problems[0].setting, "config");
}

#[test]
fn empty_environment_values_count_as_unset() {
    let c = load_with(&[("queue_url", QUEUE)], &[("SQSD_HTTP_PATH", "")], None)
        .unwrap()
        .config;
    assert_eq!(c.http_path, "/");
}

#[test]
fn worker_url_loses_its_trailing_slash() {
    let c = load_with(
        &[
            ("queue_url", QUEUE),
            ("worker_url", "http://127.0.0.1:8080/app/"),
        ],
        &[],
        None,
    )
    .unwrap()
    .config;
    assert_eq!(c.worker_url, "http://127.0.0.1:8080/app");
}

#[test]
fn queues_can_be_declared_in_the_file() {
    let file = "queue_url: https://sqs.us-east-1.amazonaws.com/1/q\nqueues:\n  - name: orders\n    attributes: {VisibilityTimeout: 60}\n    dead_letter: {queue: orders-dlq, max_receive_count: 3}\n  - name: jobs.fifo\n";
    let c = load_with(&[], &[], Some(file)).unwrap().config;
    assert_eq!(c.queues.len(), 2);
    assert_eq!(c.queues[0].name, "orders");
    assert_eq!(
        c.queues[0].dead_letter.as_ref().unwrap().max_receive_count,
        3
    );
    let bad = "queue_url: https://sqs.us-east-1.amazonaws.com/1/q\nqueues:\n  - name: x\n    colour: red\n";
    let err = load_with(&[], &[], Some(bad))
        .err()
        .expect("unknown field refused");
    assert_eq!(err.problems[0].setting, "queues");
}

#[test]
fn nesting_scan_refuses_deep_flow_block_and_sequence_nesting() {
    let flow = format!("x: {}", "[".repeat(100_000));
    let maps = format!("x: {}", "{a: ".repeat(MAX_NESTING + 1));
    let block: String = (0..MAX_NESTING + 1)
        .map(|depth| format!("{}k{depth}:\n", " ".repeat(depth)))
        .collect();
    let dashes = format!("x:\n  {}1\n", "- ".repeat(MAX_NESTING + 1));
    for text in [&flow, &maps, &block, &dashes] {
        let err = limits::check_nesting(text, MAX_NESTING).unwrap_err();
        assert!(err.contains("nested too deeply"), "{err}");
    }
}

#[test]
fn nesting_scan_accepts_real_configurations() {
    let text = r#"
# a comment with [[[[ brackets {{{{
queue_url: "https://sqs.us-east-1.amazonaws.com/1/jobs"  # and [ here
http_path: '/it''s [not] a {flow}'
mime_type: text/plain
success_codes: 200-299
queues:
  - name: jobs
    attributes:
      VisibilityTimeout: 30
      RedrivePolicy: {"maxReceiveCount": "3", "deadLetterTargetArn": "arn:x"}
    dead_letter:
      queue: jobs-dlq
      max_receive_count: 3
    tags: {team: [a, b]}
worker_url: http://localhost/a[b{c
note: |
  [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
  {{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{
log_level: info
"#;
    limits::check_nesting(text, MAX_NESTING).unwrap();
    let json = r#"{"queue_url": "https://q", "queues": [{"name": "a", "tags": {"k": "[["}}]}"#;
    limits::check_nesting(json, MAX_NESTING).unwrap();
}

#[test]
fn deeply_nested_file_is_one_problem() {
    let text = format!("x: {}", "[".repeat(100_000));
    let err = match load_with(&[("queue_url", QUEUE)], &[], Some(&text)) {
        Err(e) => e,
        Ok(_) => panic!("a file nested 100000 deep was accepted"),
    };
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].setting, "config");
    assert!(
        err.problems[0].message.contains("nested too deeply"),
        "{err}"
    );
}

#[test]
fn reads_stop_at_the_cap() {
    let zero = limits::read_bounded(std::path::Path::new("/dev/zero"), 4096).unwrap_err();
    assert!(
        matches!(&zero, limits::FileError::Content(m) if m.contains("larger than the limit of 4 KiB")),
        "{zero:?}"
    );
    let mut at_cap = tempfile();
    at_cap.1.write_all(&[b'#'; 4096]).unwrap();
    assert_eq!(limits::read_bounded(&at_cap.0, 4096).unwrap().len(), 4096);
    at_cap.1.write_all(b"#").unwrap();
    assert!(matches!(
        limits::read_bounded(&at_cap.0, 4096),
        Err(limits::FileError::Content(_))
    ));
    assert!(matches!(
        limits::read_bounded(std::path::Path::new("/nonexistent/sqsd.yaml"), 4096),
        Err(limits::FileError::Unreadable(_))
    ));
}

#[test]
fn file_over_one_mib_is_refused() {
    let mut text = String::from("http_path: /x\n");
    while text.len() as u64 <= MAX_CONFIG_FILE {
        text.push_str("# padding padding padding padding padding padding\n");
    }
    let err = match load_with(&[("queue_url", QUEUE)], &[], Some(&text)) {
        Err(e) => e,
        Ok(_) => panic!("a file over 1 MiB was accepted"),
    };
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(
        err.to_string().contains("larger than the limit of 1 MiB"),
        "{err}"
    );
}

#[test]
fn each_unknown_key_is_named_once_and_known_keys_listed_once() {
    let err = match load_with(
        &[("queue_url", QUEUE)],
        &[],
        Some("nope_a: 1\nnope_b: 2\nhttp_path: /ok\n"),
    ) {
        Err(e) => e,
        Ok(_) => panic!("unknown keys accepted"),
    };
    let text = err.to_string();
    assert_eq!(text.matches("nope_a").count(), 1, "{text}");
    assert_eq!(text.matches("nope_b").count(), 1, "{text}");
    assert_eq!(text.matches("known keys in the file").count(), 1, "{text}");
    assert_eq!(text.matches("http_connections").count(), 1, "{text}");

    // Thousands of unknown keys: a bounded message, not one list per key.
    let many: String = (0..20_000).map(|i| format!("unknown_{i}: {i}\n")).collect();
    let err = match load_with(&[("queue_url", QUEUE)], &[], Some(&many)) {
        Err(e) => e,
        Ok(_) => panic!("unknown keys accepted"),
    };
    let text = err.to_string();
    assert!(text.len() < 8 * 1024, "{} bytes of errors", text.len());
    assert_eq!(text.matches("known keys in the file").count(), 1, "{text}");
    assert!(text.contains("unknown_0"), "{text}");
    assert!(text.contains("19980 more unknown keys"), "{text}");

    // A huge key is quoted cut.
    let long = format!("{}: 1\n", "k".repeat(100_000));
    let err = match load_with(&[("queue_url", QUEUE)], &[], Some(&long)) {
        Err(e) => e,
        Ok(_) => panic!("unknown key accepted"),
    };
    assert!(err.to_string().len() < 4096, "{err}");
}

#[test]
fn visibility_lease_defaults_to_30s_and_takes_each_spelling() {
    let lease = |flags: &[(&str, &str)], env: &[(&str, &str)], file: Option<&str>| {
        let mut all = vec![("queue_url", QUEUE)];
        all.extend_from_slice(flags);
        match load_with(&all, env, file) {
            Ok(loaded) => loaded.config.visibility_lease,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(lease(&[], &[], None), 30);
    assert_eq!(lease(&[], &[], Some("visibility_lease: 90\n")), 90);
    assert_eq!(lease(&[], &[("SQSD_VISIBILITY_LEASE", "2m")], None), 120);
    assert_eq!(lease(&[("visibility_lease", "0")], &[], None), 0);
    assert_eq!(lease(&[("visibility_lease", "43200")], &[], None), 43200);
    // The flag beats the environment, which beats the file.
    assert_eq!(
        lease(
            &[("visibility_lease", "45s")],
            &[("SQSD_VISIBILITY_LEASE", "60")],
            Some("visibility_lease: 90\n")
        ),
        45
    );
}

#[test]
fn visibility_lease_out_of_range_or_fractional_is_refused() {
    for (text, needle) in [
        ("43201", "allowed 0s to 43200s"),
        ("1.5", "whole number of seconds"),
        ("1500ms", "whole number of seconds"),
        ("-1", ""),
        ("soon", ""),
    ] {
        let err = match load_with(
            &[("queue_url", QUEUE)],
            &[("SQSD_VISIBILITY_LEASE", text)],
            None,
        ) {
            Err(e) => e,
            Ok(loaded) => panic!("{text} accepted as {}", loaded.config.visibility_lease),
        };
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].setting, VISIBILITY_LEASE);
        assert_eq!(err.problems[0].source, Source::Env("SQSD_VISIBILITY_LEASE"));
        assert!(err.problems[0].message.contains(needle), "{text}: {err}");
    }
}

fn file_with(bytes: &[u8]) -> TempFile {
    let mut f = tempfile();
    f.1.write_all(bytes).unwrap();
    f
}

const KEY_A: &str = "a-signing-key-that-is-long-enough-0001";

const KEY_B: &str = "b-signing-key-that-is-long-enough-0002";

const KEY_C: &str = "c-signing-key-that-is-long-enough-0003";

#[test]
fn new_options_have_the_contract_defaults() {
    let c = load_with(&[("queue_url", QUEUE)], &[], None)
        .unwrap()
        .config;
    assert_eq!(c.visibility_lease, 30);
    assert_eq!(c.retry_backoff, RetryBackoff::Fixed);
    assert_eq!(c.max_error_visibility, 600);
    assert_eq!(c.health_url, None);
    assert_eq!(c.health_interval, Duration::from_secs(5));
    assert!(c.dead_letter_codes.is_empty());
    assert_eq!(c.max_rate, 0.0);
    assert_eq!(c.signing_key_file, None);
    assert!(c.signing_keys.is_empty());
    assert_eq!(c.app_token_file, None);
    assert_eq!(c.app_token, None);
    assert!(!c.sns_unwrap);
    assert!(!c.ecs_task_protection);
    assert_eq!(c.ecs_task_protection_minutes, 60);
    assert_eq!(c.queue_metrics_interval, Duration::from_secs(30));
    assert_eq!(c.eb_config, None);
    assert_eq!(c.cron_table_mode, CronTableMode::Standard);
    assert_eq!(c.app_probe_port, None);
}

/// One value per new option and what it must parse to.
/// An option, a value, and what the loaded configuration must then hold.
type OptionCase = (&'static str, &'static str, Box<dyn Fn(&Config) -> bool>);

fn new_option_cases() -> Vec<OptionCase> {
    vec![
        (
            VISIBILITY_LEASE,
            "90",
            Box::new(|c| c.visibility_lease == 90),
        ),
        (VISIBILITY_LEASE, "0", Box::new(|c| c.visibility_lease == 0)),
        (
            RETRY_BACKOFF,
            "exponential",
            Box::new(|c| c.retry_backoff == RetryBackoff::Exponential),
        ),
        (
            MAX_ERROR_VISIBILITY,
            "12h",
            Box::new(|c| c.max_error_visibility == 43200),
        ),
        (
            HEALTH_URL,
            "http://10.0.0.5:8081/ping",
            Box::new(|c| c.health_url.as_deref() == Some("http://10.0.0.5:8081/ping")),
        ),
        (
            HEALTH_INTERVAL,
            "100ms",
            Box::new(|c| c.health_interval == Duration::from_millis(100)),
        ),
        (
            DEAD_LETTER_CODES,
            "422,400,410,400",
            Box::new(|c| c.dead_letter_codes == [400, 410, 422]),
        ),
        (MAX_RATE, "12.5", Box::new(|c| c.max_rate == 12.5)),
        (SNS_UNWRAP, "true", Box::new(|c| c.sns_unwrap)),
        (
            ECS_TASK_PROTECTION,
            "false",
            Box::new(|c| !c.ecs_task_protection),
        ),
        (
            ECS_TASK_PROTECTION,
            "true",
            Box::new(|c| c.ecs_task_protection),
        ),
        (
            ECS_TASK_PROTECTION_MINUTES,
            "2880",
            Box::new(|c| c.ecs_task_protection_minutes == 2880),
        ),
        (
            QUEUE_METRICS_INTERVAL,
            "0",
            Box::new(|c| c.queue_metrics_interval.is_zero()),
        ),
        (
            QUEUE_METRICS_INTERVAL,
            "1h",
            Box::new(|c| c.queue_metrics_interval == Duration::from_secs(3600)),
        ),
        (
            CRON_TABLE_MODE,
            "standard",
            Box::new(|c| c.cron_table_mode == CronTableMode::Standard),
        ),
    ]
}

#[test]
fn new_options_take_all_three_spellings() {
    for (key, value, check) in new_option_cases() {
        let o = spec(key).unwrap();
        let by_flag = load_with(&[("queue_url", QUEUE), (key, value)], &[], None);
        let by_env = load_with(&[("queue_url", QUEUE)], &[(o.env, value)], None);
        let by_file = load_with(
            &[("queue_url", QUEUE)],
            &[],
            Some(&format!("{key}: {value:?}\n")),
        );
        for (how, loaded) in [("flag", by_flag), ("env", by_env), ("file", by_file)] {
            let loaded = loaded.unwrap_or_else(|e| panic!("{key}={value} by {how}: {e}"));
            assert!(check(&loaded.config), "{key}={value} by {how}");
        }
    }
}

#[test]
fn new_options_refuse_what_is_not_allowed() {
    let cases = [
        (VISIBILITY_LEASE, "43201", "allowed 0s to 43200s"),
        (VISIBILITY_LEASE, "1.5", "whole number of seconds"),
        (RETRY_BACKOFF, "linear", "fixed or exponential"),
        (MAX_ERROR_VISIBILITY, "0", "allowed 1s to 43200s"),
        (MAX_ERROR_VISIBILITY, "13h", "allowed 1s to 43200s"),
        (HEALTH_URL, "health", "a path on worker_url"),
        (HEALTH_URL, "ftp://host/x", "http:// or https://"),
        (HEALTH_URL, "http://u:p@host/x", "credentials"),
        (HEALTH_URL, "//evil/x", "not a path"),
        (HEALTH_INTERVAL, "50ms", "100ms to 1h"),
        (HEALTH_INTERVAL, "2h", "100ms to 1h"),
        (DEAD_LETTER_CODES, "400,abc", "not an HTTP status"),
        (DEAD_LETTER_CODES, "99", "not an HTTP status"),
        (DEAD_LETTER_CODES, "600", "not an HTTP status"),
        (DEAD_LETTER_CODES, "400,204", "application accepted"),
        (DEAD_LETTER_CODES, "429", "asked to retry"),
        (MAX_RATE, "-1", "0 (unlimited) to 100000"),
        (MAX_RATE, "100001", "0 (unlimited) to 100000"),
        (MAX_RATE, "NaN", "not a number"),
        (MAX_RATE, "inf", "not a number"),
        (SNS_UNWRAP, "maybe", "true or false"),
        (ECS_TASK_PROTECTION, "2", "true or false"),
        (ECS_TASK_PROTECTION_MINUTES, "0", "allowed 1 to 2880"),
        (ECS_TASK_PROTECTION_MINUTES, "2881", "allowed 1 to 2880"),
        (QUEUE_METRICS_INTERVAL, "500ms", "0 (never) or 1s to 1h"),
        (QUEUE_METRICS_INTERVAL, "2h", "0 (never) or 1s to 1h"),
        (CRON_TABLE_MODE, "fancy", "standard or eb"),
    ];
    for (key, value, needle) in cases {
        let err = load_with(&[("queue_url", QUEUE), (key, value)], &[], None)
            .err()
            .unwrap_or_else(|| panic!("{key}={value} accepted"));
        assert_eq!(err.problems.len(), 1, "{key}={value}: {err}");
        assert_eq!(err.problems[0].setting, key);
        assert!(
            err.problems[0].source == Source::Flag(spec(key).unwrap().flag),
            "{err}"
        );
        assert!(err.to_string().contains(needle), "{key}={value}: {err}");
    }
}

#[test]
fn health_url_path_is_joined_to_worker_url_keeping_its_base_path() {
    let c = load_with(
        &[
            ("queue_url", QUEUE),
            ("worker_url", "http://127.0.0.1:8080/app/"),
            ("health_url", "/healthz?deep=1"),
        ],
        &[],
        None,
    )
    .unwrap()
    .config;
    assert_eq!(
        c.health_url.as_deref(),
        Some("http://127.0.0.1:8080/app/healthz?deep=1")
    );
    let c = load_with(&[("queue_url", QUEUE), ("health_url", "/up")], &[], None)
        .unwrap()
        .config;
    assert_eq!(c.health_url.as_deref(), Some("http://localhost:80/up"));
}

#[test]
fn dead_letter_codes_take_a_yaml_list_or_nothing() {
    let c = load_with(
        &[("queue_url", QUEUE)],
        &[],
        Some("dead_letter_codes: [410, 400, 410]\n"),
    )
    .unwrap()
    .config;
    assert_eq!(c.dead_letter_codes, [400, 410]);
    let c = load_with(
        &[("queue_url", QUEUE)],
        &[],
        Some("dead_letter_codes: []\n"),
    )
    .unwrap()
    .config;
    assert!(c.dead_letter_codes.is_empty());
    let c = load_with(
        &[("queue_url", QUEUE), ("dead_letter_codes", "")],
        &[],
        None,
    )
    .unwrap()
    .config;
    assert!(c.dead_letter_codes.is_empty());
    let err = load_with(
        &[("queue_url", QUEUE)],
        &[],
        Some("dead_letter_codes: [400, [500]]\n"),
    )
    .err()
    .expect("nested list refused");
    assert_eq!(err.problems[0].setting, DEAD_LETTER_CODES);
}

#[test]
fn signing_keys_come_from_the_file_then_the_environment() {
    let file = file_with(format!("\n  {KEY_A}  \n\n{KEY_B}\r\n").as_bytes());
    let path = file.0.display().to_string();
    let c = load_with(
        &[("queue_url", QUEUE), ("signing_key_file", &path)],
        &[(SIGNING_KEY_ENV, &format!(" {KEY_C} ,"))],
        None,
    )
    .unwrap()
    .config;
    assert_eq!(
        c.signing_keys,
        [KEY_A.as_bytes(), KEY_B.as_bytes(), KEY_C.as_bytes()]
    );
    assert_eq!(c.signing_key_file.as_deref(), Some(file.0.as_path()));
    let only_env = load_with(&[("queue_url", QUEUE)], &[(SIGNING_KEY_ENV, KEY_A)], None)
        .unwrap()
        .config;
    assert_eq!(only_env.signing_keys, [KEY_A.as_bytes()]);
}

#[test]
fn bad_signing_keys_are_refused_without_showing_them() {
    let short = "short-secret-key";
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (format!("{KEY_A}\n{short}\n").into_bytes(), "line 2"),
        (b"\n   \n".to_vec(), "holds no key"),
        (
            (0..17)
                .map(|i| format!("{KEY_A}{i}\n"))
                .collect::<String>()
                .into_bytes(),
            "at most 16",
        ),
        (vec![b'k'; 64 * 1024 + 1], "larger than the limit of 64 KiB"),
    ];
    for (bytes, needle) in cases {
        let file = file_with(&bytes);
        let path = file.0.display().to_string();
        let err = load_with(
            &[("queue_url", QUEUE), ("signing_key_file", &path)],
            &[],
            None,
        )
        .err()
        .unwrap_or_else(|| panic!("{needle}: accepted"));
        let text = err.to_string();
        assert_eq!(err.problems[0].setting, SIGNING_KEY_FILE, "{text}");
        assert!(text.contains("flag --signing-key-file"), "{text}");
        assert!(text.contains(needle), "{needle} missing: {text}");
        assert!(!text.contains(short) && !text.contains(KEY_A), "{text}");
    }
    let err = load_with(
        &[
            ("queue_url", QUEUE),
            ("signing_key_file", "/nonexistent/keys"),
        ],
        &[],
        None,
    )
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("cannot read /nonexistent/keys"),
        "{err}"
    );
    let err = load_with(
        &[("queue_url", QUEUE)],
        &[(SIGNING_KEY_ENV, &format!("{KEY_A},{short}"))],
        None,
    )
    .err()
    .unwrap();
    let text = err.to_string();
    assert_eq!(err.problems[0].setting, SIGNING_KEY_ENV, "{text}");
    assert!(text.contains("key 2 is 16 bytes long"), "{text}");
    assert!(!text.contains(short), "{text}");
}

#[test]
fn sixteen_keys_in_all_at_most() {
    let file = file_with(
        (0..16)
            .map(|i| format!("{KEY_A}{i}\n"))
            .collect::<String>()
            .as_bytes(),
    );
    let path = file.0.display().to_string();
    let flags = [("queue_url", QUEUE), ("signing_key_file", path.as_str())];
    assert_eq!(
        load_with(&flags, &[], None)
            .unwrap()
            .config
            .signing_keys
            .len(),
        16
    );
    let err = load_with(&flags, &[(SIGNING_KEY_ENV, KEY_B)], None)
        .err()
        .expect("17 keys refused");
    assert!(err.to_string().contains("at most 16"), "{err}");
}

#[test]
fn reload_reads_the_key_file_again() {
    let file = file_with(KEY_A.as_bytes());
    let path = file.0.display().to_string();
    let config = load_with(
        &[("queue_url", QUEUE), ("signing_key_file", &path)],
        &[],
        None,
    )
    .unwrap()
    .config;
    std::fs::write(&file.0, format!("{KEY_B}\n{KEY_C}\n")).unwrap();
    let env = |name: &str| (name == SIGNING_KEY_ENV).then(|| KEY_A.to_string());
    let keys = reload_signing_keys(&config, &env).unwrap();
    assert_eq!(keys, [KEY_B.as_bytes(), KEY_C.as_bytes(), KEY_A.as_bytes()]);
    std::fs::write(&file.0, "too-short\n").unwrap();
    let err = reload_signing_keys(&config, &|_| None).expect_err("short key");
    assert!(!err.to_string().contains("too-short"), "{err}");
}

#[test]
fn app_token_is_read_trimmed_and_checked() {
    let file = file_with(b"  tok_3f9a-XYZ.1~  \n");
    let path = file.0.display().to_string();
    let c = load_with(
        &[("queue_url", QUEUE), ("app_token_file", &path)],
        &[],
        None,
    )
    .unwrap()
    .config;
    assert_eq!(c.app_token.as_deref(), Some("tok_3f9a-XYZ.1~"));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"secret part\n".to_vec(), "visible ASCII"),
        ("s\u{e9}cret".as_bytes().to_vec(), "visible ASCII"),
        (b" \n".to_vec(), "holds no token"),
        (vec![b't'; 8 * 1024 + 1], "larger than the limit of 8 KiB"),
    ];
    for (bytes, needle) in cases {
        let file = file_with(&bytes);
        let path = file.0.display().to_string();
        let err = load_with(
            &[("queue_url", QUEUE)],
            &[("SQSD_APP_TOKEN_FILE", &path)],
            None,
        )
        .err()
        .unwrap_or_else(|| panic!("{needle}: accepted"));
        let text = err.to_string();
        assert_eq!(err.problems[0].setting, APP_TOKEN_FILE, "{text}");
        assert!(text.contains("SQSD_APP_TOKEN_FILE"), "{text}");
        assert!(text.contains(needle), "{needle}: {text}");
        assert!(!text.contains("secret"), "{text}");
    }
}

#[test]
fn debug_output_hides_the_secrets() {
    let keys = file_with(KEY_A.as_bytes());
    let token = file_with(b"tok_very_private");
    let c = load_with(
        &[
            ("queue_url", QUEUE),
            ("signing_key_file", &keys.0.display().to_string()),
            ("app_token_file", &token.0.display().to_string()),
        ],
        &[],
        None,
    )
    .unwrap()
    .config;
    let shown = format!("{c:?}");
    assert!(
        shown.contains("(1 keys)") && shown.contains("(set)"),
        "{shown}"
    );
    assert!(
        !shown.contains(KEY_A) && !shown.contains("tok_very_private"),
        "{shown}"
    );
    // The bytes of the key are not shown either.
    assert!(
        !shown.contains(&format!("{:?}", KEY_A.as_bytes())[1..20]),
        "{shown}"
    );
}

/// EB's file as EB writes it to `/etc/aws-sqsd.d/default.yaml` (keys as seen
/// in its daemon; values made up).
const EB_FILE: &str = "---
http_connections: 10
http_port: 8080
verbose: false
inactivity_timeout: 1799
healthcheck: TCP:8081
environment_name: my-worker
queue_url: https://sqs.us-east-1.amazonaws.com/123456789012/awseb-e-abc-stack-AWSEBWorkerQueue-X
dynamodb_ssl: true
quiet: false
via_sns: true
retention_period: 604800
sqs_ssl: true
threads: 50
mime_type: text/plain
error_visibility_timeout: 7
debug: false
http_path: /work
sqs_verify_checksums: true
connect_timeout: 9
visibility_timeout: 1800
keepalive: true
";

fn eb_file(text: &str) -> TempFile {
    let mut f = tempfile();
    f.1.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn eb_config_is_mapped_under_every_other_layer() {
    let eb = eb_file(EB_FILE);
    let path = eb.0.display().to_string();
    let loaded = load_with(&[(EB_CONFIG, &path)], &[], None).unwrap();
    let c = &loaded.config;
    let from_eb = Source::EbConfig(eb.0.clone());
    assert_eq!(c.eb_config.as_deref(), Some(eb.0.as_path()));
    assert_eq!(
        c.queue_url,
        "https://sqs.us-east-1.amazonaws.com/123456789012/awseb-e-abc-stack-AWSEBWorkerQueue-X"
    );
    assert_eq!(c.worker_url, "http://localhost:8080");
    assert_eq!(c.http_path, "/work");
    assert_eq!(c.mime_type, "text/plain");
    assert_eq!(c.http_connections, 10);
    assert_eq!(c.connect_timeout, Duration::from_secs(9));
    assert_eq!(c.inactivity_timeout, Duration::from_secs(1799));
    assert_eq!(c.visibility_timeout, 1800);
    assert_eq!(c.error_visibility_timeout, 7);
    assert_eq!(c.retention_period, Duration::from_secs(604_800));
    assert!(c.sns_unwrap);
    assert_eq!(c.app_probe_port, Some(8081));
    assert_eq!(c.log_level, "info");
    for key in [
        QUEUE_URL,
        WORKER_URL,
        HTTP_PATH,
        SNS_UNWRAP,
        VISIBILITY_TIMEOUT,
    ] {
        assert_eq!(loaded.layers.get(key).unwrap().1, from_eb, "{key}");
    }
    assert_eq!(loaded.layers.app_probe_port_source(), Some(&from_eb));
    assert_eq!(
        loaded.layers.eb_ignored(),
        [
            "environment_name",
            "dynamodb_ssl",
            "quiet",
            "sqs_ssl",
            "threads",
            "sqs_verify_checksums",
            "keepalive"
        ]
    );

    // sqsd's own file, then the environment, then a flag override EB's.
    let own = format!("eb_config: {path}\nhttp_path: /own\nvisibility_timeout: 60\n");
    let loaded = load_with(
        &[("mime_type", "application/xml")],
        &[("SQSD_VISIBILITY_TIMEOUT", "90")],
        Some(&own),
    )
    .unwrap();
    let c = &loaded.config;
    assert_eq!(c.eb_config.as_deref(), Some(eb.0.as_path()));
    assert_eq!(c.http_path, "/own");
    assert!(matches!(
        loaded.layers.get(HTTP_PATH).unwrap().1,
        Source::File(_)
    ));
    assert_eq!(c.visibility_timeout, 90);
    assert_eq!(c.mime_type, "application/xml");
    assert_eq!(c.http_connections, 10);
    assert_eq!(loaded.layers.get(HTTP_CONNECTIONS).unwrap().1, from_eb);
}

#[test]
fn eb_config_in_json_as_get_config_prints_it() {
    let eb = eb_file(
        r#"{"http_port":"8000","healthcheck":"HTTP:8000/health","queue_url":"https://sqs.us-east-1.amazonaws.com/1/q","verbose":"true","threads":"50"}"#,
    );
    let path = eb.0.display().to_string();
    let c = load_with(&[], &[("SQSD_EB_CONFIG", &path)], None)
        .unwrap()
        .config;
    assert_eq!(c.worker_url, "http://localhost:8000");
    assert_eq!(
        c.health_url.as_deref(),
        Some("http://localhost:8000/health")
    );
    assert_eq!(c.app_probe_port, None);
    assert_eq!(c.log_level, "debug");
}

#[test]
fn a_bad_eb_value_names_the_key_and_the_file_unless_overridden() {
    let eb = eb_file("queue_url: https://sqs.us-east-1.amazonaws.com/1/q\nvisibility_timeout: forever\nhttp_port: 0\n");
    let path = eb.0.display().to_string();
    let err = match load_with(&[(EB_CONFIG, &path)], &[], None) {
        Err(e) => e,
        Ok(_) => panic!("accepted"),
    };
    let settings: Vec<&str> = err.problems.iter().map(|p| p.setting.as_str()).collect();
    assert!(settings.contains(&"visibility_timeout"), "{err}");
    assert!(settings.contains(&"http_port"), "{err}");
    assert!(err
        .problems
        .iter()
        .all(|p| p.source == Source::EbConfig(eb.0.clone())));
    assert!(
        err.to_string().contains(&format!("eb_config {path}")),
        "{err}"
    );
    // A drop-in override of both makes EB's bad values irrelevant.
    let c = load_with(
        &[
            (EB_CONFIG, &path),
            ("visibility_timeout", "30"),
            ("worker_url", "http://localhost:81"),
        ],
        &[],
        None,
    )
    .unwrap()
    .config;
    assert_eq!(c.visibility_timeout, 30);
    assert_eq!(c.worker_url, "http://localhost:81");
}

#[test]
fn eb_config_files_are_bounded_and_must_be_mappings() {
    for (text, says) in [
        ("- a\n- b\n".to_string(), "mapping"),
        ("queue_url: [".to_string(), "YAML"),
        (
            format!("x: {}{}\n", "[".repeat(100), "]".repeat(100)),
            "nested too deeply",
        ),
        ("x: 1\n".repeat(300_000), "larger than the limit"),
    ] {
        let eb = eb_file(&text);
        let path = eb.0.display().to_string();
        let err = match load_with(&[("queue_url", QUEUE), (EB_CONFIG, &path)], &[], None) {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        };
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].setting, EB_CONFIG);
        assert!(err.problems[0].message.contains(says), "{err}");
    }
    let err = match load_with(
        &[
            ("queue_url", QUEUE),
            (EB_CONFIG, "/nonexistent/default.yaml"),
        ],
        &[],
        None,
    ) {
        Err(e) => e,
        Ok(_) => panic!("accepted"),
    };
    assert_eq!(err.problems[0].source, Source::Flag("eb-config"), "{err}");
}

#[test]
fn eb_registry_table_selects_eb_mode_unless_a_layer_chooses() {
    let eb = eb_file("queue_url: https://sqs.us-east-1.amazonaws.com/1/q\nregistry_table: e-stack-AWSEBWorkerCronLeaderRegistry-1\n");
    let path = eb.0.display().to_string();
    let loaded = load_with(&[(EB_CONFIG, &path)], &[], None).unwrap();
    assert_eq!(
        loaded.config.cron_table.as_deref(),
        Some("e-stack-AWSEBWorkerCronLeaderRegistry-1")
    );
    assert_eq!(loaded.config.cron_table_mode, CronTableMode::Eb);
    assert_eq!(
        loaded.layers.get(CRON_TABLE_MODE).unwrap().1,
        Source::EbConfig(eb.0.clone())
    );
    // A table of sqsd's own, set in a higher layer, is standard mode.
    let c = load_with(
        &[(EB_CONFIG, &path), ("cron_table", "sqsd-cron")],
        &[],
        None,
    )
    .unwrap()
    .config;
    assert_eq!(c.cron_table.as_deref(), Some("sqsd-cron"));
    assert_eq!(c.cron_table_mode, CronTableMode::Standard);
    // An explicit mode wins.
    let c = load_with(
        &[(EB_CONFIG, &path), ("cron_table_mode", "standard")],
        &[],
        None,
    )
    .unwrap()
    .config;
    assert_eq!(c.cron_table_mode, CronTableMode::Standard);
}

#[test]
fn eb_probe_port_follows_eb_application_address_only() {
    let eb = eb_file("queue_url: https://sqs.us-east-1.amazonaws.com/1/q\nhttp_port: 80\nhealthcheck: TCP:8081\n");
    let path = eb.0.display().to_string();
    let c = load_with(&[(EB_CONFIG, &path)], &[], None).unwrap().config;
    assert_eq!(c.app_probe_port, Some(8081));
    let loaded = load_with(
        &[(EB_CONFIG, &path)],
        &[("SQSD_WORKER_URL", "http://127.0.0.1:9000")],
        None,
    )
    .unwrap();
    assert_eq!(loaded.config.app_probe_port, None);
    assert_eq!(loaded.layers.app_probe_port_source(), None);
}

#[test]
fn eb_mode_needs_a_table() {
    let err = match load_with(&[("queue_url", QUEUE), (CRON_TABLE_MODE, "eb")], &[], None) {
        Err(e) => e,
        Ok(_) => panic!("cron_table_mode eb without a table accepted"),
    };
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].setting, CRON_TABLE_MODE);
    assert!(err.problems[0].message.contains("cron_table"), "{err}");
    let c = load_with(
        &[
            ("queue_url", QUEUE),
            (CRON_TABLE_MODE, "eb"),
            (CRON_TABLE, "t-stack-AWSEBWorkerCronLeaderRegistry-1"),
        ],
        &[],
        None,
    )
    .unwrap()
    .config;
    assert_eq!(c.cron_table_mode, CronTableMode::Eb);
}

#[test]
fn a_signing_key_variable_holding_no_key_is_refused() {
    for value in [",", " , ,,"] {
        let err = match load_with(
            &[("queue_url", QUEUE)],
            &[("SQSD_SIGNING_KEY", value)],
            None,
        ) {
            Err(e) => e,
            Ok(loaded) => panic!(
                "{value:?} accepted with {} keys",
                loaded.config.signing_keys.len()
            ),
        };
        assert!(err.to_string().contains("holds no key"), "{err}");
    }
}
