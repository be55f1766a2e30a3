//! What can stop a command.

use shared::brex::BrexError;
use shared::config::ConfigError;
use shared::error::AwsError;
use shared::ifs::IfsError;
use shared::lambda::build::StartupError;
use shared::mapping::MappingLoadError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("Brex: {0}")]
    Brex(#[from] BrexError),
    #[error("IFS: {0}")]
    Ifs(#[from] IfsError),
    #[error("{0}")]
    Input(String),
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}

impl From<MappingLoadError> for CliError {
    fn from(err: MappingLoadError) -> Self {
        match err {
            MappingLoadError::Store(e) => Self::Aws(e),
            MappingLoadError::Missing => {
                Self::Input("no mapping document stored; push one with `connector mapping push FILE`".into())
            }
            invalid @ MappingLoadError::Invalid { .. } => Self::Input(invalid.to_string()),
        }
    }
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) | Self::Usage(_) => 2,
            _ => 1,
        }
    }
}
