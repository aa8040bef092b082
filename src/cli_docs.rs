//! Shell completions and man pages for `kv` and `kvserver`, generated from
//! their clap definitions (`clap_complete`, `clap_mangen`), so they never
//! drift from the flags. Both binaries print them on request (`kv
//! completions bash`, `kv man`, and the same for `kvserver`); the
//! Dockerfile installs them.

use clap::Command;
pub use clap_complete::Shell;

/// The completion script of `command` for `shell`.
pub fn completions(mut command: Command, shell: Shell) -> Vec<u8> {
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    script
}

/// The man page of `command` (roff, section 1).
pub fn man_page(command: Command) -> Vec<u8> {
    let mut page = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = clap_mangen::Man::new(command).render(&mut page);
    page
}

/// Writes `bytes` to stdout; a reader that has gone is no error.
pub fn print(bytes: &[u8]) -> std::process::ExitCode {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("cannot write to stdout: {e}");
            std::process::ExitCode::FAILURE
        }
        _ => std::process::ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_man_pages_name_the_commands_flags() {
        let command = Command::new("demo")
            .arg(clap::Arg::new("listen").long("listen"))
            .subcommand(Command::new("restore"));
        let bash = String::from_utf8(completions(command.clone(), Shell::Bash)).unwrap();
        assert!(
            bash.contains("--listen") && bash.contains("restore"),
            "{bash}"
        );
        let man = String::from_utf8(man_page(command)).unwrap();
        assert!(man.contains(".TH demo") && man.contains("listen"), "{man}");
    }
}
