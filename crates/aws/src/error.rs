//! An SDK failure as podip's [`CallError`]: EC2's own code when EC2 answered, else a code that
//! says whether the call may have taken effect (`Unavailable`: the request never left;
//! `RequestTimeout`: it may have).

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use cloud::{CallError, ec2_error};

/// The [`CallError`] of a failed SDK call.
pub fn call_error<E, R>(e: SdkError<E, R>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match &e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            let code = err.code().unwrap_or("InternalError");
            ec2_error(code, err.message().unwrap_or_default())
        }
        SdkError::TimeoutError(_) => {
            ec2_error("RequestTimeout", format!("EC2: no answer in {:?}", crate::CALL_TIMEOUT))
        }
        SdkError::DispatchFailure(_) => {
            // A connection that could not be made carried no request: nothing happened. Any
            // other failure to dispatch may have reached EC2.
            let detail = clip(&error_chain(&e)).to_string();
            if refused(&e) {
                ec2_error("Unavailable", format!("EC2 cannot be reached: {detail}"))
            } else {
                ec2_error("RequestTimeout", format!("EC2: the request failed on the way: {detail}"))
            }
        }
        SdkError::ResponseError(r) => {
            let raw = format!("{:?}", r.raw());
            ec2_error("InternalError", format!("EC2 answered something unreadable: {}", clip(&raw)))
        }
        SdkError::ConstructionFailure(_) => ec2_error("InvalidRequest", format!("the request could not be built: {e}")),
        _ => ec2_error("InternalError", e.to_string()),
    }
}

/// At most 300 characters of `s` (an error's detail must not carry whole requests to the log).
fn clip(s: &str) -> &str {
    s.char_indices().nth(300).map_or(s, |(i, _)| &s[..i])
}

/// Whether the connection was refused: the request was never sent.
fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// An error and its sources, one after another.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
