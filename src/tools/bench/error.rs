//! [`BenchError`]: why a bench run failed, for `bench source` and `bench sink` alike.
//!
//! Contract: the setup's failures name their part (the simulated org, the embedded Kafka, the
//! config, the pipeline); [`BenchError::Failed`] carries a run that did not verify (a count
//! mismatch, a timeout, an interruption) in the words printed to the user.

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("the simulated org failed: {0}")]
    Sim(String),
    #[error("the embedded Kafka failed: {0}")]
    Kafka(String),
    #[error("the bench config was rejected: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Pipeline(#[from] crate::source::PipelineError),
    #[error("{0}")]
    Failed(String),
}
