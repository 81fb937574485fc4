//! Other SDKs against the endpoint under test: a current boto3 (AWS JSON
//! protocol) and boto3 1.26.165 (Query protocol, form-encoded requests and
//! XML answers), each running the same scenario in `tests/sdk/`.

mod common;

use std::process::Command;

fn run_scenario(python_var: &str, protocol: &str) {
    let python = std::env::var(python_var).unwrap_or_else(|_| {
        panic!("{python_var} is not set: run the suite with scripts/test.sh, which installs boto3")
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/boto3_scenario.py");
    let out = Command::new(python)
        .arg(script)
        .arg(common::endpoint())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(&format!("protocol: {protocol}")),
        "{stdout}\n{stderr}"
    );
    assert!(
        out.status.success(),
        "boto3 scenario failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn current_boto3_speaking_json() {
    run_scenario("SQSD_TEST_PYTHON_JSON", "json");
}

#[test]
fn old_boto3_speaking_query() {
    run_scenario("SQSD_TEST_PYTHON_QUERY", "query");
}
