//! Parsing the command line of `kv` and `kvserver`, with a usage error as one
//! line on stderr.
//!
//! clap's own report of a mistake is several lines (the error, a blank line,
//! the usage, "For more information, try '--help'."), which breaks the rule
//! that a failure of our binaries is one readable line: scripts and logs
//! keep the first line and lose the rest. [`parse`] keeps clap's checks and
//! its message, and prints it as `NAME: MESSAGE (see NAME --help)`.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Command, Parser};

/// Parses `args` (the program's name first) as `P`. `--help` and
/// `--version` print as clap prints them; they and a usage error give back
/// the exit code to end with: 0 after help or version, clap's 2 after a
/// usage error, which has been printed as one line.
pub fn parse<P: Parser>(args: impl IntoIterator<Item = OsString>) -> Result<P, ExitCode> {
    let mut command = without_help_on_empty(P::command());
    let parsed = command
        .try_get_matches_from_mut(args)
        .and_then(|mut matches| P::from_arg_matches_mut(&mut matches));
    parsed.map_err(|error| {
        let error = error.format(&mut command);
        if error.use_stderr() {
            let name = command.get_name();
            eprintln!("{name}: {} (see {name} --help)", one_line(&error));
        } else {
            // Help or version, asked for: a failure to print them (a closed
            // pipe) changes nothing.
            let _ = error.print();
        }
        ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2))
    })
}

/// `command`, and its subcommands, reporting a missing command as an error
/// (`'kv' requires a subcommand`) instead of printing the whole help, as
/// clap's derive asks for a required subcommand.
fn without_help_on_empty(command: Command) -> Command {
    command
        .arg_required_else_help(false)
        .mut_subcommands(without_help_on_empty)
}

/// clap's message without its decoration: the lines before the usage, with
/// `error: ` dropped and each `tip: ` after a semicolon.
pub(crate) fn one_line(error: &clap::Error) -> String {
    if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // Not reached once `without_help_on_empty` has applied; the help
        // is no message to print on one line.
        return "a command is missing".to_owned();
    }
    let text = error.render().to_string();
    let mut message = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if let Some(tip) = line.strip_prefix("tip: ") {
            message.push_str("; ");
            message.push_str(tip);
        } else if !line.is_empty() {
            if !message.is_empty() {
                message.push(' ');
            }
            message.push_str(line.strip_prefix("error: ").unwrap_or(line));
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// A command line with a required subcommand, as `kv` has.
    #[derive(Parser, Debug)]
    #[command(name = "tool", version)]
    struct Tool {
        #[arg(long, conflicts_with = "b")]
        a: bool,
        #[arg(long)]
        b: bool,
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Sub {
        Run {
            file: String,
            #[arg(long)]
            count: u64,
        },
    }

    fn message(args: &[&str]) -> String {
        let error = without_help_on_empty(Tool::command())
            .try_get_matches_from(args.iter().map(OsString::from))
            .unwrap_err();
        one_line(&error)
    }

    #[test]
    fn a_usage_error_is_clap_s_message_on_one_line() {
        for (args, expected) in [
            (
                &["tool", "--a", "--b", "run", "f", "--count", "1"][..],
                "the argument '--a' cannot be used with '--b'",
            ),
            (
                &["tool", "run", "f", "--count", "-1"][..],
                "unexpected argument '-1' found; to pass '-1' as a value, use '-- -1'",
            ),
            (
                &["tool"][..],
                "'tool' requires a subcommand but one was not provided [subcommands: run, help]",
            ),
            (
                &["tool", "run", "--count", "1"][..],
                "the following required arguments were not provided: <FILE>",
            ),
            (
                &["tool", "run", "f", "--count", "x"][..],
                "invalid value 'x' for '--count <COUNT>': invalid digit found in string",
            ),
        ] {
            assert_eq!(message(args), expected, "{args:?}");
        }
    }

    #[test]
    fn help_and_version_are_no_errors() {
        for flag in ["--help", "--version"] {
            let outcome = parse::<Tool>([OsString::from("tool"), OsString::from(flag)]);
            assert_eq!(outcome.unwrap_err(), ExitCode::SUCCESS, "{flag}");
        }
        let parsed = parse::<Tool>(["tool", "run", "f", "--count", "3"].map(OsString::from));
        assert!(matches!(
            parsed,
            Ok(Tool {
                command: Sub::Run { count: 3, .. },
                ..
            })
        ));
    }
}
