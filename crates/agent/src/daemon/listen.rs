//! The plugin socket: owner-only, bounded. A fixed pool of workers each accepts and serves
//! connections itself (no hand-over between threads on the ADD's path; a flood waits in the
//! kernel's backlog, it does not spawn threads); every request line is capped in length, every
//! connection has read and write timeouts and a cap on requests; running out of file
//! descriptors slows accepting down instead of spinning. The socket path is removed before
//! binding only if it is a socket.

use super::{Daemon, DaemonError};
use crate::protocol::{CURRENT, ErrorKind, Outcome, Response, parse_request};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

/// Longest request line accepted, in bytes.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Workers serving connections.
const WORKERS: usize = 32;
/// Read and write timeout of a connection (the plugin writes its request at once).
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests one connection may make.
const MAX_REQUESTS: usize = 64;

impl Daemon {
    /// Serves the plugin protocol on the configured socket (owner-only), forever; `listening`
    /// runs once the socket takes connections.
    ///
    /// # Errors
    /// The socket cannot be bound, or its path holds something that is not a socket.
    pub fn serve(self: &Arc<Self>, listening: impl FnOnce()) -> Result<(), DaemonError> {
        let path = &self.cfg.socket;
        let io =
            |e: &dyn std::fmt::Display| DaemonError::Io { path: path.display().to_string(), message: e.to_string() };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
        }
        match std::fs::symlink_metadata(path) {
            // A stale socket of an earlier daemon of this node (the state lock says none runs).
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(|e| io(&e))?,
            Ok(_) => return Err(io(&"exists and is not a socket; not removing it")),
            Err(_) => {}
        }
        let listener = UnixListener::bind(path).map_err(|e| io(&e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| io(&e))?;
        let listener = Arc::new(listener);
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let d = Arc::clone(self);
                let l = Arc::clone(&listener);
                std::thread::spawn(move || d.work(&l))
            })
            .collect();
        listening();
        for w in workers {
            let _ = w.join();
        }
        Ok(())
    }

    fn work(&self, listener: &UnixListener) {
        loop {
            match listener.accept() {
                Ok((conn, _)) => self.connection(conn),
                // Out of descriptors (or another transient failure): let connections finish.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn connection(&self, conn: UnixStream) {
        if conn.set_read_timeout(Some(IO_TIMEOUT)).is_err() || conn.set_write_timeout(Some(IO_TIMEOUT)).is_err() {
            return;
        }
        // Reads and writes share the one descriptor.
        let mut reader = BufReader::new(&conn);
        let mut write = &conn;
        for _ in 0..MAX_REQUESTS {
            let mut line = Vec::new();
            match (&mut reader).take(MAX_REQUEST as u64 + 1).read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let resp = if line.len() > MAX_REQUEST {
                Response {
                    v: CURRENT,
                    outcome: Outcome::Err {
                        error: ErrorKind::BadRequest,
                        message: format!("request longer than {MAX_REQUEST} bytes"),
                    },
                }
            } else {
                match std::str::from_utf8(&line).map_err(|e| e.to_string()).map(|l| parse_request(l.trim_end())) {
                    Ok(Ok(req)) => self.handle(req),
                    Ok(Err(resp)) => resp,
                    Err(e) => Response {
                        v: CURRENT,
                        outcome: Outcome::Err { error: ErrorKind::BadRequest, message: format!("not UTF-8: {e}") },
                    },
                }
            };
            let too_long = line.len() > MAX_REQUEST;
            let Ok(mut text) = serde_json::to_string(&resp) else { return };
            text.push('\n');
            if write.write_all(text.as_bytes()).is_err() || too_long {
                return;
            }
        }
    }
}
