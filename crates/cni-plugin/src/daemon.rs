//! The plugin's side of the podipd protocol: one request, one reply, over the Unix socket.

use cni::error::{CniError, ErrorCode};
use protocol::{CURRENT, ErrorKind, Op, Outcome, Reply, Request, Response};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Sends `op` to the daemon at `socket`. The outer error is transport (CNI code 11: the
/// runtime retries); the inner one is the daemon's answer.
pub fn call(socket: &str, op: Op) -> Result<Result<Reply, (ErrorKind, String)>, CniError> {
    let unavailable = |e: std::io::Error| CniError::new(ErrorCode::TryAgainLater, format!("podipd at {socket}: {e}"));
    let mut s = UnixStream::connect(socket).map_err(unavailable)?;
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(unavailable)?;
    let line = serde_json::to_string(&Request { v: CURRENT, op })
        .map_err(|e| CniError::new(ErrorCode::Plugin(101), e.to_string()))?;
    s.write_all(format!("{line}\n").as_bytes()).map_err(unavailable)?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).map_err(unavailable)?;
    let r: Response = serde_json::from_str(&reply)
        .map_err(|e| CniError::new(ErrorCode::TryAgainLater, format!("podipd reply unreadable: {e}")))?;
    Ok(match r.outcome {
        Outcome::Ok { ok } => Ok(ok),
        Outcome::Err { error, message } => Err((error, message)),
    })
}
