//! The plugin's side of the podipd protocol: one request, one reply, over the Unix socket.

use cni::error::{CniError, ErrorCode};
use protocol::{CURRENT, ErrorKind, Op, Outcome, Reply, Request, Response};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Sends `op` to the daemon at `socket` and waits for its answer. The outer error is transport
/// (CNI code 11: the runtime retries); the inner one is the daemon's answer.
pub fn call(socket: &str, op: Op) -> Result<Result<Reply, (ErrorKind, String)>, CniError> {
    send(socket, op)?.answer()
}

/// A request sent whose answer is not read yet: podipd works on it while the plugin does
/// what needs no answer.
pub struct Asked {
    socket: String,
    stream: UnixStream,
}

/// Sends `op` to the daemon at `socket`; [`Asked::answer`] reads the answer.
pub fn send(socket: &str, op: Op) -> Result<Asked, CniError> {
    let unavailable = |e: std::io::Error| CniError::new(ErrorCode::TryAgainLater, format!("podipd at {socket}: {e}"));
    let mut s = UnixStream::connect(socket).map_err(unavailable)?;
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(unavailable)?;
    let line = serde_json::to_string(&Request { v: CURRENT, op })
        .map_err(|e| CniError::new(ErrorCode::Plugin(101), e.to_string()))?;
    s.write_all(format!("{line}\n").as_bytes()).map_err(unavailable)?;
    Ok(Asked { socket: socket.to_string(), stream: s })
}

impl Asked {
    /// The daemon's answer. The outer error is transport (CNI code 11: the runtime retries);
    /// the inner one is the daemon's answer.
    pub fn answer(self) -> Result<Result<Reply, (ErrorKind, String)>, CniError> {
        let socket = &self.socket;
        let unavailable =
            |e: std::io::Error| CniError::new(ErrorCode::TryAgainLater, format!("podipd at {socket}: {e}"));
        let mut reply = String::new();
        BufReader::new(self.stream).read_line(&mut reply).map_err(unavailable)?;
        let r: Response = serde_json::from_str(&reply)
            .map_err(|e| CniError::new(ErrorCode::TryAgainLater, format!("podipd reply unreadable: {e}")))?;
        Ok(match r.outcome {
            Outcome::Ok { ok } => Ok(ok),
            Outcome::Err { error, message } => Err((error, message)),
        })
    }
}
