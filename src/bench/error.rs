//! Why a run could not start or finish: the CLI maps each kind to its own
//! exit code, so they are kept as one small enum.

use crate::client::ClientError;

/// Why a run could not start, or could not finish.
#[derive(Debug)]
pub enum BenchError {
    /// The configuration cannot work (zero connections, keys too short for
    /// their number, fewer keys than workers, an invalid address, ...).
    Usage(String),
    /// The server could not be reached.
    Unreachable(String),
    /// The run itself broke (a worker panicked).
    Failed(String),
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Usage(text) | BenchError::Unreachable(text) | BenchError::Failed(text) => {
                f.write_str(text)
            }
        }
    }
}

impl std::error::Error for BenchError {}

impl From<ClientError> for BenchError {
    fn from(error: ClientError) -> BenchError {
        match error {
            ClientError::InvalidAddress { .. } | ClientError::Config { .. } => {
                BenchError::Usage(error.to_string())
            }
            _ => BenchError::Unreachable(error.to_string()),
        }
    }
}
