//! `kv`: the command-line client of kvserver.
//!
//! Thin on purpose: everything, from flags to output, is in `keyvalue::kv_cli`,
//! where the tests reach it too.

fn main() -> std::process::ExitCode {
    keyvalue::kv_cli::main()
}
