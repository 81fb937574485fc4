//! The `sqsd` binary: everything lives in the library.

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    sqsd::main_with(std::env::args_os().collect(), &env)
}
