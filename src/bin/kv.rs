//! `kv`: the command-line client of kvserver.
//!
//! Thin on purpose: parse the command, call `keyvalue::client`, print the result.
//! Every failure is one line on stderr and an exit code a script can test.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use keyvalue::client::{Client, ClientError};
use keyvalue::duration::parse_duration;

/// Command-line client of kvserver.
///
/// Exit codes: 0 success, 1 key not found, 2 usage error, 3 server unreachable
/// (or no answer within --timeout), 4 request refused by the server.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// Server address, host:port.
    #[arg(
        long,
        global = true,
        env = "KV_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    addr: String,

    /// How long to wait for the server, per request (e.g. 5s, 500ms).
    #[arg(long, global = true, env = "KV_TIMEOUT", default_value = "5s",
          value_parser = parse_timeout)]
    timeout: Duration,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Store VALUE under KEY.
    Set {
        /// The key.
        key: String,
        /// The value (may start with '-').
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Print the value of KEY and a newline, nothing else.
    Get {
        /// The key.
        key: String,
    },
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("the timeout must be above zero".to_owned()),
        timeout => Ok(timeout),
    }
}

/// Exit code for each kind of failure, as documented in `kv --help`.
fn exit_code(error: &ClientError) -> u8 {
    match error {
        ClientError::KeyNotFound { .. } => 1,
        ClientError::InvalidAddress { .. } => 2,
        ClientError::Unreachable { .. } => 3,
        ClientError::Rejected { .. } => 4,
    }
}

async fn execute(cli: Cli) -> Result<(), ClientError> {
    let mut client = Client::connect(&cli.addr, cli.timeout).await?;
    match cli.command {
        Command::Set { key, value } => client.set(&key, &value).await,
        Command::Get { key } => {
            let value = client.get(&key).await?;
            println!("{value}");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kv: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(exit_code(&error))
        }
    }
}
