//! The `sqsd` binary: everything lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    sqsd::main_with(std::env::args_os().collect(), &env)
}
