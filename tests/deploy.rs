//! What can be checked of `deploy/` and the `Dockerfile` without a Docker
//! engine or a cloud account: each file against its tool's validator, the
//! IAM policy against the SDK calls in the code, and the local compose
//! environment rehearsed on the host (its init script, its example worker
//! and sqsd with its settings, against the suite's SQS endpoint).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, Daemon, TestQueue};
use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn yaml(rel: &str) -> Yaml {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
}

fn json(rel: &str) -> Json {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
}

/// A checker installed by `scripts/test-env.sh` into the tools environment.
fn tool(name: &str) -> PathBuf {
    let dir = std::env::var("SQSD_TEST_TOOLS").unwrap_or_else(|_| {
        panic!("SQSD_TEST_TOOLS is not set: run the suite with scripts/test.sh")
    });
    Path::new(&dir).join(name)
}

/// Runs a command; its exit code and everything it printed.
fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Seconds of a duration written as sqsd accepts it (`30`, `30s`, `2m`).
fn seconds(text: &str) -> u64 {
    let t = text.trim();
    let (n, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("duration {text:?}"));
    match unit {
        "" | "s" => n,
        "m" => n * 60,
        other => panic!("unit {other:?} in {text:?}"),
    }
}

const DEFAULT_DRAIN_S: u64 = 30;

// ---------------------------------------------------------------- Dockerfile

#[test]
fn dockerfile_lints_clean_and_builds_with_the_release_command() {
    let (code, out) = run(Command::new(tool("hadolint")).arg(repo().join("Dockerfile")));
    assert_eq!(code, 0, "hadolint:\n{out}");
    assert!(out.trim().is_empty(), "hadolint:\n{out}");

    let text = read("Dockerfile");
    // Same build command as scripts/test.sh's last step.
    assert!(text.contains("cargo build --release --locked"), "{text}");
    assert!(read("scripts/test.sh").contains("cargo build --locked --release"));
    let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "multi-stage: {stages:?}");
    assert_eq!(
        stages[1], "FROM scratch",
        "the final image holds only the binary"
    );
    let last_stage = &text[text.rfind("FROM scratch").unwrap()..];
    for needed in [
        "COPY --from=build /sqsd /usr/local/bin/sqsd",
        "ca-certificates.crt",
        "USER 65532:65532",
        "STOPSIGNAL SIGTERM",
        "CMD [\"/usr/local/bin/sqsd\", \"healthcheck\"]",
        "ENTRYPOINT [\"/usr/local/bin/sqsd\"]",
        "SQSD_ADMIN_ADDR=0.0.0.0:9191",
    ] {
        assert!(last_stage.contains(needed), "final stage lacks {needed:?}");
    }
    let ignore = read(".dockerignore");
    for excluded in ["target/", ".test-env/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l == excluded),
            ".dockerignore lacks {excluded}"
        );
    }
    // Everything the build copies exists and is not ignored.
    for copied in ["Cargo.toml", "Cargo.lock", "src", "bench"] {
        assert!(repo().join(copied).exists(), "{copied}");
        assert!(!ignore.lines().any(|l| l.trim_end_matches('/') == copied));
    }
}

// ------------------------------------------------------------------- systemd

#[test]
fn systemd_unit_verifies_and_outlasts_the_drain() {
    let unit = read("deploy/systemd/sqsd.service");
    // systemd-analyze checks that ExecStart exists: point it at this build.
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("unit-{:08x}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("sqsd.service");
    let exec = "ExecStart=/usr/local/bin/sqsd";
    assert!(unit.contains(exec));
    std::fs::write(
        &copy,
        unit.replace(exec, &format!("ExecStart={}", env!("CARGO_BIN_EXE_sqsd"))),
    )
    .unwrap();
    let (code, out) = run(Command::new("systemd-analyze").arg("verify").arg(&copy));
    assert_eq!(code, 0, "systemd-analyze verify:\n{out}");
    // It exits 0 even for unknown keys or bad values; it must say nothing.
    assert!(out.trim().is_empty(), "systemd-analyze verify:\n{out}");

    let directives: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let value = |key: &str| -> Vec<&str> {
        directives
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .collect()
    };
    for (key, wanted) in [
        ("Restart", "on-failure"),
        ("User", "sqsd"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("StandardError", "journal"),
        ("Environment", "SQSD_CONFIG=/etc/sqsd/config.yaml"),
        ("EnvironmentFile", "-/etc/sqsd/sqsd.env"),
        ("RestartPreventExitStatus", "64"),
    ] {
        assert!(value(key).contains(&wanted), "{key}={wanted} missing");
    }
    let sysusers = read("deploy/systemd/sqsd.sysusers");
    assert!(
        sysusers.lines().any(|l| l.starts_with("u sqsd ")),
        "the unit's user is declared"
    );

    // The shipped configuration is valid, and stop waits longer than its drain.
    let config = repo().join("deploy/systemd/config.yaml");
    let (code, _, err) = common::run_to_end(
        &["check-config"],
        &[("SQSD_CONFIG", config.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{err}");
    let drain = yaml("deploy/systemd/config.yaml")["drain_timeout"]
        .as_str()
        .map(seconds)
        .unwrap_or(DEFAULT_DRAIN_S);
    let stop = seconds(value("TimeoutStopSec")[0]);
    assert!(
        stop > drain,
        "TimeoutStopSec {stop} s must exceed drain_timeout {drain} s"
    );
}

// ----------------------------------------------------------------------- IAM

/// `snake_case` operation names of an SDK crate, from its `operation` modules.
fn sdk_operations(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let (code, out) = run(Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        // Only the packages built here (the others may not be downloaded).
        .args(["--filter-platform", host_target()])
        .current_dir(repo()));
    assert_eq!(code, 0, "cargo metadata: {out}");
    let start = out.find('{').expect("metadata JSON");
    let meta: Json = serde_json::Deserializer::from_str(&out[start..])
        .into_iter()
        .next()
        .expect("metadata")
        .expect("metadata JSON");
    let manifest = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .unwrap_or_else(|| panic!("{package} not in the dependency graph"))["manifest_path"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = Path::new(&manifest).parent().unwrap().join("src/operation");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn host_target() -> &'static str {
    if cfg!(all(
        target_arch = "x86_64",
        target_os = "linux",
        target_env = "gnu"
    )) {
        "x86_64-unknown-linux-gnu"
    } else if cfg!(all(
        target_arch = "aarch64",
        target_os = "linux",
        target_env = "gnu"
    )) {
        "aarch64-unknown-linux-gnu"
    } else {
        panic!("add this platform's target triple")
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            // The embedded SQS endpoint answers these calls; it does not make them.
            if path.file_name().is_some_and(|n| n == "sqs_server") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn iam_policy_names_exactly_the_calls_the_daemon_makes() {
    let sqs_ops = sdk_operations("aws-sdk-sqs");
    let dynamodb_ops = sdk_operations("aws-sdk-dynamodb");
    assert!(sqs_ops.contains("receive_message") && dynamodb_ops.contains("put_item"));
    let mut files = Vec::new();
    rust_files(&repo().join("src"), &mut files);
    let mut called = BTreeSet::new();
    // The calls made on the dead-letter queue, which has a statement of its own.
    let mut dead_letter_calls = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let on_dead_letter_queue = file.ends_with("src/aws/dead_letter.rs");
        for (ops, service) in [(&sqs_ops, "sqs"), (&dynamodb_ops, "dynamodb")] {
            for op in ops.iter() {
                // An SDK call, or one made directly in the JSON protocol
                // (`X-Amz-Target: AmazonSQS.<Operation>`).
                let sdk_call = text.contains(&format!(".{op}()"));
                let direct =
                    service == "sqs" && text.contains(&format!("\"AmazonSQS.{}\"", pascal(op)));
                if sdk_call || direct {
                    // SQS authorizes a batch call with its single action.
                    let action = pascal(op);
                    let action = match service {
                        "sqs" => action.trim_end_matches("Batch").to_string(),
                        _ => action,
                    };
                    if on_dead_letter_queue {
                        dead_letter_calls.insert(format!("{service}:{action}"));
                    }
                    called.insert(format!("{service}:{action}"));
                }
            }
        }
    }
    assert!(called.contains("sqs:ReceiveMessage"), "{called:?}");
    assert!(
        dead_letter_calls.contains("sqs:SendMessage"),
        "{dead_letter_calls:?}"
    );

    let policy = json("deploy/iam/sqsd-policy.json");
    assert_eq!(policy["Version"], "2012-10-17");
    let mut granted = BTreeSet::new();
    let mut resources = BTreeSet::new();
    for statement in policy["Statement"].as_array().unwrap() {
        if statement["Sid"] == "DeadLetterQueue" {
            let on_dlq: BTreeSet<String> = statement["Action"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            assert_eq!(
                on_dlq, dead_letter_calls,
                "dead-letter queue statement vs the calls of src/aws/dead_letter.rs"
            );
        }
        if statement["Sid"] == "WorkerQueue" || statement["Sid"] == "DeadLetterQueue" {
            resources.insert(statement["Resource"].as_str().unwrap().to_string());
        }
        assert_eq!(statement["Effect"], "Allow");
        let resource = statement["Resource"]
            .as_str()
            .expect("one resource per statement");
        assert!(!resource.contains('*'), "no wildcard resources: {resource}");
        for action in statement["Action"].as_array().unwrap() {
            let action = action.as_str().unwrap();
            assert!(!action.contains('*'), "no wildcard actions: {action}");
            let service = action.split(':').next().unwrap();
            let expected_prefix = match service {
                "sqs" => "arn:aws:sqs:",
                "dynamodb" => "arn:aws:dynamodb:",
                other => panic!("unexpected service {other}"),
            };
            assert!(
                resource.starts_with(expected_prefix),
                "{action} on {resource}"
            );
            granted.insert(action.to_string());
        }
    }
    assert_eq!(granted, called, "policy actions vs SDK calls in src/");
    // cron_table_mode eb runs under Elastic Beanstalk's worker-tier role,
    // which allows these item actions on its leader registry and nothing
    // else (tests/periodic.rs checks the calls made in that mode too).
    let eb_role: BTreeSet<&str> = [
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
        "dynamodb:Scan",
        "dynamodb:BatchGetItem",
        "dynamodb:BatchWriteItem",
    ]
    .into();
    let eb_statement = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "ElasticBeanstalkLeaderRegistry")
        .expect("a statement for cron_table_mode eb");
    for action in eb_statement["Action"].as_array().unwrap() {
        let action = action.as_str().unwrap();
        assert!(
            eb_role.contains(action),
            "{action} is not allowed to EB's role"
        );
    }
    assert_eq!(
        resources.len(),
        2,
        "a worker queue statement and a dead-letter queue statement, on two queues"
    );
}

// ----------------------------------------------------------------------- ECS

#[test]
fn ecs_task_definition_matches_the_ecs_api_and_drains() {
    let file = repo().join("deploy/ecs/task-definition.json");
    let (code, out) = run(Command::new(tool("python"))
        .arg(repo().join("tests/deploy/check_ecs.py"))
        .arg(&file));
    assert_eq!(code, 0, "RegisterTaskDefinition shape:\n{out}");

    let def = json("deploy/ecs/task-definition.json");
    let containers = def["containerDefinitions"].as_array().unwrap();
    let by_name = |n: &str| {
        containers
            .iter()
            .find(|c| c["name"] == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    let app = by_name("app");
    let sqsd = by_name("sqsd");
    assert!(
        app["healthCheck"].is_object(),
        "HEALTHY needs the app's health check"
    );
    assert_eq!(
        sqsd["dependsOn"],
        serde_json::json!([{"containerName": "app", "condition": "HEALTHY"}])
    );
    assert_eq!(
        sqsd["healthCheck"]["command"],
        serde_json::json!(["CMD", "/usr/local/bin/sqsd", "healthcheck"])
    );
    let env = |name: &str| {
        sqsd["environment"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
    };
    let drain = env("SQSD_DRAIN_TIMEOUT")
        .map(seconds)
        .unwrap_or(DEFAULT_DRAIN_S);
    let stop = sqsd["stopTimeout"].as_u64().expect("stopTimeout");
    assert!(
        stop > drain,
        "stopTimeout {stop} s must exceed the drain {drain} s"
    );
    let port = app["portMappings"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(
        env("SQSD_WORKER_URL"),
        Some(format!("http://localhost:{port}").as_str())
    );
    for c in containers {
        assert_eq!(
            c["logConfiguration"]["logDriver"], "awslogs",
            "{}",
            c["name"]
        );
    }
    let trust = json("deploy/ecs/task-role-trust-policy.json");
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        "ecs-tasks.amazonaws.com"
    );
}

/// The ECS permission for task scale-in protection. sqsd makes no ECS call
/// itself (so `iam_policy_names_exactly_the_calls_the_daemon_makes` cannot
/// see it): it PUTs to the ECS agent, which calls UpdateTaskProtection with
/// the task role. The policy grants exactly what the agent's endpoint needs,
/// on the tasks of one cluster in the worker queue's account and region, and
/// the task definition that turns protection on says where to find it.
#[test]
fn ecs_task_protection_policy_grants_what_the_agent_needs() {
    let agent_client = read("src/aws/ecs_agent.rs");
    assert!(
        agent_client.contains("/task-protection/v1/state"),
        "the agent endpoint sqsd calls"
    );
    let policy = json("deploy/iam/ecs-task-protection-policy.json");
    assert_eq!(policy["Version"], "2012-10-17");
    let statements = policy["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1);
    let s = &statements[0];
    assert_eq!(s["Effect"], "Allow");
    let actions: BTreeSet<&str> = s["Action"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        BTreeSet::from(["ecs:GetTaskProtection", "ecs:UpdateTaskProtection"])
    );
    // The account and region of the worker queue in sqsd-policy.json.
    let sqs = json("deploy/iam/sqsd-policy.json");
    let queue_arn = sqs["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "WorkerQueue")
        .and_then(|s| s["Resource"].as_str())
        .unwrap()
        .to_string();
    let parts: Vec<&str> = queue_arn.split(':').collect();
    let (region, account) = (parts[3], parts[4]);
    let resource = s["Resource"].as_str().expect("one resource");
    let prefix = format!("arn:aws:ecs:{region}:{account}:task/");
    let cluster = resource
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix("/*"))
        .unwrap_or_else(|| panic!("{resource} is not {prefix}<cluster>/*"));
    assert!(
        !cluster.is_empty() && !cluster.contains(['*', '/']),
        "the tasks of one named cluster: {resource}"
    );

    let def = json("deploy/ecs/task-definition.json");
    let sqsd = def["containerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sqsd")
        .unwrap();
    assert!(sqsd["environment"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "SQSD_ECS_TASK_PROTECTION" && e["value"] == "true"));
    let readme = read("deploy/ecs/README.md");
    for needed in [
        "ecs-task-protection-policy.json",
        "ecs:UpdateTaskProtection",
        "sqsd_ecs_protection_failures_total",
        "ApproximateNumberOfMessagesVisible",
        "RunningTaskCount",
        cluster,
    ] {
        assert!(
            readme.contains(needed),
            "deploy/ecs/README.md lacks {needed}"
        );
    }
}

// ---------------------------------------------------------------- Kubernetes

#[test]
fn kubernetes_manifests_validate_and_agree() {
    let kustomization = yaml("deploy/k8s/kustomization.yaml");
    let resources: Vec<String> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(repo().join("deploy/k8s"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(resources.iter().cloned().collect::<BTreeSet<_>>(), on_disk);
    let mut cmd = Command::new(tool("kubernetes-validate"));
    cmd.arg("--strict");
    for r in &resources {
        cmd.arg(repo().join("deploy/k8s").join(r));
    }
    let (code, out) = run(&mut cmd);
    assert_eq!(code, 0, "kubernetes-validate:\n{out}");
    assert_eq!(out.matches("passed").count(), resources.len(), "{out}");

    let deployment = yaml("deploy/k8s/deployment.yaml");
    let pod = &deployment["spec"]["template"];
    let containers = pod["spec"]["containers"].as_sequence().unwrap();
    let sqsd = containers
        .iter()
        .find(|c| c["name"] == "sqsd")
        .expect("sqsd container");
    let env = |name: &str| -> Option<String> {
        sqsd["env"]
            .as_sequence()?
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str().map(str::to_string))
    };
    let admin = env("SQSD_ADMIN_ADDR").expect("admin on every address");
    let admin_port: u64 = admin.rsplit(':').next().unwrap().parse().unwrap();
    let ports = sqsd["ports"].as_sequence().unwrap();
    assert!(ports
        .iter()
        .any(|p| p["name"] == "admin" && p["containerPort"].as_u64() == Some(admin_port)));
    assert_eq!(sqsd["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(sqsd["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(sqsd["livenessProbe"]["httpGet"]["port"], "admin");
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert_eq!(
        annotations["prometheus.io/port"],
        Yaml::from(admin_port.to_string())
    );
    let drain = env("SQSD_DRAIN_TIMEOUT")
        .map(|d| seconds(&d))
        .unwrap_or(DEFAULT_DRAIN_S);
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        grace > drain,
        "grace {grace} s must exceed the drain {drain} s"
    );
    for key in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(sqsd["resources"][key][r].is_string(), "{key}.{r}");
        }
    }
    let sa = yaml("deploy/k8s/serviceaccount.yaml");
    assert_eq!(pod["spec"]["serviceAccountName"], sa["metadata"]["name"]);
    assert!(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        .as_str()
        .is_some_and(|a| a.starts_with("arn:aws:iam::")));

    // The mounted cron.yaml is where SQSD_CRON_FILE says, and it is valid.
    let mount = sqsd["volumeMounts"][0]["mountPath"].as_str().unwrap();
    let cron_file = env("SQSD_CRON_FILE").unwrap();
    assert_eq!(cron_file, format!("{mount}/cron.yaml"));
    let configmap = yaml("deploy/k8s/configmap.yaml");
    let cron = configmap["data"]["cron.yaml"].as_str().unwrap();
    let path = common::scratch_file("cron.yaml", cron);
    let (code, out, err) = common::run_to_end(
        &[
            "check-config",
            "--queue-url",
            &env("SQSD_QUEUE_URL").unwrap(),
        ],
        &[("SQSD_CRON_FILE", path.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nightly-report"), "{out}");
}

/// The optional KEDA overlay scales the base Deployment on the queue that
/// Deployment's sqsd reads, with the workload's own IRSA identity.
#[test]
fn keda_scaled_object_scales_the_deployment_on_its_queue() {
    let overlay = yaml("deploy/k8s/keda/kustomization.yaml");
    let resources: Vec<&str> = overlay["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(resources, ["../", "scaledobject.yaml"]);
    let text = read("deploy/k8s/keda/scaledobject.yaml");
    let docs: Vec<Yaml> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Yaml::deserialize(d).expect("YAML document"))
        .collect();
    let of_kind = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let scaled = of_kind("ScaledObject");
    let auth = of_kind("TriggerAuthentication");
    for d in [scaled, auth] {
        assert_eq!(d["apiVersion"], "keda.sh/v1alpha1");
    }
    assert_eq!(auth["spec"]["podIdentity"]["provider"], "aws");
    assert_eq!(auth["spec"]["podIdentity"]["identityOwner"], "workload");

    let deployment = yaml("deploy/k8s/deployment.yaml");
    let target = &scaled["spec"]["scaleTargetRef"];
    assert_eq!(target["kind"], "Deployment");
    assert_eq!(target["apiVersion"], deployment["apiVersion"]);
    assert_eq!(target["name"], deployment["metadata"]["name"]);
    let sqsd = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sqsd")
        .unwrap();
    let queue_url = sqsd["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SQSD_QUEUE_URL")
        .and_then(|e| e["value"].as_str())
        .unwrap();
    let triggers = scaled["spec"]["triggers"].as_sequence().unwrap();
    assert_eq!(triggers.len(), 1);
    let trigger = &triggers[0];
    assert_eq!(trigger["type"], "aws-sqs-queue");
    assert_eq!(
        trigger["authenticationRef"]["name"],
        auth["metadata"]["name"]
    );
    let meta = &trigger["metadata"];
    assert_eq!(meta["queueURL"].as_str(), Some(queue_url));
    let region = queue_url
        .strip_prefix("https://sqs.")
        .and_then(|r| r.split('.').next())
        .unwrap();
    assert_eq!(meta["awsRegion"].as_str(), Some(region));
    // KEDA takes metadata as strings only.
    for (key, value) in meta.as_mapping().unwrap() {
        assert!(value.is_string(), "metadata {key:?} must be a string");
    }
    let per_replica: u64 = meta["queueLength"].as_str().unwrap().parse().unwrap();
    assert!(per_replica > 0);
    let (min, max) = (
        scaled["spec"]["minReplicaCount"].as_u64().unwrap(),
        scaled["spec"]["maxReplicaCount"].as_u64().unwrap(),
    );
    assert!(min >= 1 && max > min, "{min}..{max}");
    // The workload's role reads the queue: GetQueueAttributes is granted on it.
    let sa = yaml("deploy/k8s/serviceaccount.yaml");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        sa["metadata"]["name"]
    );
    let policy = read("deploy/iam/sqsd-policy.json");
    assert!(policy.contains("sqs:GetQueueAttributes"));
    let queue_name = queue_url.rsplit('/').next().unwrap();
    assert!(policy.contains(&format!(":{queue_name}\"")));
}

// ---------------------------------------------------------- LocalStack compose

fn env_of(service: &Yaml, name: &str) -> String {
    service["environment"][name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} not set"))
        .to_string()
}

fn host_port(url: &str) -> (String, u16) {
    let u = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    (
        u.host_str().unwrap().to_string(),
        u.port_or_known_default().unwrap(),
    )
}

#[test]
fn compose_file_names_images_and_ports_consistently() {
    let compose = yaml("deploy/localstack/docker-compose.yml");
    let services = &compose["services"];
    for s in ["localstack", "init", "app", "sqsd"] {
        assert!(services[s].is_mapping(), "service {s}");
    }
    let ls = &services["localstack"];
    assert!(ls["image"]
        .as_str()
        .unwrap()
        .starts_with("localstack/localstack:4."));
    assert!(ls["healthcheck"]["test"].is_sequence());
    assert!(ls["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|p| p == "4566:4566"));

    let sqsd = &services["sqsd"];
    let context = repo()
        .join("deploy/localstack")
        .join(sqsd["build"]["context"].as_str().unwrap());
    let dockerfile = context.join(sqsd["build"]["dockerfile"].as_str().unwrap());
    assert_eq!(
        dockerfile.canonicalize().unwrap(),
        repo().join("Dockerfile")
    );
    assert_eq!(
        host_port(&env_of(sqsd, "AWS_ENDPOINT_URL_SQS")),
        ("localstack".into(), 4566)
    );
    let queue_url = env_of(sqsd, "SQSD_QUEUE_URL");
    assert_eq!(host_port(&queue_url), ("localstack".into(), 4566));
    let app = &services["app"];
    let app_port: u16 = env_of(app, "PORT").parse().unwrap();
    assert!(app["expose"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|p| p.as_str() == Some(&app_port.to_string())));
    assert_eq!(
        host_port(&env_of(sqsd, "SQSD_WORKER_URL")),
        ("app".into(), app_port)
    );
    assert_eq!(
        host_port(&env_of(&services["init"], "AWS_ENDPOINT_URL")),
        ("localstack".into(), 4566)
    );
    assert_eq!(
        services["init"]["depends_on"]["localstack"]["condition"],
        "service_healthy"
    );
    assert_eq!(
        sqsd["depends_on"]["init"]["condition"],
        "service_completed_successfully"
    );
    let grace = seconds(sqsd["stop_grace_period"].as_str().unwrap());
    assert!(grace > DEFAULT_DRAIN_S);
    // Mounted files exist next to the compose file.
    for service in ["init", "app", "sqsd"] {
        for volume in services[service]["volumes"].as_sequence().unwrap() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            assert!(
                repo().join("deploy/localstack").join(source).is_file(),
                "{source}"
            );
        }
    }
    // The queue sqsd reads is the one the init script creates.
    let queue_name = queue_url.rsplit('/').next().unwrap();
    assert!(
        read("deploy/localstack/create-queues.sh").contains(&format!("--queue-name {queue_name}"))
    );
    let cron = env_of(sqsd, "SQSD_CRON_FILE");
    assert!(sqsd["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|v| v.as_str().unwrap().contains(&format!(":{cron}:"))));
}

/// The compose environment without Docker: the init script creates the
/// queues on the suite's endpoint, the example worker runs, and sqsd with
/// the compose file's settings delivers a message and a periodic task to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_environment_rehearsed_on_the_host() {
    let endpoint = common::endpoint();
    let (code, out) = run(Command::new("sh")
        .arg(repo().join("deploy/localstack/create-queues.sh"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                tool("").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_DEFAULT_REGION", "us-east-1"));
    assert_eq!(code, 0, "create-queues.sh:\n{out}");
    let queue_url = out
        .lines()
        .find(|l| l.contains("worker-queue") && l.starts_with("http"))
        .expect("queue URL")
        .to_string();
    let queue = TestQueue {
        client: common::client(),
        url: queue_url.clone(),
        name: "worker-queue".into(),
    };

    // The example worker, on a free port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut worker = std::process::Command::new(tool("python"))
        .arg("-u")
        .arg(repo().join("deploy/localstack/worker.py"))
        .env("PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start worker.py");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let stdout = worker.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });

    // sqsd with the compose file's settings, hosts pointed at this machine.
    let compose = yaml("deploy/localstack/docker-compose.yml");
    let sqsd = &compose["services"]["sqsd"];
    let cron = common::scratch_file("cron.yaml", &read("deploy/localstack/cron.yaml"));
    let mut cmd = common::sqsd_command(&["--admin-addr".into(), "127.0.0.1:0".into()]);
    for (k, v) in sqsd["environment"].as_mapping().unwrap() {
        let (k, v) = (k.as_str().unwrap(), v.as_str().unwrap());
        let v = match k {
            "SQSD_QUEUE_URL" => queue_url.clone(),
            "SQSD_WORKER_URL" => format!("http://127.0.0.1:{port}"),
            "SQSD_CRON_FILE" => cron.to_str().unwrap().to_string(),
            "AWS_ENDPOINT_URL_SQS" => endpoint.clone(),
            _ => v.to_string(),
        };
        cmd.env(k, v);
    }
    let d = Daemon::start_with(cmd).await;
    d.wait_ready(Duration::from_secs(20)).await;
    assert!(
        d.find_log("redrive").is_none(),
        "the init script's redrive policy matches SQSD_MAX_RETRIES:\n{}",
        d.log_text()
    );
    queue.send("{\"hello\":\"compose\"}").await;
    eventually(Duration::from_secs(20), "worker.py to log the POST", || {
        let seen = lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("-> 200") && l.contains("hello"));
        async move { seen.then_some(()) }
    })
    .await;
    // The cron file's task is valid for this daemon too.
    assert!(d.find_log("task=heartbeat").is_some(), "{}", d.log_text());
    drop(d);
    let _ = worker.kill();
    let _ = worker.wait();
}
