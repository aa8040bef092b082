//! `kv`: the command-line client of kvserver.
//!
//! Thin on purpose: everything, from flags to output, is in `keyvalue::kv_cli`,
//! where the tests reach it too.

/// mimalloc instead of the system allocator, as in kvserver: under `kv bench`
/// glibc's malloc and free took about a third of the client's CPU (every
/// request builds and drops a message, its keys and its answer), CPU the
/// client then takes from the server it shares the cores with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keyvalue::kv_cli::main()
}
