//! What a worker thread does when the code it runs panics: the panic is caught where the
//! thread takes its next job, so it costs that request only and never shrinks a pool of
//! threads without a word. (The panic hook has already printed the panic and where it
//! happened; the caller logs what it means for the request and the process.)

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `job`, turning a panic into `Err(its message)`.
///
/// What `job` borrows may be left half-updated by the panic: callers only keep using state
/// that stays consistent between jobs (channels, atomics, locks that poison-proof
/// `parking_lot` locks release on unwinding) and drop the rest of the job.
pub fn catch<T>(job: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(job)).map_err(|payload| message(payload.as_ref()))
}

/// The message of a panic payload (`panic!` with a literal or a formatted string).
pub fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_a_value_passes() {
        assert_eq!(catch(|| 7), Ok(7));
        assert_eq!(
            catch(|| -> u8 { panic!("static text") }),
            Err("static text".into())
        );
        let n = 3;
        assert_eq!(
            catch(|| -> u8 { panic!("formatted {n}") }),
            Err("formatted 3".into())
        );
        assert_eq!(
            catch(|| -> u8 { std::panic::panic_any(5u32) }),
            Err("a panic without a message".into())
        );
    }
}
