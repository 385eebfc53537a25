//! Blocking work (files, SQLite, XML security, payload validation) runs on tokio's blocking
//! pool, off the async workers, inside the caller's tracing span: a log line from the
//! decryption step still names the message id, partner and P-Mode.
//!
//! A blocking job runs to its end even if the future awaiting it is dropped, which is why
//! work that may commit (a rename, an fsync, a SQLite transaction) is put in one.

/// [`tokio::task::spawn_blocking`], carrying the current span into the job.
pub fn spawn<F, T>(job: F) -> tokio::task::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(job))
}
