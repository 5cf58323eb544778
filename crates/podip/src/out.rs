//! The command's standard output, where a closed pipe is the reader's choice, not an error.

use std::io::Write;

/// Writes one line to stdout. When the reader has gone (`EPIPE`), the program ends at once with
/// status 0; any other write error ends it with status 1.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("podip: error: writing the output: {e}");
        std::process::exit(1);
    }
}
