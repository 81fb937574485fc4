//! Configuration errors, `check-config`, `--help`, queue checks at start and
//! `healthcheck`, all through the real binary.

mod common;

use std::time::Duration;

use common::app::App;
use common::{base_args, run_to_end, Daemon, TestQueue};

const Q: &str = "http://sqs.us-east-1.localhost.localstack.cloud:4566/000000000000/q";

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("sqsd-{}-{name}", fastrand::u64(..)));
    std::fs::write(&path, text).expect("write temp file");
    path
}

/// Flags, environment, and what the error must name.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn each_kind_of_bad_setting_exits_64_and_names_it() {
    let cases: &[Case] = &[
        (&["--http-connections", "0"], &[], "http_connections"),
        (&["--http-connections", "many"], &[], "http_connections"),
        (
            &["--visibility-timeout", "43201"],
            &[],
            "visibility_timeout",
        ),
        (&["--connect-timeout", "0"], &[], "connect_timeout"),
        (&["--http-path", "jobs"], &[], "http_path"),
        (&["--worker-url", "ftp://host"], &[], "worker_url"),
        (&["--success-codes", "3xx"], &[], "success_codes"),
        (&["--retention-period", "10"], &[], "retention_period"),
        (&["--max-retries", "101"], &[], "max_retries"),
        (&["--log-format", "xml"], &[], "log_format"),
        (
            &[],
            &[("SQSD_ERROR_VISIBILITY_TIMEOUT", "-3")],
            "SQSD_ERROR_VISIBILITY_TIMEOUT",
        ),
        (
            &[],
            &[("SQSD_INACTIVITY_TIMEOUT", "forever")],
            "SQSD_INACTIVITY_TIMEOUT",
        ),
    ];
    for (flags, env, needle) in cases {
        let mut args = vec!["--queue-url", Q];
        args.extend_from_slice(flags);
        let (code, _, err) = run_to_end(&args, env);
        assert_eq!(code, 64, "{flags:?} {env:?}: {err}");
        assert!(err.contains(needle), "{needle} not named in: {err}");
    }
}

#[test]
fn several_bad_settings_are_reported_at_once_with_sources() {
    let file = temp_file(
        "bad.yaml",
        "http_connections: 5000\nno_such_option: 1\nhttp_path: /ok\n",
    );
    let (code, _, err) = run_to_end(
        &[
            "--config",
            file.to_str().unwrap(),
            "--worker-url",
            "not a url",
        ],
        &[("SQSD_MIME_TYPE", "nonsense")],
    );
    assert_eq!(code, 64, "{err}");
    for needle in [
        "queue_url",
        "http_connections",
        "no_such_option",
        "unknown key",
        "worker_url",
        "flag --worker-url",
        "mime_type",
        "environment variable SQSD_MIME_TYPE",
        file.to_str().unwrap(),
    ] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
    let _ = std::fs::remove_file(file);
}

/// How a bounded run ended: exit code (None if it had to be killed at the
/// deadline), how long it took, and the first bytes of its output.
struct Bounded {
    code: Option<i32>,
    took: Duration,
    stderr: String,
    stderr_bytes: u64,
    stdout_bytes: u64,
}

/// Runs sqsd with output to files and kills it at `deadline`, so a run that
/// would hang or flood cannot take the test down with it.
fn run_bounded(args: &[&str], deadline: Duration) -> Bounded {
    let dir = std::env::temp_dir();
    let tag = fastrand::u64(..);
    let out_path = dir.join(format!("sqsd-{tag}.out"));
    let err_path = dir.join(format!("sqsd-{tag}.err"));
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut cmd = common::sqsd_command(&args);
    cmd.stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    let started = std::time::Instant::now();
    let mut child = cmd.spawn().expect("run sqsd");
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for sqsd") {
            break status.code();
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (stdout_bytes, stderr_bytes) = (size(&out_path), size(&err_path));
    let mut head = Vec::new();
    if let Ok(f) = std::fs::File::open(&err_path) {
        use std::io::Read;
        let _ = f.take(16 * 1024).read_to_end(&mut head);
    }
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    Bounded {
        code,
        took,
        stderr: String::from_utf8_lossy(&head).into_owned(),
        stderr_bytes,
        stdout_bytes,
    }
}

/// Generous for 12 test threads on 2 cores; the refusals take milliseconds.
const QUICK: Duration = Duration::from_secs(10);

/// Exit 64 within [`QUICK`], one short message naming `needle`.
fn assert_refused_quickly(run: &Bounded, needle: &str) {
    assert_eq!(
        run.code,
        Some(64),
        "exit {:?} after {:?}: {}",
        run.code,
        run.took,
        run.stderr
    );
    assert!(run.took < QUICK, "took {:?}", run.took);
    assert!(
        run.stderr_bytes < 8 * 1024 && run.stdout_bytes < 8 * 1024,
        "{} bytes on stderr, {} on stdout",
        run.stderr_bytes,
        run.stdout_bytes
    );
    assert!(
        run.stderr.contains(needle),
        "{needle:?} missing: {}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("invalid configuration").count(),
        1,
        "{}",
        run.stderr
    );
}

#[test]
fn deeply_nested_config_exits_64_quickly() {
    let flow = temp_file("deep-flow.yaml", &format!("x: {}", "[".repeat(100_000)));
    let dashes = temp_file(
        "deep-seq.yaml",
        &format!("x:\n  {}1\n", "- ".repeat(100_000)),
    );
    for file in [flow, dashes] {
        let run = run_bounded(
            &[
                "check-config",
                "--queue-url",
                Q,
                "--config",
                file.to_str().unwrap(),
            ],
            QUICK * 2,
        );
        assert_refused_quickly(&run, "nested too deeply");
        let _ = std::fs::remove_file(file);
    }
}

#[test]
fn config_file_over_one_mib_exits_64_quickly() {
    // Valid YAML that sqsd would otherwise accept: only its size is wrong.
    let mut text = String::from("http_path: /big\n");
    while text.len() <= 2 * 1024 * 1024 {
        text.push_str("# this comment only makes the file large, nothing else\n");
    }
    let file = temp_file("big.yaml", &text);
    let run = run_bounded(
        &[
            "check-config",
            "--queue-url",
            Q,
            "--config",
            file.to_str().unwrap(),
        ],
        QUICK * 2,
    );
    assert_refused_quickly(&run, "larger than the limit of 1 MiB");
    let _ = std::fs::remove_file(file);
}

#[test]
fn endless_config_input_stops_at_the_cap() {
    let run = run_bounded(
        &["check-config", "--queue-url", Q, "--config", "/dev/zero"],
        QUICK * 2,
    );
    assert_refused_quickly(&run, "larger than the limit of 1 MiB");

    // A FIFO whose writer never stops: sqsd reads 1 MiB and one byte, then
    // closes it, and the writer sees the pipe break.
    let fifo = std::env::temp_dir().join(format!("sqsd-{}.fifo", fastrand::u64(..)));
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || -> u64 {
        use std::io::Write;
        let Ok(mut pipe) = std::fs::OpenOptions::new().write(true).open(&writer_path) else {
            return 0;
        };
        let chunk = [b'#'; 64 * 1024];
        let mut written = 0u64;
        // Ends when the reader closes; the cap keeps it from looping on.
        while written < 256 * 1024 * 1024 {
            match pipe.write(&chunk) {
                Ok(n) => written += n as u64,
                Err(_) => break,
            }
        }
        written
    });
    let run = run_bounded(
        &[
            "check-config",
            "--queue-url",
            Q,
            "--config",
            fifo.to_str().unwrap(),
        ],
        QUICK * 2,
    );
    assert_refused_quickly(&run, "larger than the limit of 1 MiB");
    let written = writer.join().expect("writer thread");
    assert!(written < 16 * 1024 * 1024, "sqsd took {written} bytes");
    let _ = std::fs::remove_file(fifo);
}

#[test]
fn many_unknown_keys_give_one_bounded_message() {
    let text: String = (0..30_000)
        .map(|i| format!("no_such_key_{i}: 1\n"))
        .collect();
    assert!(text.len() < 1024 * 1024);
    let file = temp_file("unknown.yaml", &text);
    let run = run_bounded(
        &[
            "check-config",
            "--queue-url",
            Q,
            "--config",
            file.to_str().unwrap(),
        ],
        QUICK * 2,
    );
    assert_refused_quickly(&run, "no_such_key_0 ");
    assert_eq!(
        run.stderr.matches("no_such_key_0 ").count(),
        1,
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("known keys in the file").count(),
        1,
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("http_connections").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("29980 more unknown keys"),
        "{}",
        run.stderr
    );
    let _ = std::fs::remove_file(file);
}

#[test]
fn unknown_flag_exits_64() {
    let (code, _, err) = run_to_end(&["--queue-url", Q, "--bogus", "1"], &[]);
    assert_eq!(code, 64, "{err}");
}

#[test]
fn check_config_prints_effective_values_and_sources() {
    let file = temp_file("ok.yaml", "http_path: /from-file\nhttp_connections: 7\n");
    let (code, out, err) = run_to_end(
        &[
            "check-config",
            "--config",
            file.to_str().unwrap(),
            "--http-connections",
            "9",
        ],
        &[("SQSD_QUEUE_URL", Q)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("http_path: \"/from-file\"  # file"), "{out}");
    assert!(
        out.contains("http_connections: \"9\"  # flag --http-connections"),
        "{out}"
    );
    assert!(out.contains("queue_url:") && out.contains("environment variable SQSD_QUEUE_URL"));
    assert!(
        out.contains("visibility_timeout: \"300s\"  # default"),
        "{out}"
    );
    let _ = std::fs::remove_file(file);
}

#[test]
fn help_lists_every_option_with_variable_and_default() {
    let (code, out, _) = run_to_end(&["--help"], &[]);
    assert_eq!(code, 0);
    for needle in [
        "--queue-url",
        "SQSD_QUEUE_URL",
        "--http-connections",
        "[default: 50]",
        "--error-visibility-timeout",
        "[default: 2s]",
        "SQSD_CONFIG",
        "check-config",
        "healthcheck",
    ] {
        assert!(out.contains(needle), "{needle} missing from --help:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_queue_is_one_clear_line_and_exit_64() {
    let url = format!(
        "{}/000000000000/does-not-exist-{:x}",
        common::endpoint(),
        fastrand::u32(..)
    );
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        run_to_end(&["--queue-url", &url, "--admin-addr", "127.0.0.1:0"], &[])
    })
    .await
    .unwrap();
    assert_eq!(code, 64, "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("does-not-exist"))
        .expect("queue named");
    assert!(line.contains("cannot be used"), "{line}");
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn warns_without_redrive_policy() {
    let queue = TestQueue::new("noredrive").await;
    let d = Daemon::start(base_args(&queue, "http://127.0.0.1:9")).await;
    d.wait_log("no redrive policy", Duration::from_secs(20))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn warns_when_max_receive_count_differs_and_not_when_it_matches() {
    let (queue, _dlq) = TestQueue::with_redrive("mrc5", 5).await;
    let d = Daemon::start(base_args(&queue, "http://127.0.0.1:9")).await;
    d.wait_log("differs from max_retries", Duration::from_secs(20))
        .await;

    let mut args = base_args(&queue, "http://127.0.0.1:9");
    args.extend(["--max-retries".into(), "5".into()]);
    let d = Daemon::start(args).await;
    d.wait_log("sqsd started", Duration::from_secs(20)).await;
    assert!(d.find_log("redrive policy").is_none(), "{}", d.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn config_file_drives_the_daemon() {
    let queue = TestQueue::new("fromfile").await;
    let app = App::ok().await;
    let file = temp_file(
        "run.yaml",
        &format!(
            "queue_url: {}\nworker_url: {}\nhttp_path: /from-file\nadmin_addr: 127.0.0.1:0\n",
            queue.url,
            app.url()
        ),
    );
    queue.send("x").await;
    let _d = Daemon::start(vec!["--config".into(), file.display().to_string()]).await;
    let seen = app.wait_requests(1, Duration::from_secs(30)).await;
    assert_eq!(seen[0].target, "/from-file");
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_command_reports_a_running_daemon() {
    let queue = TestQueue::new("health").await;
    let d = Daemon::start(base_args(&queue, "http://127.0.0.1:9")).await;
    let admin = d.admin.clone().unwrap();
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        run_to_end(&["healthcheck", "--admin-addr", &admin], &[])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    drop(d);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let (code, _, _) = run_to_end(&["healthcheck", "--admin-addr", &closed], &[]);
    assert_eq!(code, 1);

    // In a container the admin listener is on every address and the health
    // check finds it through the same environment as the daemon.
    let mut args = base_args(&queue, "http://127.0.0.1:9");
    let at = args.iter().position(|a| a == "--admin-addr").unwrap();
    args[at + 1] = "0.0.0.0:0".into();
    let d = Daemon::start(args).await;
    let port = d
        .admin
        .clone()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let everywhere = format!("0.0.0.0:{port}");
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        run_to_end(
            &["healthcheck"],
            &[("SQSD_ADMIN_ADDR", everywhere.as_str())],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_endpoint_needs_no_credentials_or_region() {
    let queue = TestQueue::new("nocreds").await;
    let app = App::ok().await;
    let id = queue.send("x").await;
    let mut cmd = common::sqsd_command(&base_args(&queue, &app.url()));
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_REGION")
        .env("HOME", "/nonexistent");
    let d = Daemon::start_with(cmd).await;
    let seen = app.wait_requests(1, Duration::from_secs(30)).await;
    assert_eq!(seen[0].msgid(), id);
    assert!(
        d.find_log("signing with placeholders").is_some(),
        "{}",
        d.log_text()
    );
}

#[test]
fn visibility_lease_in_each_spelling_help_and_check_config() {
    let (code, out, _) = run_to_end(&["--help"], &[]);
    assert_eq!(code, 0);
    for needle in [
        "--visibility-lease",
        "SQSD_VISIBILITY_LEASE",
        "[default: 30s]",
    ] {
        assert!(out.contains(needle), "{needle} missing from --help:\n{out}");
    }

    let file = temp_file("lease.yaml", "visibility_lease: 90\n");
    let path = file.to_str().unwrap();
    let cases: &[Case] = &[
        (&[], &[], "visibility_lease: \"30s\"  # default"),
        (&["--config", path], &[], "visibility_lease: \"90\"  # file"),
        (
            &["--config", path],
            &[("SQSD_VISIBILITY_LEASE", "2m")],
            "visibility_lease: \"2m\"  # environment variable SQSD_VISIBILITY_LEASE",
        ),
        (
            &["--config", path, "--visibility-lease", "0"],
            &[("SQSD_VISIBILITY_LEASE", "2m")],
            "visibility_lease: \"0\"  # flag --visibility-lease",
        ),
    ];
    for (flags, env, line) in cases {
        let mut args = vec!["check-config", "--queue-url", Q];
        args.extend_from_slice(flags);
        let (code, out, err) = run_to_end(&args, env);
        assert_eq!(code, 0, "{flags:?} {env:?}: {err}");
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }
    let _ = std::fs::remove_file(file);

    let refused: &[Case] = &[
        (
            &["--visibility-lease", "43201"],
            &[],
            "flag --visibility-lease",
        ),
        (
            &[],
            &[("SQSD_VISIBILITY_LEASE", "1.5")],
            "environment variable SQSD_VISIBILITY_LEASE",
        ),
    ];
    for (flags, env, source) in refused {
        let mut args = vec!["check-config", "--queue-url", Q];
        args.extend_from_slice(flags);
        let (code, _, err) = run_to_end(&args, env);
        assert_eq!(code, 64, "{flags:?} {env:?}: {err}");
        assert!(
            err.contains("visibility_lease") && err.contains(source),
            "{err}"
        );
        assert!(
            err.contains("43200s") || err.contains("whole number"),
            "{err}"
        );
    }
}

/// EB's daemon configuration as EB writes it to `/etc/aws-sqsd.d/default.yaml`
/// (keys as in its daemon), for `queue_url` and the application at `port`.
fn eb_default_yaml(queue_url: &str, port: u16) -> String {
    format!(
        "---\nhttp_connections: 10\nhttp_port: {port}\nverbose: true\ninactivity_timeout: 299\n\
         healthcheck: TCP:{port}\nenvironment_name: my-worker\nqueue_url: {queue_url}\n\
         dynamodb_ssl: true\nquiet: false\nvia_sns: false\nretention_period: 345600\n\
         sqs_ssl: true\nthreads: 50\nmime_type: application/json\nerror_visibility_timeout: 2\n\
         debug: false\nhttp_path: /eb-path\nsqs_verify_checksums: true\nconnect_timeout: 5\n\
         visibility_timeout: 300\nkeepalive: true\n"
    )
}

#[test]
fn check_config_shows_eb_config_values_under_sqsds_file_and_flags() {
    let eb = temp_file("eb-default.yaml", &eb_default_yaml(Q, 8080));
    let eb_json = temp_file(
        "eb-default.json",
        &format!(
            r#"{{"queue_url":"{Q}","http_port":"8080","http_path":"/eb-path","http_connections":"10","threads":"50"}}"#
        ),
    );
    for (eb, has_tcp_check) in [(&eb, true), (&eb_json, false)] {
        let eb_path = eb.to_str().unwrap();
        let own = temp_file(
            "own.yaml",
            &format!("eb_config: {eb_path}\nhttp_path: /own\n"),
        );
        let (code, out, err) = run_to_end(
            &[
                "check-config",
                "--config",
                own.to_str().unwrap(),
                "--http-connections",
                "12",
            ],
            &[],
        );
        assert_eq!(code, 0, "{err}");
        let from_eb = format!("# eb_config {eb_path}");
        assert!(
            out.contains(&format!("queue_url: \"{Q}\"  {from_eb}")),
            "{out}"
        );
        assert!(
            out.contains(&format!("worker_url: \"http://localhost:8080\"  {from_eb}")),
            "{out}"
        );
        assert!(out.contains("http_path: \"/own\"  # file"), "{out}");
        assert!(
            out.contains("http_connections: \"12\"  # flag --http-connections"),
            "{out}"
        );
        assert!(out.contains("threads"), "ignored keys not listed: {out}");
        if has_tcp_check {
            assert!(
                out.contains(&format!("app_probe_port: 8080  {from_eb}")),
                "{out}"
            );
        } else {
            assert!(out.contains("app_probe_port: ~  # not set"), "{out}");
        }
        let _ = std::fs::remove_file(own);
    }
    let _ = std::fs::remove_file(eb);
    let _ = std::fs::remove_file(eb_json);
}

#[test]
fn malformed_eb_config_exits_64_naming_the_key() {
    let cases = [
        ("http_port: eighty\n", "http_port"),
        ("healthcheck: ICMP:80\n", "healthcheck"),
        ("visibility_timeout: [1, 2]\n", "visibility_timeout"),
        ("- not\n- a mapping\n", "eb_config"),
    ];
    for (text, key) in cases {
        let eb = temp_file("eb-bad.yaml", &format!("queue_url: {Q}\n{text}"));
        let eb_path = eb.to_str().unwrap();
        let run = run_bounded(&["check-config", "--eb-config", eb_path], QUICK * 2);
        assert_refused_quickly(&run, &format!("{key} (from eb_config {eb_path})"));
        let _ = std::fs::remove_file(eb);
    }
    let deep = temp_file("eb-deep.yaml", &format!("x: {}", "[".repeat(100_000)));
    let run = run_bounded(
        &["check-config", "--eb-config", deep.to_str().unwrap()],
        QUICK * 2,
    );
    assert_refused_quickly(&run, "nested too deeply");
    let _ = std::fs::remove_file(deep);
}

#[tokio::test(flavor = "multi_thread")]
async fn eb_config_drives_the_daemon() {
    let queue = TestQueue::new("ebconfig").await;
    let app = App::ok().await;
    let port: u16 = app
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("app port");
    let eb = temp_file("eb-run.yaml", &eb_default_yaml(&queue.url, port));
    queue.send("from-eb").await;
    // Only EB's file and the admin port (EB's file has no such key).
    let d = Daemon::start(vec![
        "--eb-config".into(),
        eb.display().to_string(),
        "--admin-addr".into(),
        "127.0.0.1:0".into(),
    ])
    .await;
    let seen = app.wait_requests(1, Duration::from_secs(30)).await;
    assert_eq!(seen[0].target, "/eb-path");
    // `verbose: true` turned debug on, and the keys sqsd ignores are said
    // once.
    let line = d
        .wait_log("without a meaning for sqsd", Duration::from_secs(10))
        .await;
    assert!(
        line.contains("threads") && line.contains("keepalive"),
        "{line}"
    );
    assert_eq!(
        d.logs()
            .iter()
            .filter(|l| l.contains("without a meaning for sqsd"))
            .count(),
        1
    );
    let _ = std::fs::remove_file(eb);
}
