//! `kvserver --config FILE`: settings from a TOML file, below flags and
//! environment variables in precedence, and `--print-config`.
//!
//! One precedence order for every setting: a flag beats its environment
//! variable, which beats the config file, which beats the default. The file
//! uses the flags' long names (`max-key-bytes = 256`, `listen =
//! "0.0.0.0:50051"`, `log-requests = true`); an unknown name is an error, so
//! a typo never goes unnoticed. The merge works on the command line itself:
//! every setting the file has and neither a flag nor the environment set
//! becomes a flag in front of the real ones, and clap parses the result as
//! usual, with the same checks and messages.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{ArgAction, Command};

/// The command line with the config file's settings added, if `--config`
/// (or its environment variable) names one.
pub fn merge(command: &Command, args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    // Any problem with the command line itself (or --help, --version) is
    // left to the real parse, which reports it as usual.
    let Ok(matches) = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(args.clone())
    else {
        return Ok(args);
    };
    let Some(path) = matches.get_one::<std::path::PathBuf>("config") else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    let mut extra = Vec::new();
    for (name, value) in table {
        let id = name.replace('-', "_");
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_id() == id.as_str() && arg.get_long().is_some())
            .filter(|arg| arg.get_id() != "config")
            .ok_or_else(|| format!("config file {}: unknown setting {name:?}", path.display()))?;
        // A flag or the environment overrides the setting, which must still
        // be one the server takes: a mistake in the file is one everywhere.
        let from_elsewhere = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        let long = arg.get_long().unwrap_or_default();
        let refused = |why: String| {
            let shown = shown(&value);
            format!("config file {}: {name} = {shown}: {why}", path.display())
        };
        if arg.get_action().takes_values() {
            let text = match &value {
                toml::Value::String(text) => text.clone(),
                toml::Value::Integer(number) => number.to_string(),
                toml::Value::Float(number) => number.to_string(),
                _ => return Err(refused("not a value this setting takes".into())),
            };
            // Checked here, with the flag's own parser, so that a bad value
            // names the file it is in rather than a flag nobody typed.
            // (A command of this one setting: the real one would also check
            // settings that go together, which the rest of the file may set.)
            let mut alone = clap::Arg::new("value")
                .allow_hyphen_values(true)
                .value_parser(arg.get_value_parser().clone());
            if let Some(delimiter) = arg.get_value_delimiter() {
                alone = alone.value_delimiter(delimiter);
            }
            Command::new("config-file")
                .arg(alone)
                .try_get_matches_from(["config-file", text.as_str()])
                .map_err(|e| {
                    let message = crate::usage::one_line(&e)
                        .replace(" for '<value>'", "")
                        .replace(" for '[value]'", "");
                    refused(message)
                })?;
            if !from_elsewhere {
                extra.push(format!("--{long}={text}"));
            }
        } else {
            // An on/off setting: true or false, quoted or not (as
            // --print-config writes it).
            let on = match &value {
                toml::Value::Boolean(on) => *on,
                toml::Value::String(text) if text == "true" => true,
                toml::Value::String(text) if text == "false" => false,
                _ => return Err(refused("expected true or false".into())),
            };
            if on && !from_elsewhere {
                extra.push(format!("--{long}"));
            }
        }
    }
    let mut merged = Vec::with_capacity(args.len() + extra.len());
    let mut args = args.into_iter();
    merged.extend(args.next()); // the program's name
    merged.extend(extra.into_iter().map(OsString::from));
    merged.extend(args);
    Ok(merged)
}

/// Every setting's effective value, as a config file would hold it.
pub fn render(command: &Command, args: Vec<OsString>) -> String {
    let matches = command.clone().get_matches_from(args);
    let mut out = String::from(
        "# kvserver's effective settings (flags > environment > config file > defaults)\n",
    );
    for arg in command.get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        if matches!(id, "config" | "print_config" | "help" | "version") {
            continue;
        }
        let line = match arg.get_action() {
            ArgAction::SetTrue => format!("{long} = \"{}\"", matches.get_flag(id)),
            // A list (`--etcd-endpoints a,b`) is one comma-separated string,
            // as it is written.
            _ => match matches.get_raw(id) {
                Some(values) => {
                    let values: Vec<_> = values.map(|v| v.to_string_lossy()).collect();
                    format!("{long} = {}", toml_string(&values.join(",")))
                }
                None => format!("# {long} (not set)"),
            },
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A value of the file as it was written, for a message (an array or a
/// table by its kind).
fn shown(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => toml_string(text),
        toml::Value::Integer(number) => number.to_string(),
        toml::Value::Float(number) => number.to_string(),
        toml::Value::Boolean(on) => on.to_string(),
        other => format!("(a value of type {})", other.type_str()),
    }
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}
