//! The Elastic Beanstalk hooks of `deploy/elasticbeanstalk/`, run in a
//! sandbox: a fake root directory (`SQSD_EB_ROOT`), a bundle holding this
//! build's binary with its real SHA-256, and stubs first in `PATH` for
//! `systemctl` (which records every call and keeps unit states as systemd
//! would), `get-config` (the environment's properties), `curl` and `aws`.
//! Also: shellcheck on every script, `systemd-analyze verify` on the unit.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

const UNIT: &str = "sqsd-rs.service";
const EB_UNIT: &str = "sqsd.service";
const EB_CONFIG: &str = "etc/aws-sqsd.d/default.yaml";
const DEFAULT_DRAIN_S: u64 = 30;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shipped() -> PathBuf {
    repo().join("deploy/elasticbeanstalk")
}

fn sha256_hex(path: &Path) -> String {
    use std::io::Read;
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

/// This build's binary and its SHA-256, computed here (not by the scripts'
/// own tool) once per run.
fn binary() -> (&'static Path, &'static str) {
    static HASH: OnceLock<String> = OnceLock::new();
    let path = Path::new(env!("CARGO_BIN_EXE_sqsd"));
    (path, HASH.get_or_init(|| sha256_hex(path)))
}

/// Asserts that `path` holds exactly this build's binary, whose SHA-256 the
/// hooks were given (compared byte for byte: cheaper than hashing again).
fn assert_is_this_build(path: &Path) {
    use std::io::Read;
    let open = |p: &Path| std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let (mut a, mut b) = (open(path), open(binary().0));
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        b.read_exact(&mut y[..n])
            .unwrap_or_else(|e| panic!("{} is longer: {e}", path.display()));
        assert!(
            x[..n] == y[..n],
            "{} is not this build's binary",
            path.display()
        );
        if n == 0 {
            assert_eq!(b.read(&mut y).unwrap(), 0, "{} is shorter", path.display());
            return;
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn write_exec(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Copies a directory tree, keeping file modes (as a zip of the bundle does).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// `systemctl` as the hooks use it: every call goes to the log; units are
/// loaded only after a daemon-reload saw their file (or when seeded), a
/// masked unit cannot start, a unit not loaded cannot stop, and a unit file
/// of its own in /etc/systemd/system cannot be masked.
const SYSTEMCTL: &str = r#"#!/bin/bash
echo "systemctl $*" >>"$STUB_LOG"
st=$STUB_STATE
etc=$SQSD_EB_ROOT/etc/systemd/system
loaded() { [ -e "$st/$1.loaded" ] || [ -e "$st/$1.masked" ]; }
case "$1" in
show)
  [ "$2" = -p ] && [ "$3" = LoadState ] || { echo "stub: unexpected: $*" >&2; exit 1; }
  if [ -e "$st/$4.masked" ]; then echo LoadState=masked
  elif [ -e "$st/$4.loaded" ]; then echo LoadState=loaded
  else echo LoadState=not-found; fi ;;
is-active)
  if [ -e "$st/$2.active" ]; then echo active; else echo inactive; exit 3; fi ;;
daemon-reload)
  for f in "$etc"/*.service; do
    [ -f "$f" ] && [ ! -L "$f" ] && touch "$st/$(basename "$f").loaded"
  done; true ;;
stop)
  loaded "$2" || { echo "Failed to stop $2: Unit $2 not loaded." >&2; exit 5; }
  rm -f "$st/$2.active" ;;
start|restart)
  [ -e "$st/$2.masked" ] && { echo "Failed to start $2: Unit $2 is masked." >&2; exit 1; }
  loaded "$2" || { echo "Failed to start $2: Unit $2 not found." >&2; exit 5; }
  touch "$st/$2.active" ;;
mask)
  if [ -f "$etc/$2" ] && [ ! -L "$etc/$2" ]; then
    echo "Failed to mask unit: File $etc/$2 already exists." >&2; exit 1
  fi
  mkdir -p "$etc" && ln -sfn /dev/null "$etc/$2" && touch "$st/$2.masked" ;;
enable)
  loaded "$2" || { echo "Failed to enable unit: Unit file $2 does not exist." >&2; exit 1; }
  mkdir -p "$etc/multi-user.target.wants"
  ln -sfn "../$2" "$etc/multi-user.target.wants/$2" && touch "$st/$2.enabled" ;;
*) echo "stub: unexpected systemctl $*" >&2; exit 1 ;;
esac
"#;

/// `get-config environment -k NAME`: the property from a file, or a failure.
const GET_CONFIG: &str = r#"#!/bin/bash
echo "get-config $*" >>"$STUB_LOG"
[ "$1" = environment ] && [ "$2" = -k ] || { echo "stub: unexpected: $*" >&2; exit 1; }
if [ -f "$STUB_PROPS/$3" ]; then cat "$STUB_PROPS/$3"; else echo "key $3 not found" >&2; exit 1; fi
"#;

/// `curl ... --output FILE URL`: serves `$STUB_SERVE` for `$STUB_URL`.
const CURL: &str = r#"#!/bin/bash
echo "curl $*" >>"$STUB_LOG"
out=""; url=""
while [ $# -gt 0 ]; do
  case "$1" in
  --output) out=$2; shift 2 ;;
  --max-filesize|--proto|--proto-redir|--connect-timeout|--max-time|--retry|--retry-max-time) shift 2 ;;
  -*) shift ;;
  *) url=$1; shift ;;
  esac
done
[ "$url" = "$STUB_URL" ] || { echo "curl: (22) The requested URL returned error: 404" >&2; exit 22; }
cp "$STUB_SERVE" "$out"
"#;

/// `aws s3 cp --only-show-errors SRC DEST`: serves `$STUB_SERVE` for `$STUB_URL`.
const AWS: &str = r#"#!/bin/bash
echo "aws $*" >>"$STUB_LOG"
[ "$1 $2 $3" = "s3 cp --only-show-errors" ] || { echo "stub: unexpected: $*" >&2; exit 1; }
[ "$4" = "$STUB_URL" ] || { echo "fatal error: An error occurred (404)" >&2; exit 1; }
cp "$STUB_SERVE" "$5"
"#;

/// One instance: the fake root, the bundle, the stubs and their records.
struct Sandbox {
    dir: PathBuf,
    root: PathBuf,
    bundle: PathBuf,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Sandbox {
    /// A worker instance with EB's daemon loaded and running (its unit in
    /// /usr/lib, as a package installs it), and a bundle holding the
    /// hooks and this build's binary with its SHA-256.
    fn new() -> Sandbox {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("eb-{:08x}", fastrand::u32(..)));
        let (root, bundle) = (dir.join("root"), dir.join("bundle"));
        for d in ["state", "props", "stubs", "tmp"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("calls"), "").unwrap();
        std::fs::create_dir_all(root.join("etc/aws-sqsd.d")).unwrap();
        std::fs::write(
            root.join(EB_CONFIG),
            "queue_url: https://sqs.us-east-1.amazonaws.com/123456789012/worker\nhttp_port: 80\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("usr/lib/systemd/system")).unwrap();
        std::fs::write(
            root.join("usr/lib/systemd/system").join(EB_UNIT),
            "[Service]\n",
        )
        .unwrap();
        for (name, text) in [
            ("systemctl", SYSTEMCTL),
            ("get-config", GET_CONFIG),
            ("curl", CURL),
            ("aws", AWS),
        ] {
            write_exec(&dir.join("stubs").join(name), text);
        }
        copy_tree(&shipped(), &bundle);
        let s = Sandbox { dir, root, bundle };
        s.seed_unit(EB_UNIT, &["loaded", "active"]);
        s.put_binary_in_bundle();
        s
    }

    fn seed_unit(&self, unit: &str, states: &[&str]) {
        for st in states {
            std::fs::write(self.dir.join("state").join(format!("{unit}.{st}")), "").unwrap();
        }
    }

    fn unit_has(&self, unit: &str, st: &str) -> bool {
        self.dir.join("state").join(format!("{unit}.{st}")).exists()
    }

    fn sqsd_dir(&self) -> PathBuf {
        self.bundle.join(".platform/sqsd")
    }

    /// The built binary at `.platform/sqsd/sqsd` (a hard link: it is large
    /// in a debug build) and its real SHA-256 beside it, as sha256sum writes it.
    fn put_binary_in_bundle(&self) {
        let (bin, hash) = binary();
        let dest = self.sqsd_dir().join("sqsd");
        if std::fs::hard_link(bin, &dest).is_err() {
            std::fs::copy(bin, &dest).unwrap();
        }
        std::fs::write(
            self.sqsd_dir().join("sqsd.sha256"),
            format!("{hash}  sqsd\n"),
        )
        .unwrap();
    }

    fn remove_binary_from_bundle(&self) {
        std::fs::remove_file(self.sqsd_dir().join("sqsd")).unwrap();
        std::fs::remove_file(self.sqsd_dir().join("sqsd.sha256")).unwrap();
    }

    fn set_property(&self, name: &str, value: &str) {
        std::fs::write(self.dir.join("props").join(name), value).unwrap();
    }

    /// Runs one hook of the bundle, as EB does: the file itself, executed.
    fn hook(&self, kind: &str, phase: &str) -> Run {
        let dir = self.bundle.join(".platform").join(kind).join(phase);
        let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(scripts.len(), 1, "one hook in {}", dir.display());
        let script = scripts.remove(0);
        self.log_marker(&format!("-- {kind}/{phase}"));
        let path = format!(
            "{}:{}",
            self.dir.join("stubs").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new(&script)
            .current_dir(&self.bundle)
            .env("PATH", path)
            .env("SQSD_EB_ROOT", &self.root)
            .env("TMPDIR", self.dir.join("tmp"))
            .env("STUB_LOG", self.dir.join("calls"))
            .env("STUB_STATE", self.dir.join("state"))
            .env("STUB_PROPS", self.dir.join("props"))
            .env("STUB_SERVE", self.dir.join("served"))
            .env(
                "STUB_URL",
                std::fs::read_to_string(self.dir.join("url")).unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        let left: Vec<_> = std::fs::read_dir(self.dir.join("tmp"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(
            left.is_empty(),
            "{kind}/{phase} left temporary files: {left:?}"
        );
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn hook_ok(&self, kind: &str, phase: &str) -> Run {
        let run = self.hook(kind, phase);
        assert_eq!(
            run.code, 0,
            "{kind}/{phase} failed:\n{}{}",
            run.stdout, run.stderr
        );
        run
    }

    /// An application deployment: prebuild, predeploy, postdeploy.
    fn deploy(&self, kind: &str) {
        for phase in ["prebuild", "predeploy", "postdeploy"] {
            self.hook_ok(kind, phase);
        }
    }

    fn log_marker(&self, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("calls"))
            .unwrap();
        writeln!(f, "{text}").unwrap();
    }

    /// The recorded `systemctl` calls (without the read-only `show`), in order.
    fn systemctl_calls(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.starts_with("systemctl ") && !c.starts_with("systemctl show "))
            .collect()
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("calls"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The calls of the last hook run.
    fn last_hook_calls(&self) -> Vec<String> {
        let calls = self.calls();
        let start = calls.iter().rposition(|c| c.starts_with("-- ")).unwrap();
        calls[start + 1..]
            .iter()
            .filter(|c| c.starts_with("systemctl ") && !c.starts_with("systemctl show "))
            .cloned()
            .collect()
    }

    fn installed(&self) -> PathBuf {
        self.root.join("usr/local/bin/sqsd")
    }

    fn serve(&self, url: &str, file: &Path) {
        std::fs::write(self.dir.join("url"), url).unwrap();
        if std::fs::hard_link(file, self.dir.join("served")).is_err() {
            std::fs::copy(file, self.dir.join("served")).unwrap();
        }
    }

    /// Every path under the fake root with its mode, and a file's size,
    /// inode and modification time, or a symlink's target: any file
    /// written, replaced, added or removed shows.
    fn snapshot(&self) -> BTreeMap<String, String> {
        fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(base).unwrap().display().to_string();
                let desc = if meta.file_type().is_symlink() {
                    format!("-> {}", std::fs::read_link(&path).unwrap().display())
                } else if meta.is_dir() {
                    // A temporary file made and removed again moves a
                    // folder's time; what it holds is what counts.
                    format!("dir {:o}", meta.mode())
                } else {
                    format!(
                        "{:o} {} {} {}",
                        meta.mode(),
                        meta.len(),
                        meta.ino(),
                        meta.mtime_nsec() + meta.mtime() * 1_000_000_000
                    )
                };
                out.insert(rel, desc);
                if meta.is_dir() {
                    walk(&path, base, out);
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.root, &self.root, &mut out);
        out
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Position of the first call equal to `call`; panics with every call if none.
fn at(calls: &[String], call: &str) -> usize {
    calls
        .iter()
        .position(|c| c == call)
        .unwrap_or_else(|| panic!("no `{call}` in:\n{}", calls.join("\n")))
}

// ------------------------------------------------------ application deploys

#[test]
fn first_deployment_installs_sqsd_and_swaps_the_daemons_in_order() {
    let s = Sandbox::new();

    let run = s.hook_ok("hooks", "prebuild");
    assert!(
        s.last_hook_calls().is_empty(),
        "prebuild installs files only, it stops nothing: {:?}",
        s.last_hook_calls()
    );
    assert!(
        run.stdout.contains("installed /usr/local/bin/sqsd"),
        "{}",
        run.stdout
    );
    assert_is_this_build(&s.installed());
    assert_eq!(mode(&s.installed()), 0o755);
    let unit_file = s.root.join("etc/systemd/system").join(UNIT);
    assert_eq!(
        std::fs::read_to_string(&unit_file).unwrap(),
        std::fs::read_to_string(shipped().join(".platform/sqsd").join(UNIT)).unwrap()
    );
    assert_eq!(mode(&unit_file), 0o644);
    assert!(
        !s.root.join("etc/sqsd-rs/sqsd.env").exists(),
        "no override file unless the bundle has one"
    );

    s.hook_ok("hooks", "predeploy");
    assert!(!s.unit_has(EB_UNIT, "active"), "EB's daemon is stopped");
    assert!(s.unit_has(EB_UNIT, "masked"), "and masked");
    s.hook_ok("hooks", "postdeploy");

    let calls = s.systemctl_calls();
    let stop_eb = at(&calls, "systemctl stop sqsd.service");
    let mask_eb = at(&calls, "systemctl mask sqsd.service");
    let reload = at(&calls, "systemctl daemon-reload");
    let enable = at(&calls, "systemctl enable sqsd-rs.service");
    let restart = at(&calls, "systemctl restart sqsd-rs.service");
    assert!(stop_eb < mask_eb && mask_eb < restart, "{calls:#?}");
    assert!(reload < enable && enable < restart, "{calls:#?}");
    assert_eq!(
        calls.iter().filter(|c| c.contains("mask")).count(),
        1,
        "masked once: {calls:#?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("systemctl start sqsd.service")
                || c.starts_with("systemctl restart sqsd.service")),
        "{calls:#?}"
    );
    assert!(s.unit_has(UNIT, "active") && s.unit_has(UNIT, "enabled"));
    assert!(!s.unit_has(EB_UNIT, "active"));
    assert_eq!(
        std::fs::read_link(s.root.join("etc/systemd/system").join(EB_UNIT)).unwrap(),
        Path::new("/dev/null")
    );

    // The installed binary takes the unit's ExecStart arguments with EB's
    // file as it is.
    let eb_file = s.root.join(EB_CONFIG);
    let out = Command::new(s.installed())
        .args(["check-config", "--eb-config"])
        .arg(&eb_file)
        .env_clear()
        .output()
        .expect("run the installed sqsd");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_eb = format!("# eb_config {}", eb_file.display());
    assert!(
        text.lines()
            .any(|l| l.starts_with("queue_url:") && l.ends_with(&from_eb)),
        "{text}"
    );
}

#[test]
fn every_later_deployment_drains_sqsd_before_the_application_and_changes_nothing_else() {
    let s = Sandbox::new();
    s.deploy("hooks");
    let before = s.snapshot();

    let run = s.hook_ok("hooks", "prebuild");
    assert!(run.stdout.contains("already installed"), "{}", run.stdout);
    assert_eq!(
        s.snapshot(),
        before,
        "the same binary and unit are not written again"
    );
    assert!(s.last_hook_calls().is_empty());

    s.hook_ok("hooks", "predeploy");
    let predeploy = s.last_hook_calls();
    assert!(
        predeploy.contains(&"systemctl stop sqsd-rs.service".to_string()),
        "sqsd drains before the application is replaced: {predeploy:?}"
    );
    assert!(!s.unit_has(UNIT, "active"));
    assert!(
        !predeploy.iter().any(|c| c.contains("mask")),
        "already masked: {predeploy:?}"
    );

    s.hook_ok("hooks", "postdeploy");
    let postdeploy = s.last_hook_calls();
    assert_eq!(
        postdeploy,
        [
            "systemctl daemon-reload",
            "systemctl stop sqsd.service",
            "systemctl enable sqsd-rs.service",
            "systemctl restart sqsd-rs.service",
        ]
    );
    assert!(s.unit_has(UNIT, "active") && s.unit_has(EB_UNIT, "masked"));
    assert_eq!(
        s.snapshot(),
        before,
        "same files as after the first deployment"
    );
}

#[test]
fn a_new_binary_in_the_bundle_replaces_the_installed_one() {
    let s = Sandbox::new();
    // An older sqsd already in place, and a running daemon using it.
    std::fs::create_dir_all(s.installed().parent().unwrap()).unwrap();
    write_exec(&s.installed(), "#!/bin/sh\necho old\n");
    s.deploy("hooks");
    assert_is_this_build(&s.installed());
    assert_eq!(mode(&s.installed()), 0o755);
    let leftovers: Vec<_> = std::fs::read_dir(s.installed().parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, ["sqsd"], "no temporary file left");
}

// ------------------------------------------------------------ refusals

#[test]
fn a_wrong_sha256_in_the_bundle_refuses_to_install_and_changes_nothing() {
    let s = Sandbox::new();
    // A first deployment, then a bundle whose hash file does not match its binary.
    std::fs::create_dir_all(s.installed().parent().unwrap()).unwrap();
    write_exec(&s.installed(), "#!/bin/sh\necho old\n");
    let wrong = "0".repeat(64);
    std::fs::write(s.sqsd_dir().join("sqsd.sha256"), format!("{wrong}  sqsd\n")).unwrap();
    let before = s.snapshot();

    let run = s.hook("hooks", "prebuild");
    assert_ne!(run.code, 0, "{}", run.stdout);
    let (_, hash) = binary();
    assert!(
        run.stderr.contains("SHA-256 mismatch")
            && run.stderr.contains(&wrong)
            && run.stderr.contains(hash)
            && run.stderr.contains("nothing was installed"),
        "{}",
        run.stderr
    );
    assert_eq!(s.snapshot(), before, "nothing under / changed");
    assert!(s.systemctl_calls().is_empty());
}

#[test]
fn a_hash_file_that_is_not_a_sha256_is_refused() {
    let s = Sandbox::new();
    std::fs::write(s.sqsd_dir().join("sqsd.sha256"), "latest\n").unwrap();
    let before = s.snapshot();
    let run = s.hook("hooks", "prebuild");
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains(".platform/sqsd/sqsd.sha256 must hold"),
        "{}",
        run.stderr
    );
    assert_eq!(s.snapshot(), before);
}

#[test]
fn without_a_binary_or_a_url_the_prebuild_hook_says_how_to_provide_one() {
    let s = Sandbox::new();
    s.remove_binary_from_bundle();
    let run = s.hook("hooks", "prebuild");
    assert_ne!(run.code, 0);
    for needed in [
        ".platform/sqsd/sqsd",
        "SQSD_BINARY_URL",
        "SQSD_BINARY_SHA256",
    ] {
        assert!(run.stderr.contains(needed), "{needed}: {}", run.stderr);
    }
    assert!(!s.installed().exists());
}

#[test]
fn outside_a_worker_environment_the_postdeploy_hook_refuses_to_start() {
    let s = Sandbox::new();
    std::fs::remove_file(s.root.join(EB_CONFIG)).unwrap();
    s.hook_ok("hooks", "prebuild");
    s.hook_ok("hooks", "predeploy");
    let run = s.hook("hooks", "postdeploy");
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains("/etc/aws-sqsd.d/default.yaml is missing"),
        "{}",
        run.stderr
    );
    assert!(!s.unit_has(UNIT, "active"));
}

// ------------------------------------------------------- binary from a URL

#[test]
fn the_binary_can_come_from_an_https_url_with_its_sha256() {
    let s = Sandbox::new();
    s.remove_binary_from_bundle();
    let (bin, hash) = binary();
    let url = "https://downloads.example.com/sqsd/sqsd-x86_64?X-Amz-Signature=secret";
    s.serve(url, bin);
    s.set_property("SQSD_BINARY_URL", url);
    s.set_property("SQSD_BINARY_SHA256", &hash.to_uppercase());

    let run = s.hook_ok("hooks", "prebuild");
    assert_is_this_build(&s.installed());
    assert_eq!(mode(&s.installed()), 0o755);
    assert!(
        !run.stdout.contains("secret") && !run.stderr.contains("secret"),
        "a presigned URL's signature is not logged:\n{}{}",
        run.stdout,
        run.stderr
    );
    let curl: Vec<String> = s
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("curl "))
        .collect();
    assert_eq!(curl.len(), 1, "{curl:?}");
    for arg in [
        "--fail",
        "--proto =https",
        "--max-filesize 1073741824",
        "--max-time",
    ] {
        assert!(curl[0].contains(arg), "{arg}: {}", curl[0]);
    }

    // Again: the installed binary already has that hash, so nothing is fetched.
    s.hook_ok("hooks", "prebuild");
    assert_eq!(
        s.calls().iter().filter(|c| c.starts_with("curl ")).count(),
        1
    );
}

#[test]
fn a_download_whose_sha256_differs_is_not_installed() {
    let s = Sandbox::new();
    s.remove_binary_from_bundle();
    let other = s.dir.join("other");
    std::fs::write(&other, "#!/bin/sh\necho not sqsd\n").unwrap();
    let url = "https://downloads.example.com/sqsd";
    s.serve(url, &other);
    s.set_property("SQSD_BINARY_URL", url);
    let (_, hash) = binary();
    s.set_property("SQSD_BINARY_SHA256", hash);
    let before = s.snapshot();
    let run = s.hook("hooks", "prebuild");
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("SHA-256 mismatch"), "{}", run.stderr);
    assert_eq!(s.snapshot(), before);
}

#[test]
fn a_url_property_without_its_sha256_or_of_another_scheme_is_refused() {
    let s = Sandbox::new();
    s.set_property("SQSD_BINARY_URL", "https://downloads.example.com/sqsd");
    let run = s.hook("hooks", "prebuild");
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains("environment property SQSD_BINARY_SHA256 must hold"),
        "{}",
        run.stderr
    );

    let (_, hash) = binary();
    s.set_property("SQSD_BINARY_SHA256", hash);
    s.set_property("SQSD_BINARY_URL", "http://downloads.example.com/sqsd");
    let run = s.hook("hooks", "prebuild");
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("https:// or s3://"), "{}", run.stderr);
    assert!(!s.installed().exists());
}

#[test]
fn the_binary_can_come_from_s3_with_the_instance_profile() {
    let s = Sandbox::new();
    let (bin, hash) = binary();
    let url = "s3://my-artifacts/sqsd/0.1.0/sqsd";
    s.serve(url, bin);
    s.set_property("SQSD_BINARY_URL", url);
    s.set_property("SQSD_BINARY_SHA256", hash);
    let run = s.hook_ok("hooks", "prebuild");
    assert!(
        run.stdout.contains("using it, not .platform/sqsd/sqsd"),
        "the property wins over the bundle, and says so: {}",
        run.stdout
    );
    assert!(s.calls().iter().any(|c| c.starts_with("aws s3 cp ")));
    assert_is_this_build(&s.installed());
}

// ------------------------------------------------ configuration deployments

#[test]
fn a_configuration_deployment_restarts_sqsd_on_the_new_eb_file() {
    let s = Sandbox::new();
    s.deploy("hooks");
    // EB rewrites its daemon's file from the new option settings.
    std::fs::write(
        s.root.join(EB_CONFIG),
        "queue_url: https://sqs.us-east-1.amazonaws.com/123456789012/worker\nhttp_connections: 20\n",
    )
    .unwrap();
    let files = s.snapshot();

    s.hook_ok("confighooks", "prebuild");
    assert!(s.last_hook_calls().is_empty());
    s.hook_ok("confighooks", "predeploy");
    assert_eq!(
        s.last_hook_calls(),
        [
            "systemctl stop sqsd.service",
            "systemctl stop sqsd-rs.service"
        ]
    );
    s.hook_ok("confighooks", "postdeploy");
    let calls = s.last_hook_calls();
    assert!(
        at(&calls, "systemctl daemon-reload") < at(&calls, "systemctl restart sqsd-rs.service"),
        "{calls:?}"
    );
    assert!(s.unit_has(UNIT, "active") && s.unit_has(EB_UNIT, "masked"));
    assert_eq!(s.snapshot(), files, "nothing rewritten but by EB");
    // The unit reads EB's file at every start: a restart is all it needs.
    let unit = std::fs::read_to_string(s.root.join("etc/systemd/system").join(UNIT)).unwrap();
    assert!(unit.contains("--eb-config /etc/aws-sqsd.d/default.yaml"));
}

#[test]
fn the_configuration_hooks_do_what_the_application_hooks_do() {
    for phase in ["prebuild", "predeploy", "postdeploy"] {
        let dir = |kind: &str| shipped().join(".platform").join(kind).join(phase);
        let names = |kind: &str| -> Vec<String> {
            std::fs::read_dir(dir(kind))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names("hooks"), names("confighooks"), "{phase}");
        for name in names("hooks") {
            let command = |kind: &str| {
                std::fs::read_to_string(dir(kind).join(&name))
                    .unwrap()
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            assert_eq!(command("hooks"), command("confighooks"), "{phase}/{name}");
        }
    }
}

// ---------------------------------------------- EB's unit file in /etc

#[test]
fn an_eb_unit_file_in_etc_is_kept_from_starting_by_a_drop_in() {
    let s = Sandbox::new();
    // A unit file of its own in /etc/systemd/system cannot be masked.
    let etc = s.root.join("etc/systemd/system");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join(EB_UNIT), "[Service]\nExecStart=/bin/aws-sqsd\n").unwrap();
    s.deploy("hooks");

    let calls = s.systemctl_calls();
    assert!(!calls.iter().any(|c| c.contains("mask")), "{calls:#?}");
    let dropin = etc.join("sqsd.service.d/50-replaced-by-sqsd-rs.conf");
    let text = std::fs::read_to_string(&dropin).unwrap();
    assert!(
        text.contains("[Unit]\nConditionPathExists=!/etc/systemd/system/sqsd-rs.service\n"),
        "{text}"
    );
    assert_eq!(mode(&dropin), 0o644);
    assert!(
        at(&calls, "systemctl daemon-reload") < at(&calls, "systemctl stop sqsd.service"),
        "the drop-in is loaded before EB's daemon is stopped: {calls:#?}"
    );
    assert!(
        at(&calls, "systemctl stop sqsd.service") < at(&calls, "systemctl restart sqsd-rs.service")
    );
    assert!(!s.unit_has(EB_UNIT, "active") && s.unit_has(UNIT, "active"));
    assert_eq!(
        std::fs::read_to_string(etc.join(EB_UNIT)).unwrap(),
        "[Service]\nExecStart=/bin/aws-sqsd\n",
        "EB's own file is left alone"
    );

    let before = s.snapshot();
    s.deploy("hooks");
    assert_eq!(s.snapshot(), before, "written once");
}

// ------------------------------------------------------- override file

#[test]
fn an_override_file_in_the_bundle_is_installed_private_and_removed_with_it() {
    let s = Sandbox::new();
    std::fs::write(
        s.sqsd_dir().join("sqsd.env"),
        "SQSD_LOG_FORMAT=json\nSQSD_SIGNING_KEY=0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    s.deploy("hooks");
    let installed = s.root.join("etc/sqsd-rs/sqsd.env");
    assert_eq!(
        std::fs::read_to_string(&installed).unwrap(),
        std::fs::read_to_string(s.sqsd_dir().join("sqsd.env")).unwrap()
    );
    assert_eq!(mode(&installed), 0o600, "it may hold secrets");

    std::fs::remove_file(s.sqsd_dir().join("sqsd.env")).unwrap();
    s.deploy("hooks");
    assert!(
        !installed.exists(),
        "gone from the bundle, gone from the instance"
    );
}

// ------------------------------------------------------------- checkers

/// A checker installed by `scripts/test-env.sh` into the tools environment.
fn tool(name: &str) -> PathBuf {
    let dir = std::env::var("SQSD_TEST_TOOLS").unwrap_or_else(|_| {
        panic!(
            "SQSD_TEST_TOOLS is not set: run the suite with scripts/test.sh, which installs {name}"
        )
    });
    let path = Path::new(&dir).join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test-env.sh install",
        path.display()
    );
    path
}

fn scripts() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "sh") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&shipped(), &mut out);
    out.sort();
    out
}

#[test]
fn every_script_passes_shellcheck_and_is_executable_in_git() {
    let scripts = scripts();
    assert_eq!(scripts.len(), 7, "{scripts:?}");
    let out = Command::new(tool("shellcheck"))
        .args(&scripts)
        .output()
        .expect("run shellcheck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "shellcheck:\n{text}"
    );

    for script in &scripts {
        let text = std::fs::read_to_string(script).unwrap();
        assert!(text.starts_with("#!/bin/bash\n"), "{}", script.display());
        assert!(
            text.lines().any(|l| l == "set -euo pipefail"),
            "{}",
            script.display()
        );
        let rel = script.strip_prefix(repo()).unwrap();
        let out = Command::new("git")
            .args(["ls-files", "--stage", "--"])
            .arg(rel)
            .current_dir(repo())
            .output()
            .expect("run git");
        let staged = String::from_utf8_lossy(&out.stdout);
        assert!(
            staged.starts_with("100755 "),
            "{} must be executable in git (git update-index --chmod=+x): {staged:?}",
            rel.display()
        );
    }
    // EB runs every file in a hook folder: only the hooks are there.
    for kind in ["hooks", "confighooks"] {
        for phase in ["prebuild", "predeploy", "postdeploy"] {
            let dir = shipped().join(".platform").join(kind).join(phase);
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                assert!(
                    scripts.contains(&entry.path()),
                    "{}",
                    entry.path().display()
                );
                assert_eq!(
                    mode(&entry.path()) & 0o111,
                    0o111,
                    "{}",
                    entry.path().display()
                );
            }
        }
    }
}

#[test]
fn the_unit_verifies_and_outlasts_the_drain() {
    let unit = std::fs::read_to_string(shipped().join(".platform/sqsd").join(UNIT)).unwrap();
    let exec = "ExecStart=/usr/local/bin/sqsd --eb-config /etc/aws-sqsd.d/default.yaml";
    assert!(unit.lines().any(|l| l == exec), "{unit}");

    // systemd-analyze checks that ExecStart exists: point it at this build.
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("eb-unit-{:08x}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join(UNIT);
    std::fs::write(
        &copy,
        unit.replace(
            "ExecStart=/usr/local/bin/sqsd ",
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_sqsd")),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze is needed (Debian: apt-get install systemd): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "systemd-analyze verify:\n{text}");
    // It exits 0 even for unknown keys or bad values; it must say nothing.
    assert!(text.trim().is_empty(), "systemd-analyze verify:\n{text}");

    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
            .collect()
    };
    for (key, wanted) in [
        ("Restart", "on-failure"),
        ("RestartPreventExitStatus", "64"),
        ("KillSignal", "SIGTERM"),
        ("EnvironmentFile", "-/etc/sqsd-rs/sqsd.env"),
        ("NoNewPrivileges", "yes"),
        ("WantedBy", "multi-user.target"),
    ] {
        assert_eq!(value(key), [wanted], "{key}");
    }
    let stop: u64 = value("TimeoutStopSec")[0].parse().unwrap();
    assert!(
        stop > DEFAULT_DRAIN_S + 20,
        "TimeoutStopSec {stop} s must outlast the drain ({DEFAULT_DRAIN_S} s) and a last long poll"
    );
    assert!(
        value("After")
            .iter()
            .any(|a| a.split(' ').any(|u| u == "web.service")),
        "stopped before the application when both stop"
    );
    // EB's file and the instance profile stay reachable.
    for forbidden in [
        "PrivateNetwork",
        "IPAddressDeny",
        "InaccessiblePaths",
        "InaccessibleDirectories",
        "User",
        "DynamicUser",
    ] {
        assert!(
            value(forbidden).is_empty(),
            "{forbidden} would cut sqsd off"
        );
    }
    assert!(value("CapabilityBoundingSet")[0]
        .split(' ')
        .all(|c| c == "CAP_DAC_READ_SEARCH"));
    assert!(value("RestrictAddressFamilies")[0].contains("AF_INET"));
    // Names a deployment calls it by; it must not clash with EB's unit.
    assert_ne!(UNIT, EB_UNIT);
}
