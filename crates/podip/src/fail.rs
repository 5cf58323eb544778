//! How a subcommand fails: invalid input (exit 2) or anything else (exit 1), each printed to
//! stderr with its whole cause chain.

use std::process::ExitCode;

/// A failed subcommand.
#[derive(Debug)]
pub enum Failure {
    /// The user's input is wrong: exit 2.
    Input(anyhow::Error),
    /// Something else went wrong: exit 1.
    Other(anyhow::Error),
}

impl Failure {
    /// An input failure with this message.
    pub fn input(msg: impl std::fmt::Display) -> Failure {
        Failure::Input(anyhow::anyhow!("{msg}"))
    }

    /// Prints the error and returns the exit code.
    pub fn report(self) -> ExitCode {
        let (e, code) = match self {
            Failure::Input(e) => (e, 2),
            Failure::Other(e) => (e, 1),
        };
        eprintln!("podip: error: {e:#}");
        ExitCode::from(code)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}
