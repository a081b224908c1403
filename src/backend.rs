//! How a store's handle forwards an operation to the backend it holds.
//!
//! Each store over the closed set of backends ([`crate::sessions`], [`crate::tasks`]) is
//! an enum with a `Memory` and a `Redis` variant, and each backend implements every
//! operation as an `async fn` of the same name, arguments and result. The handle checks
//! what the backends share (ids, limits, arguments) and forwards the call with
//! [`dispatch!`], written once, rather than a `match` per operation or a trait for two
//! known types.

/// Forwards one operation to the backend `store` holds and awaits it:
/// `dispatch!(Enum: store => operation(args…))`, where `Enum` has the variants `Memory`
/// and `Redis`.
macro_rules! dispatch {
    ($backends:ident : $store:expr => $operation:ident($($arg:expr),* $(,)?)) => {
        match $store {
            $backends::Memory(backend) => backend.$operation($($arg),*).await,
            $backends::Redis(backend) => backend.$operation($($arg),*).await,
        }
    };
}

pub(crate) use dispatch;
