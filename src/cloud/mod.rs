//! OpenStack: Keystone v3 + Nova client and the Nova backend. (Being written.)

use crate::backend::SharedMachine;

/// Command-line options for the Nova backend.
#[derive(Debug, Clone, clap::Args)]
pub struct NovaArgs {
    /// Cloud name in clouds.yaml (as openstacksdk looks it up).
    #[arg(long = "os-cloud", env = "OS_CLOUD")]
    pub os_cloud: Option<String>,
}

/// Resolve each instance (UUID or unique name) and build one machine per instance, all sharing
/// one cloud session.
pub async fn build_machines(
    _args: &NovaArgs,
    _instances: &[String],
) -> anyhow::Result<Vec<SharedMachine>> {
    anyhow::bail!("the Nova backend is not built yet; use --backend sim")
}
