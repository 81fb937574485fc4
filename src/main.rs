//! The `sqsd` binary: everything lives in the library.

use std::process::ExitCode;

/// jemalloc: about a sixth less CPU per message than glibc's allocator in
/// the daemon benchmark, at a similar resident size; the static musl build
/// of the container image uses it too instead of musl's allocator.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    sqsd::main_with(std::env::args_os().collect(), &env)
}
