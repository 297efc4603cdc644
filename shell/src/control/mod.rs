//! `playpod control`: the Kubernetes control plane that creates game sessions on demand.

use clap::Args;

/// `playpod control` options.
#[derive(Debug, Clone, Args)]
pub struct ControlArgs {
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: std::net::SocketAddr,
}

/// Runs the control plane until SIGTERM or Ctrl-C.
pub async fn run(args: ControlArgs) -> anyhow::Result<()> {
    anyhow::bail!("the control plane is not available in this build ({args:?})")
}
